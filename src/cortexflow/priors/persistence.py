"""Checkpoints of the prior-backed decoders: the fitted state, and the prior itself, in one folder.

A prior-backed decoder (``ridge-prior``, ``cccv1-prior``) is useless without
its image prior, and a user's machine has neither the prior cache nor the
corpus. Its checkpoint therefore carries everything :meth:`predict` needs:

* the weights of every :class:`~cortexflow.priors.training.FittedPrior` it
  holds (tensors ``priors.<i>.*``) with the prior's config and info (corpus,
  images, near-duplicates dropped, cache key) in ``checkpoint.json``; a prior
  referenced twice (``cccv1-prior``'s ``prior_`` and its ``posterior_.prior_``)
  is stored once;
* the constructor parameters (``params``) except the fit-time inputs
  ``stimuli`` (guard stimuli), ``data_dir`` and ``cache_dir`` (paths of the
  machine that trained it), which come back as ``None``;
* every fitted attribute (name ending in ``_``) found on the estimator, written
  generically so that new attributes need no code here: ``None``, bools, ints,
  floats (non-finite ones too), strings, numpy arrays and scalars (tensors
  ``state.*``, dtype kept), lists, tuples and dicts of those (any key type),
  and the special objects :class:`FittedPrior`, :class:`PriorConfig`,
  :class:`~cortexflow.training.CCCV1Config`, :class:`TrainResult`, the
  scalers of :mod:`cortexflow.data.preprocessing` (their per-feature
  statistics as float64 tensors), scikit-learn ``Ridge`` /
  ``RidgeCV`` (``coef_``, ``intercept_``, ``alpha_``; rebuilt as a ``Ridge``
  that predicts identically) and nested decoders of the classes the loader is
  given (``cccv1-prior``'s ``posterior_``, a :class:`RidgePriorDecoder`).
  An attribute of any other type makes :func:`save_decoder_state` raise
  :class:`CheckpointError` naming it, rather than write a checkpoint that
  cannot predict.

Large float32 arrays (at least 65,536 values, e.g. the 10,000 corpus images
of a ``corpus-knn`` decoding, 31 MB) are stored as uint8 codes ``q`` with
``x = q / 255`` *only when that gives back every value bit for bit* (true of
MNIST and of the binary ``miyawaki-patterns``, whose images are k/255); any
other array is stored as it is (float32 stays float32, float64 stays
float64). Nothing is rounded: a loaded decoder predicts exactly what the
saved one did.

The folder layout, the sha256 of the weights and the atomic replacement are
those of every CortexFlow checkpoint (:mod:`cortexflow.models.checkpoint`).
"""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch
from sklearn.linear_model import Ridge, RidgeCV
from sklearn.utils.validation import check_is_fitted

from cortexflow._version import __version__
from cortexflow.data.preprocessing import ImageScaler, SignalScaler
from cortexflow.exceptions import CheckpointError, CortexFlowError
from cortexflow.models.checkpoint import (
    CHECKPOINT_FORMAT,
    checkpoint_kind,
    read_checkpoint_meta,
    read_checkpoint_weights,
    write_checkpoint,
)
from cortexflow.priors.models import ImagePrior, PriorConfig
from cortexflow.priors.training import FittedPrior
from cortexflow.training.config import CCCV1Config
from cortexflow.training.trainer import TrainResult

__all__ = [
    "StatePacker",
    "StateUnpacker",
    "save_decoder_state",
    "load_decoder_state",
    "FIT_ONLY_PARAMS",
    "QUANTISE_MIN_SIZE",
]

#: Parameters not stored: the guard's stimuli and the training machine's folders (fit-time inputs only).
FIT_ONLY_PARAMS = ("stimuli", "data_dir", "cache_dir")
#: Float32 arrays at least this large are stored as uint8 codes when that is exact.
QUANTISE_MIN_SIZE = 65_536
_T = "__type__"
_DATACLASSES = {"TrainResult": TrainResult}


def _fitted_attributes(est: Any, skip: Iterable[str] = ()) -> dict[str, Any]:
    """The estimator's fitted attributes: public names ending in ``_`` (sklearn's convention)."""
    skip = set(skip) | {"checkpoint_meta_"}  # the metadata a loaded decoder was read from
    return {k: v for k, v in vars(est).items() if k.endswith("_") and not k.startswith("_") and k not in skip}


def _exact_uint8(a: np.ndarray) -> np.ndarray | None:
    """uint8 codes ``q`` with ``q / 255 == a`` bit for bit (float32 arithmetic), or None."""
    if a.dtype != np.float32 or a.size < QUANTISE_MIN_SIZE or not np.isfinite(a).all():
        return None
    q = np.rint(a * np.float32(255))
    if q.min() < 0 or q.max() > 255:
        return None
    q = q.astype(np.uint8)
    return q if np.array_equal(q.astype(np.float32) / np.float32(255), a) else None


class StatePacker:
    """Turns estimator state into JSON nodes plus named tensors (see the module docstring).

    Attributes
    ----------
    tensors : dict of str to torch.Tensor
        The tensors to write (each its own copy: no two share memory).
    priors : list of dict
        ``{"config", "info"}`` of each distinct prior (weights in ``priors.<i>.*``).
    """

    def __init__(self) -> None:
        self.tensors: dict[str, torch.Tensor] = {}
        self.priors: list[dict[str, Any]] = []
        self._prior_index: dict[int, int] = {}

    def add_tensor(self, name: str, tensor: torch.Tensor) -> str:
        """Store a copy of ``tensor`` under ``name`` (a name used twice is an error)."""
        if name in self.tensors:
            raise CheckpointError(f"checkpoint tensor {name!r} written twice")
        self.tensors[name] = tensor.detach().cpu().contiguous().clone()
        return name

    def add_prior(self, prior: FittedPrior) -> int:
        """Index of ``prior`` among the stored priors (stored once however often it is referenced)."""
        if id(prior) not in self._prior_index:
            i = len(self.priors)
            for k, v in prior.model.state_dict().items():
                self.add_tensor(f"priors.{i}.{k}", v)
            info = {k: v for k, v in prior.info.items() if k not in ("from_cache", "from_checkpoint")}
            self.priors.append({"config": prior.config.to_dict(), "info": self.pack(info, f"priors.{i}.info")})
            self._prior_index[id(prior)] = i
        return self._prior_index[id(prior)]

    def pack(self, value: Any, key: str) -> Any:
        """The JSON node of ``value``; ``key`` names it in tensor names and error messages."""
        if value is None or isinstance(value, (bool, str)):
            return value
        if isinstance(value, np.generic):
            item = value.item()
            if not isinstance(item, (bool, int, float, str)):
                raise CheckpointError(f"cannot store {key}: numpy scalar of dtype {value.dtype}")
            return {_T: "scalar", "dtype": value.dtype.str, "value": self.pack(item, key)}
        if isinstance(value, int):
            return int(value)
        if isinstance(value, float):
            return float(value) if math.isfinite(value) else {_T: "float", "value": repr(float(value))}
        if isinstance(value, np.ndarray):
            return self._pack_array(value, key)
        if isinstance(value, torch.Tensor):
            return {_T: "tensor", "name": self.add_tensor(f"{key}", value)}
        if isinstance(value, os.PathLike):
            return {_T: "path", "value": os.fspath(value)}
        if isinstance(value, (list, tuple)):
            return {_T: type(value).__name__, "items": [self.pack(v, f"{key}.{i}") for i, v in enumerate(value)]}
        if isinstance(value, dict):
            if all(isinstance(k, str) for k in value):
                return {_T: "dict", "items": {k: self.pack(v, f"{key}.{k}") for k, v in value.items()}}
            return {_T: "dict", "pairs": [[self.pack(k, f"{key}.key{i}"), self.pack(v, f"{key}.{i}")]
                                          for i, (k, v) in enumerate(value.items())]}
        if isinstance(value, FittedPrior):
            return {_T: "prior", "index": self.add_prior(value)}
        if isinstance(value, PriorConfig):
            return {_T: "prior_config", "value": value.to_dict()}
        if isinstance(value, CCCV1Config):
            return {_T: "cccv1_config", "value": self.pack(value.to_dict(), f"{key}.config")}
        if isinstance(value, (SignalScaler, ImageScaler)):
            # per-feature statistics (lists in get_state) go to the weights file as float64 arrays, exactly
            state = {k: np.asarray(v, dtype=np.float64) if k.endswith("_") and isinstance(v, list) else v
                     for k, v in value.get_state().items()}
            return {_T: type(value).__name__, "state": self.pack(state, f"{key}.state")}
        if isinstance(value, (Ridge, RidgeCV)):
            check_is_fitted(value, "coef_")
            alpha = getattr(value, "alpha_", getattr(value, "alpha", None))
            return {_T: "ridge", "alpha": self.pack(alpha, f"{key}.alpha"), "coef": self.pack(value.coef_, f"{key}.coef"),
                    "intercept": self.pack(value.intercept_, f"{key}.intercept"),
                    "n_features_in": int(value.n_features_in_)}
        if dataclasses.is_dataclass(value) and type(value).__name__ in _DATACLASSES:
            fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
            return {_T: "dataclass", "class": type(value).__name__, "fields": self.pack(fields, key)}
        if hasattr(value, "get_params") and hasattr(value, "predict"):
            return self.pack_estimator(value, key)
        raise CheckpointError(
            f"cannot store {key} of type {type(value).__name__} in a checkpoint; storable: None, bool, int, float, "
            "str, numpy arrays and scalars, lists, tuples and dicts of those, FittedPrior, PriorConfig, CCCV1Config, "
            "TrainResult, SignalScaler, ImageScaler, Ridge/RidgeCV and nested decoders "
            "(add the type to cortexflow.priors.persistence)"
        )

    def _pack_array(self, a: np.ndarray, key: str) -> dict[str, Any]:
        if a.dtype.kind in "OUS":
            return {_T: "strarray", "items": [str(v) for v in a.ravel().tolist()], "shape": list(a.shape),
                    "dtype": "str" if a.dtype.kind in "US" else "object"}
        q = _exact_uint8(a)
        if q is not None:
            return {_T: "array", "name": self.add_tensor(key, torch.from_numpy(q)), "shape": list(a.shape),
                    "encoding": "uint8/255"}
        a = np.ascontiguousarray(a if a.dtype.isnative else a.astype(a.dtype.newbyteorder("=")))
        try:
            tensor = torch.from_numpy(a.copy())
        except TypeError as exc:
            raise CheckpointError(f"cannot store {key}: numpy dtype {a.dtype} has no torch equivalent") from exc
        return {_T: "array", "name": self.add_tensor(key, tensor), "shape": list(a.shape)}

    def pack_estimator(self, est: Any, key: str, skip: Iterable[str] = ()) -> dict[str, Any]:
        """Node of a fitted estimator: its class, parameters (minus :data:`FIT_ONLY_PARAMS`) and fitted attributes."""
        params = {k: v for k, v in est.get_params(deep=False).items() if k not in FIT_ONLY_PARAMS}
        prefix = f"{key}." if key else ""
        return {_T: "estimator", "class": type(est).__name__, "params": self.pack(params, prefix + "params"),
                "state": self.pack(_fitted_attributes(est, skip), prefix + "state")}


class StateUnpacker:
    """Inverse of :class:`StatePacker`: JSON nodes and tensors back to objects.

    Parameters
    ----------
    tensors : dict of str to torch.Tensor
        The checkpoint's tensors; each one read is removed (what is left over was not used).
    priors : list of dict
        The ``priors`` field of the metadata.
    classes : iterable of type
        Decoder classes that nested ``estimator`` nodes may name.
    where : path
        The checkpoint, for error messages.
    """

    def __init__(self, tensors: dict[str, torch.Tensor], priors: list, classes: Iterable[type], where: Path):
        self.tensors = dict(tensors)
        self.classes = {c.__name__: c for c in classes}
        self.where = where
        if not isinstance(priors, list):
            raise CheckpointError(f"checkpoint {where}: field 'priors' is {priors!r}; expected a JSON array")
        self.priors = [self._prior(i, p) for i, p in enumerate(priors)]

    def error(self, key: str, problem: str) -> CheckpointError:
        """A :class:`CheckpointError` naming the checkpoint and the metadata ``key``."""
        return CheckpointError(f"checkpoint {self.where}: {key} {problem}")

    def take(self, name: Any, key: str) -> torch.Tensor:
        """Remove and return tensor ``name`` (a clear error when the weights file lacks it)."""
        if not isinstance(name, str) or name not in self.tensors:
            raise self.error(key, f"refers to tensor {name!r}, which the weights file does not hold")
        return self.tensors.pop(name)

    def take_prefix(self, prefix: str) -> dict[str, torch.Tensor]:
        """Remove and return every tensor whose name starts with ``prefix`` (the prefix stripped)."""
        names = [k for k in self.tensors if k.startswith(prefix)]
        return {k[len(prefix):]: self.tensors.pop(k) for k in names}

    def _prior(self, i: int, node: Any) -> FittedPrior:
        try:
            config = PriorConfig.from_dict(node["config"])
            info = self.unpack(node["info"], f"priors[{i}].info")
            with torch.random.fork_rng(devices=[]):  # construction draws throw-away weights; the global stream is kept
                model = ImagePrior(config)
        except (KeyError, TypeError, ValueError, CortexFlowError) as exc:
            raise self.error(f"priors[{i}]", f"is not a valid prior description ({type(exc).__name__}: {exc})") from exc
        state = self.take_prefix(f"priors.{i}.")
        try:
            model.load_state_dict(state, strict=True)
        except (RuntimeError, ValueError) as exc:
            raise self.error(f"priors[{i}]", f"weights do not match its config ({exc})") from exc
        return FittedPrior(model, {**dict(info), "from_cache": False, "from_checkpoint": True}, None)

    def unpack(self, node: Any, key: str) -> Any:
        """The object of a JSON node (malformed nodes raise :class:`CheckpointError` naming ``key``)."""
        if node is None or isinstance(node, (bool, int, float, str)):
            return node
        if not isinstance(node, dict) or not isinstance(node.get(_T), str):
            raise self.error(key, f"is {str(node)[:80]!r}; expected a value or a typed object")
        try:
            return self._unpack_typed(node, key)
        except CheckpointError:
            raise
        except (KeyError, TypeError, ValueError, IndexError, AttributeError, CortexFlowError) as exc:
            raise self.error(key, f"is malformed ({type(exc).__name__}: {exc})") from exc

    def _unpack_typed(self, node: dict, key: str) -> Any:
        kind = node[_T]
        if kind == "float":
            return float(node["value"])
        if kind == "scalar":
            return np.dtype(node["dtype"]).type(self.unpack(node["value"], key))
        if kind == "array":
            a = self.take(node["name"], key).numpy()
            if node.get("encoding") == "uint8/255":
                a = a.astype(np.float32) / np.float32(255)
            elif "encoding" in node:
                raise self.error(key, f"has unknown encoding {node['encoding']!r}")
            shape = tuple(int(v) for v in node["shape"])
            if math.prod(shape) != a.size:
                raise self.error(key, f"has {a.size} values in the weights file; its shape {list(shape)} needs "
                                      f"{math.prod(shape)}")
            return a.reshape(shape)
        if kind == "strarray":
            dtype = str if node["dtype"] == "str" else object
            return np.array(node["items"], dtype=dtype).reshape(node["shape"])
        if kind == "tensor":
            return self.take(node["name"], key)
        if kind == "path":
            return Path(node["value"])
        if kind in ("list", "tuple"):
            items = [self.unpack(v, f"{key}.{i}") for i, v in enumerate(node["items"])]
            return items if kind == "list" else tuple(items)
        if kind == "dict":
            if "items" in node:
                return {k: self.unpack(v, f"{key}.{k}") for k, v in node["items"].items()}
            return {self.unpack(k, f"{key}.key{i}"): self.unpack(v, f"{key}.{i}") for i, (k, v) in enumerate(node["pairs"])}
        if kind == "prior":
            index = node["index"]
            if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(self.priors):
                raise self.error(key, f"refers to prior {index!r}; the checkpoint holds {len(self.priors)}")
            return self.priors[index]
        if kind == "prior_config":
            return PriorConfig.from_dict(node["value"])
        if kind == "cccv1_config":
            return CCCV1Config.from_dict(self.unpack(node["value"], key))
        if kind in ("SignalScaler", "ImageScaler"):
            cls = SignalScaler if kind == "SignalScaler" else ImageScaler
            return cls.from_state(self.unpack(node["state"], key))
        if kind == "ridge":
            alpha = self.unpack(node["alpha"], f"{key}.alpha")
            ridge = Ridge(alpha=alpha)
            ridge.coef_ = self.unpack(node["coef"], f"{key}.coef")
            ridge.intercept_ = self.unpack(node["intercept"], f"{key}.intercept")
            ridge.alpha_ = alpha
            ridge.n_features_in_ = int(node["n_features_in"])
            return ridge
        if kind == "dataclass":
            cls = _DATACLASSES.get(node["class"])
            if cls is None:
                raise self.error(key, f"names class {node['class']!r}; known: {', '.join(_DATACLASSES)}")
            return cls(**self.unpack(node["fields"], key))
        if kind == "estimator":
            return self.unpack_estimator(node, key)
        raise self.error(key, f"has unknown type {kind!r}")

    def unpack_estimator(self, node: dict, key: str, cls: type | None = None, **overrides: Any) -> Any:
        """A fitted estimator from its node; ``overrides`` replace stored parameters (e.g. ``device``)."""
        if cls is None:
            cls = self.classes.get(node.get("class"))
            if cls is None:
                raise self.error(key, f"names class {node.get('class')!r}; this loader knows: "
                                      f"{', '.join(sorted(self.classes)) or 'none'}")
        prefix = f"{key}." if key else ""
        params = self.unpack(node["params"], prefix + "params")
        state = self.unpack(node["state"], prefix + "state")
        if not isinstance(params, dict) or not isinstance(state, dict):
            raise self.error(key or "metadata", "has params or state that is not an object")
        names = set(cls._get_param_names())
        params = {k: v for k, v in {**params, **overrides}.items() if k in names}
        try:
            obj = cls(**params)
        except (TypeError, ValueError, CortexFlowError) as exc:
            raise self.error(prefix + "params", f"do not build a {cls.__name__} ({exc})") from exc
        for k, v in state.items():
            setattr(obj, k, v)
        return obj


def save_decoder_state(est: Any, path: str | os.PathLike, *, kind: str, fitted_attr: str,
                       skip: Iterable[str] = (), extra: Callable[[StatePacker], dict] | None = None) -> Path:
    """Write the checkpoint of a prior-backed decoder (see the module docstring).

    Parameters
    ----------
    est : estimator
        Fitted decoder.
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
    packer = StatePacker()
    body = packer.pack_estimator(est, "", skip)
    meta = {
        "format": CHECKPOINT_FORMAT,
        "kind": kind,
        "estimator": type(est).__name__,
        "cortexflow_version": __version__,
        "torch_version": torch.__version__,
        "n_features_in": int(est.n_features_in_),
        "output_shape": [int(v) for v in getattr(est, "output_shape_", (28, 28))],
        "params": body["params"],
        "state": body["state"],
    }
    if extra is not None:
        meta["network"] = extra(packer)
    meta["priors"] = packer.priors
    return write_checkpoint(path, meta, packer.tensors)


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
        checkpoint, or metadata that does not describe a decoder of ``cls``.
    """
    meta, fmt, meta_path, w_path = read_checkpoint_meta(path)
    found = checkpoint_kind(meta)
    if found != kind:
        raise CheckpointError(
            f"checkpoint {path} holds a {found or 'cccv1'!r} decoder, not {kind!r}; load it with "
            "cortexflow.models.loader.load_decoder"
        )
    for key, typ in (("params", dict), ("state", dict), ("priors", list), ("n_features_in", int)):
        if not isinstance(meta.get(key), typ) or isinstance(meta.get(key), bool):
            raise CheckpointError(f"checkpoint {meta_path}: field {key!r} is {meta.get(key, 'missing')!r}; "
                                  f"expected a JSON {'array' if typ is list else 'integer' if typ is int else 'object'}")
    tensors = read_checkpoint_weights(w_path, meta, fmt, finite_prefixes=("priors.", "model."))
    unpacker = StateUnpacker(tensors, meta["priors"], classes, meta_path)
    overrides = {"device": device} if "device" in cls._get_param_names() else {}
    obj = unpacker.unpack_estimator({"class": cls.__name__, "params": meta["params"], "state": meta["state"]},
                                    "", cls=cls, **overrides)
    if network is not None:
        network(obj, meta.get("network"), unpacker)
    if unpacker.tensors:
        names = sorted(unpacker.tensors)
        raise CheckpointError(f"checkpoint {w_path}: {len(names)} tensor(s) that the metadata does not refer to "
                              f"({', '.join(names[:5])}{', ...' if len(names) > 5 else ''})")
    if getattr(obj, "n_features_in_", None) != meta["n_features_in"]:
        raise CheckpointError(f"checkpoint {meta_path}: field 'n_features_in' is {meta['n_features_in']}, but the "
                              f"stored state has {getattr(obj, 'n_features_in_', None)}")
    obj.checkpoint_meta_ = meta
    return obj
