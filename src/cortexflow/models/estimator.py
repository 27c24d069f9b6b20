"""``CCCV1Decoder``: the scikit-learn-style estimator around the CCCV1 network."""

from __future__ import annotations

import logging
import math
import numbers
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.utils import TransformerTags
from sklearn.utils.validation import check_is_fitted

from cortexflow._version import __version__
from cortexflow.data.preprocessing import ImageScaler, SignalScaler
from cortexflow.data.splits import inner_validation_split
from cortexflow.exceptions import CheckpointError, ConfigError, CortexFlowError
from cortexflow.models.base import BaseDecoder, seed_from_random_state
from cortexflow.models.checkpoint import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_META,
    CHECKPOINT_WEIGHTS,
    SINGLE_NETWORK_KINDS,
    TRAINING_KEYS,
    check_body,
    check_replaceable_checkpoint,
    check_scalers,
    checkpoint_kind,
    one_line,
    read_checkpoint_meta,
    read_checkpoint_weights,
    save_checkpoint_dir,
    write_checkpoint,
)
from cortexflow.models.registry import build_model
from cortexflow.training.config import CCCV1Config, get_config
from cortexflow.training.devices import AMP_MODES, resolve_device
from cortexflow.training.seeding import attach_dropout_generator, dropout_generator, isolated_rng, seeded_init
from cortexflow.training.trainer import TrainResult, train_model
from cortexflow.utils.io import json_safe

__all__ = [
    "CCCV1Decoder",
    "PreparedFit",
    "save_checkpoint_dir",
    "check_replaceable_checkpoint",
    "estimate_training_memory",
    "CHECKPOINT_WEIGHTS",
    "CHECKPOINT_META",
    "CHECKPOINT_FORMAT",
]

logger = logging.getLogger(__name__)

#: Above this many bytes of estimated training memory ``fit`` warns before allocating the network.
LARGE_MODEL_BYTES = 2 * 1024**3


def estimate_training_memory(n_params: int) -> int:
    """Rough bytes of float32 training memory for ``n_params`` parameters: weights, gradients, Adam's two moments."""
    return 4 * 4 * int(n_params)


def _format_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} GB"  # pragma: no cover


@dataclass
class PreparedFit:
    """What :meth:`CCCV1Decoder._prepare_fit` hands to a training loop (sequential or batched).

    Attributes
    ----------
    X, Y : ndarray
        The training rows after the fitted scalers (Y flattened per row).
    loss_terms : dict or None
        Loss terms beside the pixel MSE (the estimator's and its hook's).
    seed : int
        The fit's seed (inner split, batch order; ``seed_``).
    val_index : (ndarray, ndarray)
        Inner training and validation rows.
    init_state : torch.Tensor
        State of the initialisation stream after the weights were drawn: the
        CPU dropout stream starts there.
    """

    X: np.ndarray
    Y: np.ndarray
    loss_terms: dict | None
    seed: int
    val_index: tuple[np.ndarray, np.ndarray]
    init_state: torch.Tensor


class CCCV1Decoder(BaseDecoder):
    """Reconstruct images from brain signals with CCCV1.

    Parameters
    ----------
    config : "auto", str, dict or CCCV1Config
        ``"auto"`` picks the per-data-set preset from ``dataset`` (when known) or
        from the number of training rows; a preset name (``"small"``,
        ``"vangerven"``, ...), a dict, or a :class:`CCCV1Config`.
    dataset : str, optional
        Dataset name, used by ``config="auto"`` and stored in checkpoints.
    random_state : int, None or numpy.random.RandomState
        Seed of weight initialisation, the inner validation split, batch order
        and dropout. They are drawn from the fit's own generators
        (:mod:`cortexflow.training.seeding`): ``fit`` neither depends on nor
        changes PyTorch's global random state.
    device : str
        ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"``.
    progress : bool
        Show a per-epoch progress bar during ``fit``.
    loss_terms : dict, optional
        Extra loss terms passed to :func:`cortexflow.training.train_model`.
    amp : {"off", "auto", "bf16", "fp16"}
        Mixed precision of training (CUDA: ``"auto"`` is bf16 where the GPU
        has it, else fp16 with a gradient scaler; CPU: ``"bf16"`` only, and
        ``"auto"`` means off). Weights stay float32.

    Attributes
    ----------
    model_ : torch.nn.Module
        The trained network (on CPU after ``fit``).
    config_ : CCCV1Config
        The resolved configuration.
    signal_scaler_, target_scaler_ : SignalScaler, ImageScaler
        Preprocessing fitted on the training rows.
    history_ : list of dict
        Per-epoch train and validation loss.
    n_features_in_ : int
    seed_ : int
        The int seed used by ``fit``: ``random_state`` itself when it is an
        int, else drawn from it (``None`` or a ``numpy.random.RandomState``).
    output_shape_ : tuple of int
        Shape of one target: the training images' ``(H, W)`` or ``(H, W, C)``
        (``(28, 28)`` for the registered data sets); the network's decoder has
        ``prod(output_shape_)`` outputs, reshaped (C order) to it.
    """

    #: the inner validation split is carved out of the training rows
    _min_train_rows = 4
    _min_train_rows_reason = " (rows; an inner validation split is carved out of them)"

    def __init__(
        self,
        config: Any = "auto",
        dataset: str | None = None,
        random_state: int = 0,
        device: str = "auto",
        progress: bool = False,
        loss_terms: dict | None = None,
        amp: str = "off",
    ):
        self.config = config
        self.dataset = dataset
        self.random_state = random_state
        self.device = device
        self.progress = progress
        self.loss_terms = loss_terms
        self.amp = amp

    # ------------------------------------------------------------------ fit
    def fit(self, X, Y, *, metadata: dict | None = None) -> "CCCV1Decoder":
        """Fit preprocessing and the network on the training rows (X, Y).

        Parameters
        ----------
        X : array-like, shape (n, n_features)
        Y : array-like, shape (n, H, W), (n, H, W, C), (n, d) or (n,)
            Targets (images in [0, 1]); any shape is flattened and min-max
            scaled with training statistics.
        metadata : dict, optional
            Dataset metadata stored in checkpoints.
        """
        prep = self._prepare_fit(X, Y, metadata=metadata)
        dev = resolve_device(self.device)
        attach_dropout_generator(self.model_, dropout_generator(dev, prep.seed, prep.init_state))
        try:
            # layers without a generator of their own (an EEG front-end's nn.Dropout) draw from a
            # forked global stream that continues the initialisation stream, as global seeding did
            with isolated_rng(prep.seed, dev, cpu_state=prep.init_state):
                result: TrainResult = train_model(
                    self.model_, prep.X, prep.Y, self.config_, seed=prep.seed, device=dev,
                    progress=self.progress, loss_terms=prep.loss_terms, val_index=prep.val_index, amp=self.amp,
                )
        finally:
            attach_dropout_generator(self.model_, None)
        self.model_.cpu()
        self.history_ = result.history
        self.train_result_ = result
        return self

    def _prepare_fit(self, X, Y, *, metadata: dict | None = None) -> PreparedFit:
        """Everything of :meth:`fit` before the training loop, shared with the batched trainer.

        Validates (X, Y), resolves the configuration, runs the
        :meth:`_training_setup` hook, fits the scalers on these rows, draws the
        inner validation split and builds the network with its initial weights
        from the estimator's own seeded stream. Sets ``seed_``,
        ``n_features_in_``, ``output_shape_``, ``config_``, ``signal_scaler_``,
        ``target_scaler_``, ``model_`` and ``metadata_``; PyTorch's global
        random state is left as it was.

        Returns
        -------
        PreparedFit
        """
        seed = self.seed_ = seed_from_random_state(self.random_state)  # set first: _training_setup hooks may use it
        X, Y = self._validate_fit_input(X, Y)
        self.output_shape_ = tuple(Y.shape[1:])
        self.config_ = get_config(self.config, n_train=len(X), dataset=self.dataset)
        self.config_, extra_terms = self._training_setup(X, Y, self.config_)
        loss_terms = {**(self.loss_terms or {}), **extra_terms} or None
        self.signal_scaler_ = self._make_signal_scaler().fit(X)
        self.target_scaler_ = ImageScaler().fit(Y)
        Xs = self.signal_scaler_.transform(X)
        Ys = self.target_scaler_.transform(Y)
        out_shape = (math.prod(self.output_shape_) or 1,)
        self._warn_if_huge(Xs.shape[1], out_shape, self.config_)
        self.model_, init_state = seeded_init(lambda: self._build_network(Xs.shape[1], out_shape, self.config_), seed)
        self.metadata_ = dict(metadata or {})
        val_index = inner_validation_split(len(Xs), self.config_.val_fraction, seed)
        return PreparedFit(Xs, Ys, loss_terms, seed, val_index, init_state)

    def _warn_if_huge(self, n_features: int, output_shape: tuple[int, ...], config: CCCV1Config) -> int | None:
        """Count the network's parameters without allocating them (meta device); warn when training needs > 2 GiB.

        Returns the parameter count, or None when the network cannot be built on the meta device.
        """
        try:
            with torch.device("meta"):
                n_params = sum(p.numel() for p in self._build_network(n_features, output_shape, config).parameters())
        except Exception as exc:  # a network that cannot be built without real tensors: no estimate
            logger.debug("no parameter estimate for this network (%s)", exc)
            return None
        need = estimate_training_memory(n_params)
        if need > LARGE_MODEL_BYTES:
            logger.warning(
                "%d input features give a network of %.1f million parameters (%s of float32 weights, about %s "
                "while training with Adam; the checkpoint is about %s); select fewer features or lower "
                "hidden_dim if that is more than this machine can hold",
                n_features, n_params / 1e6, _format_bytes(4 * n_params), _format_bytes(need), _format_bytes(4 * n_params),
            )
        return n_params

    def _training_setup(self, X: np.ndarray, Y: np.ndarray, config: CCCV1Config) -> tuple[CCCV1Config, dict]:
        """Hook for subclasses: adjust the resolved config and add loss terms for this fit.

        Called by :meth:`fit` with the raw training rows (X, Y) in the row order
        that :func:`train_model` sees, so a term's ``index`` selects rows of Y.

        Returns
        -------
        (CCCV1Config, dict of str to loss term)
        """
        return config, {}

    def _make_signal_scaler(self):
        """Hook for subclasses: the unfitted signal preprocessing (``SignalScaler`` here)."""
        return SignalScaler()

    @classmethod
    def _signal_scaler_from_state(cls, state: dict):
        """Hook for subclasses: rebuild the fitted signal preprocessing of a checkpoint."""
        return SignalScaler.from_state(state)

    def _build_network(self, n_features: int, output_shape: tuple[int, ...], config: CCCV1Config):
        """Hook for subclasses: the untrained network (called after ``signal_scaler_`` is set)."""
        return build_model(config.model, n_features, output_shape, config)

    # -------------------------------------------------------------- predict
    @torch.no_grad()
    def _forward(self, X, fn: str):
        check_is_fitted(self, "model_")
        X = self._validate_X(X, reset=False)
        dev = resolve_device(self.device)
        self.model_.to(dev).eval()
        xt = torch.as_tensor(self.signal_scaler_.transform(X), device=dev)
        out = getattr(self.model_, fn)(xt).float().cpu().numpy()
        self.model_.cpu()
        bad = ~np.isfinite(out.reshape(len(out), -1)).all(axis=1)
        if bad.any():
            raise CortexFlowError(
                f"{type(self).__name__}.{'predict' if fn == 'forward' else 'transform'}: the network produced NaN "
                f"or infinite values for {int(bad.sum())} of {len(out)} input row(s) (first: row "
                f"{int(np.flatnonzero(bad)[0])}); the model's weights or preprocessing are damaged, or the input "
                "is far outside the training range"
            )
        return out

    def predict(self, X) -> np.ndarray:
        """Reconstruct targets; images come back in the training images' shape, float32 in [0, 1]."""
        out = self._forward(X, "forward")
        Y = self.target_scaler_.inverse_transform(out.reshape(len(out), -1)).reshape(len(out), -1)
        return Y.reshape((len(out),) + self.output_shape_).astype(np.float32)

    def transform(self, X) -> np.ndarray:
        """The unit-norm 512-d embedding of each signal row."""
        return self._forward(X, "encode")

    def fit_transform(self, X, y=None, **fit_params) -> np.ndarray:
        """Fit on (X, y), then return the embedding of X (see :meth:`transform`).

        ``y`` (the target images) is required; it is a keyword with a default
        only to match scikit-learn's transformer signature.
        """
        return self.fit(X, y, **fit_params).transform(X)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        # ``transform`` returns the float32 embedding whatever the input dtype.
        tags.transformer_tags = TransformerTags(preserves_dtype=["float32"])
        return tags

    # ---------------------------------------------------------- persistence
    #: ``kind`` field of the checkpoints this class writes (see :func:`cortexflow.models.loader.load_decoder`).
    checkpoint_kind = "cccv1"

    def save(self, path: str | os.PathLike) -> Path:
        """Write a checkpoint folder: ``model.safetensors`` and ``checkpoint.json``.

        The folder is assembled beside ``path`` and moved into place in one
        rename, so an interrupted save never leaves a half-written checkpoint.
        """
        check_is_fitted(self, "model_")
        meta = {**self._checkpoint_header(), **self._checkpoint_body()}
        return write_checkpoint(path, meta, self._checkpoint_state())

    def _checkpoint_header(self) -> dict[str, Any]:
        """The fields every checkpoint of this class starts with: format, kind, versions, estimator class."""
        return {
            "format": CHECKPOINT_FORMAT,
            "kind": self.checkpoint_kind,
            "cortexflow_version": __version__,
            "torch_version": torch.__version__,
            "estimator": type(self).__name__,
        }

    def _checkpoint_body(self) -> dict[str, Any]:
        """The metadata of the fitted network: params, config, sizes, preprocessing, dataset, training facts."""
        return {
            "params": self._checkpoint_params(),
            "config": self.config_.to_dict(),
            "n_features_in": int(self.n_features_in_),
            "image_shape": list(self.output_shape_),
            "output_shape": list(self.output_shape_),
            "preprocessing": {"signal": self.signal_scaler_.get_state(), "target": self.target_scaler_.get_state()},
            "dataset": self.metadata_,
            "training": json_safe({
                "best_epoch": self.train_result_.best_epoch,
                "stopped_epoch": self.train_result_.stopped_epoch,
                "best_val_loss": self.train_result_.best_val_loss,
                "seconds": self.train_result_.seconds,
            }),
        }

    def _checkpoint_state(self) -> dict[str, torch.Tensor]:
        """The network's weights as contiguous CPU tensors."""
        return {k: v.detach().cpu().contiguous() for k, v in self.model_.state_dict().items()}

    def _checkpoint_params(self) -> dict[str, Any]:
        """Constructor parameters for the checkpoint; a non-int random_state is stored as the seed it gave."""
        params = {k: v for k, v in self.get_params().items() if k not in {"config", "loss_terms"}}
        if "random_state" in params and not isinstance(params["random_state"], numbers.Integral):
            params["random_state"] = getattr(self, "seed_", None)
        return params

    @classmethod
    def load(cls, path: str | os.PathLike, device: str = "auto") -> "CCCV1Decoder":
        """Load a checkpoint written by :meth:`save`.

        Raises
        ------
        CheckpointError
            Missing files, unreadable JSON or weights, weights that do not
            fit the stored configuration, or a checkpoint of another kind of
            decoder (load those with :func:`cortexflow.models.loader.load_decoder`).
        """
        meta, fmt, meta_path, w_path = read_checkpoint_meta(path)
        kind = checkpoint_kind(meta)
        if kind is not None and kind not in SINGLE_NETWORK_KINDS:
            raise CheckpointError(
                f"checkpoint {path} holds a {kind!r} decoder ({meta.get('estimator', 'unknown class')}), not a "
                f"single CCCV1 network (kinds {', '.join(SINGLE_NETWORK_KINDS)}); load it with "
                "cortexflow.models.loader.load_decoder"
            )
        check_body(meta, meta_path)
        obj = cls._from_checkpoint_body(meta, meta_path, w_path, device,
                                        lambda: read_checkpoint_weights(w_path, meta, fmt))
        obj.checkpoint_meta_ = meta
        return obj

    def _check_params(self) -> None:
        """Check the parameters other than ``config`` (checked when resolved); run on every load."""
        super()._check_params()
        if self.dataset is not None and not isinstance(self.dataset, str):
            raise ConfigError(f"dataset={self.dataset!r} is not allowed; allowed: None or a data set name")
        if not isinstance(self.device, str) or not self.device:
            raise ConfigError(f"device={self.device!r} is not allowed; allowed: 'auto', 'cpu', 'cuda', 'cuda:N'")
        if not isinstance(self.progress, (bool, np.bool_)):
            raise ConfigError(f"progress={self.progress!r} is not allowed; allowed: True, False")
        if self.amp not in AMP_MODES:
            raise ConfigError(f"amp={self.amp!r} is not allowed; allowed: {', '.join(map(repr, AMP_MODES))}")

    @classmethod
    def _upgrade_checkpoint_params(cls, params: dict[str, Any]) -> dict[str, Any]:
        """Hook: rename the parameters of checkpoints written by earlier versions (here: none)."""
        return params

    @classmethod
    def _from_checkpoint_body(cls, body: dict, meta_path: Path, w_path: Path, device: str, weights) -> "CCCV1Decoder":
        """A fitted decoder from checked metadata (:func:`check_body`) and ``weights()``, its tensors.

        ``weights`` is called after the metadata's values are checked, so that a
        bad field is reported before the (larger) weights file is read.
        """
        try:
            cfg = CCCV1Config.from_dict(body["config"])
            sig = cls._signal_scaler_from_state(body["preprocessing"]["signal"])
            tgt = ImageScaler.from_state(body["preprocessing"]["target"])
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise CheckpointError(f"checkpoint {meta_path}: corrupt or incomplete metadata ({type(exc).__name__}: {exc})") from exc
        n_in, out_shape = int(body["n_features_in"]), tuple(int(v) for v in body["output_shape"])
        check_scalers(sig, tgt, n_in, out_shape, meta_path)
        if "image_shape" in body and body["image_shape"] != list(out_shape):
            raise CheckpointError(f"checkpoint {meta_path}: field 'image_shape' is {body['image_shape']!r}, but "
                                  f"'output_shape' is {list(out_shape)}; they must be equal")
        params = cls._upgrade_checkpoint_params(dict(body.get("params", {})))
        restorable = set(cls._get_param_names()) - {"config", "loss_terms"}
        unknown = sorted(set(params) - restorable)
        if unknown:
            raise CheckpointError(f"checkpoint {meta_path}: field 'params' has unknown parameter(s) "
                                  f"{', '.join(map(repr, unknown))} for {cls.__name__}; allowed: {', '.join(sorted(restorable))}")
        params["device"] = device
        try:
            obj = cls(config=cfg, **params)
            obj._check_params()
        except (TypeError, ValueError, CortexFlowError) as exc:
            raise CheckpointError(f"checkpoint {meta_path}: field 'params' is invalid for {cls.__name__}: {exc}") from exc
        state = weights()
        obj.signal_scaler_ = sig
        try:
            with torch.random.fork_rng(devices=[]):  # its random initial weights are overwritten: keep the global stream
                model = obj._build_network(n_in, (math.prod(out_shape) or 1,), cfg)
            model.load_state_dict(state, strict=True)
        except (RuntimeError, ValueError, TypeError, CortexFlowError) as exc:
            raise CheckpointError(f"checkpoint {w_path}: weights do not match the stored configuration "
                                  f"({one_line(exc)})") from exc
        model.eval()
        obj.model_, obj.config_, obj.n_features_in_, obj.output_shape_ = model, cfg, n_in, out_shape
        obj.image_shape_ = out_shape
        obj.signal_scaler_, obj.target_scaler_ = sig, tgt
        obj.metadata_ = body.get("dataset", {})
        obj.history_ = []
        obj.train_result_ = TrainResult(**{k: (float("inf") if v is None else TRAINING_KEYS[k](v))
                                            for k, v in body.get("training", {}).items() if k in TRAINING_KEYS})
        return obj
