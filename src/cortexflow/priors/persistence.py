"""Checkpoints of the prior-backed decoders: what the image priors add to the one checkpoint mechanism.

Every CortexFlow estimator is saved by :mod:`cortexflow.models.checkpoint`
(parameters, declared fitted state validated value by value, sha256 of the
weights). A prior-backed decoder (``ridge-prior``, ``cccv1-prior``,
``brain-diffuser-prior``, ``mindvis-prior``) is useless without its image
prior, and a user's machine has neither the prior cache nor the corpus, so this
module registers with that mechanism:

* the ``"priors"`` section: the weights of every
  :class:`~cortexflow.training.prior.FittedPrior` a decoder holds (tensors
  ``priors.<i>.*``) with the prior's config and info (corpus, images,
  near-duplicates dropped, cache key) in ``checkpoint.json``; the config holds
  the prior's ``image_shape`` (absent in checkpoints written before it existed:
  28x28), and every reference to a prior is refused on load when that shape is
  not the checkpoint's image shape; a prior
  referenced twice (``cccv1-prior``'s ``prior_`` and its ``posterior_.prior_``)
  is stored once;
* the value types ``prior`` (a reference into that section) and ``prior_config``;
* the checkpoint schemas of ``ridge-prior`` and ``cccv1-prior`` (their
  declared fitted attributes with types, ranges and shapes); the two baselines
  with a prior declare theirs in :mod:`cortexflow.priors.baselines`.

Large float32 arrays (at least 65,536 values, e.g. the 10,000 corpus images of
a ``corpus-knn`` decoding) are stored as uint8 codes ``q`` with ``x = q / 255``
*only when that gives back every value bit for bit*; nothing is rounded.

:func:`save_decoder_state` and :func:`load_decoder_state` are the entry points
the prior decoders call; they are :func:`~cortexflow.models.checkpoint.save_estimator`
and :func:`~cortexflow.models.checkpoint.load_estimator` with the checks of the
decoder's ``kind`` and fitted attribute.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
from sklearn.utils.validation import check_is_fitted

from cortexflow.exceptions import CheckpointError, CortexFlowError
from cortexflow.models.base import COMMON_STATE
from cortexflow.models.checkpoint import (
    FIT_ONLY_PARAMS,
    IMAGE_DIMS,
    QUANTISE_MIN_SIZE,
    StateField,
    StatePacker,
    StateUnpacker,
    load_estimator,
    register_shared_section,
    register_state_schema,
    register_state_type,
    save_estimator,
)
from cortexflow.models.prior import ImagePrior, PriorConfig
from cortexflow.training.prior import FittedPrior
from cortexflow.training.config import CCCV1Config

__all__ = [
    "StatePacker",
    "StateUnpacker",
    "save_decoder_state",
    "load_decoder_state",
    "FIT_ONLY_PARAMS",
    "QUANTISE_MIN_SIZE",
    "PRIOR_STATE",
    "RIDGE_PRIOR_SCHEMA",
    "CCCV1_PRIOR_SCHEMA",
]


# ----------------------------------------------------------------- the priors section
def _pack_prior(packer: StatePacker, prior: FittedPrior, i: int) -> dict[str, Any]:
    for k, v in prior.model.state_dict().items():
        packer.add_tensor(f"priors.{i}.{k}", v)
    info = {k: v for k, v in prior.info.items() if k not in ("from_cache", "from_checkpoint")}
    return {"config": prior.config.to_dict(), "info": packer.pack(info, f"priors.{i}.info")}


def _unpack_prior(unpacker: StateUnpacker, node: Any, i: int) -> FittedPrior:
    try:
        config = PriorConfig.from_dict(node["config"])
        info = unpacker.unpack(node["info"], f"priors[{i}].info")
        with torch.random.fork_rng(devices=[]):  # construction draws throw-away weights; the global stream is kept
            model = ImagePrior(config)
    except (KeyError, TypeError, ValueError, CortexFlowError) as exc:
        raise unpacker.error(f"priors[{i}]", f"is not a valid prior description ({type(exc).__name__}: {exc})") from exc
    if not isinstance(info, dict):
        raise unpacker.error(f"priors[{i}].info", f"is {info!r}; expected an object")
    state = unpacker.take_prefix(f"priors.{i}.")
    try:
        model.load_state_dict(state, strict=True)
    except (RuntimeError, ValueError) as exc:
        raise unpacker.error(f"priors[{i}]", f"weights do not match its config ({exc})") from exc
    return FittedPrior(model, {**dict(info), "from_cache": False, "from_checkpoint": True}, None)


def _prior_ref(unpacker: StateUnpacker, node: dict, key: str) -> FittedPrior:
    index = node["index"]
    priors = unpacker.priors
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(priors):
        raise unpacker.error(key, f"refers to prior {index!r}; the checkpoint holds {len(priors)}")
    prior = priors[index]
    image = getattr(unpacker, "dims", {}).get(IMAGE_DIMS)
    if image is not None:
        image = tuple(int(v) for v in image)
        image = image[:2] if len(image) == 3 and image[2] == 1 else image
        if prior.image_shape != image:
            raise unpacker.error(key, f"is a prior for images of shape {list(prior.image_shape)}, but the "
                                      f"checkpoint's image shape is {list(image)}")
    return prior


register_shared_section("priors", _pack_prior, _unpack_prior)
register_state_type("prior", FittedPrior, lambda packer, v, key: {"index": packer.add_prior(v)}, _prior_ref)
register_state_type("prior_config", PriorConfig, lambda packer, v, key: {"value": v.to_dict()},
                    lambda unpacker, node, key: PriorConfig.from_dict(node["value"]))


# ----------------------------------------------------------------- schemas
def _is_prior(value: Any) -> str | None:
    return None if isinstance(value, FittedPrior) else f"is a {type(value).__name__}, not an image prior"


def _is_dict(value: Any) -> str | None:
    return None if isinstance(value, dict) else f"is a {type(value).__name__}, not a JSON object"


def _is_list(value: Any) -> str | None:
    return None if isinstance(value, list) else f"is a {type(value).__name__}, not a list"


#: The fitted attributes of every decoder that holds an image prior.
PRIOR_STATE: dict[str, StateField] = {
    "prior_": StateField("any", check=_is_prior),
    "report_info_": StateField("any", check=_is_dict),
}

RIDGE_PRIOR_SCHEMA: dict[str, StateField] = {
    **COMMON_STATE,
    **PRIOR_STATE,
    "corpus_": StateField("str"),
    "scaler_": StateField("scaler"),
    "ridge_": StateField("ridge", shape=("embed_dim",)),
    "alpha_": StateField("float", low=0, low_open=True),
    "residuals_": StateField("array", shape=(None, "embed_dim")),
    "residual_scale_": StateField("float", low=0),
    "corpus_images_": StateField("array", required=False, shape=("n_corpus", "*image"), low=0, high=1),
    "corpus_embeddings_": StateField("array", required=False, shape=("n_corpus", "embed_dim")),
    "pixel_blend_": StateField("float", required=False, low=0, high=1),  # absent from early checkpoints
    "pixel_ridge_": StateField("ridge", required=False, nullable=True, shape=("n_pixels",)),
    "residual_cv_mse_": StateField("any", required=False, check=_is_dict),
    "blend_cv_mse_": StateField("any", required=False, check=_is_dict),
    "output_shape_": StateField("shape", required=False),
}

CCCV1_PRIOR_SCHEMA: dict[str, StateField] = {
    **COMMON_STATE,
    **PRIOR_STATE,
    "output_shape_": StateField("shape"),
    "config_": StateField("any", check=lambda v: None if isinstance(v, CCCV1Config) else
                          f"is a {type(v).__name__}, not a CCCV1Config"),
    "signal_scaler_": StateField("scaler"),
    "target_scaler_": StateField("scaler"),
    "ridge_alpha_": StateField("float", required=False, nullable=True, low=0, low_open=True),
    # a RidgePriorDecoder (the loader's classes), validated by its own schema on the way in
    "posterior_": StateField("any", nullable=True, check=lambda v: None if getattr(v, "checkpoint_kind", None) ==
                             "ridge-prior" else f"is a {type(v).__name__}, not a ridge-prior decoder"),
    "histories_": StateField("any", required=False, check=_is_list),
    "history_": StateField("any", required=False, check=_is_list),
    "metadata_": StateField("any", required=False, check=_is_dict),
    "fit_seconds_": StateField("float", required=False, low=0),
    "seed_": StateField("int", required=False, low=0),
}
register_state_schema("ridge-prior", RIDGE_PRIOR_SCHEMA)
register_state_schema("cccv1-prior", CCCV1_PRIOR_SCHEMA)


# ----------------------------------------------------------------- entry points
def save_decoder_state(est: Any, path: str | os.PathLike, *, kind: str, fitted_attr: str,
                       skip: Iterable[str] = (), extra: Callable[[StatePacker], dict] | None = None) -> Path:
    """Write the checkpoint of a prior-backed decoder (:func:`~cortexflow.models.checkpoint.save_estimator`).

    Parameters
    ----------
    est : estimator
        Fitted decoder; ``type(est).checkpoint_kind`` must be ``kind``.
    path : path-like
        Checkpoint folder (written atomically; an old checkpoint is replaced).
    kind : str
        The ``kind`` field (e.g. ``"ridge-prior"``).
    fitted_attr : str
        Attribute that shows ``est`` is fitted.
    skip : iterable of str
        Fitted attributes that ``extra`` stores itself (e.g. a torch network).
    extra : callable, optional
        ``extra(packer) -> dict``: adds tensors through the packer and returns
        the metadata stored under ``"network"``.

    Returns
    -------
    pathlib.Path
    """
    check_is_fitted(est, fitted_attr)
    if type(est).checkpoint_kind != kind:
        raise CheckpointError(f"{type(est).__name__} writes kind {type(est).checkpoint_kind!r}, not {kind!r}")
    return save_estimator(est, path, skip=skip, extra=extra)


def load_decoder_state(cls: type, path: str | os.PathLike, *, kind: str, device: str = "auto",
                       classes: Iterable[type] = (),
                       network: Callable[[Any, Any, StateUnpacker], None] | None = None) -> Any:
    """Load a checkpoint written by :func:`save_decoder_state` as an instance of ``cls``.

    Parameters
    ----------
    cls : type
        The decoder class; the checkpoint's ``kind`` must be ``kind``.
    path : path-like
    kind : str
    device : str
        Stored as the ``device`` parameter when ``cls`` has one.
    classes : iterable of type
        Classes of nested decoders.
    network : callable, optional
        ``network(obj, meta_network, unpacker)``: rebuilds what ``extra`` stored.

    Raises
    ------
    CheckpointError
        Missing or corrupt files, a weights hash that differs, another kind of
        checkpoint, or metadata that does not describe a valid decoder of ``cls``.
    """
    if cls.checkpoint_kind != kind:
        raise CheckpointError(f"{cls.__name__} loads kind {cls.checkpoint_kind!r}, not {kind!r}")
    return load_estimator(cls, path, device=device, classes=classes, network=network)
