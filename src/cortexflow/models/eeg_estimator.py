"""``EEGDecoder``: CCCV1 with an EEG front-end, on epochs of shape (n, channels, times).

A subclass of :class:`~cortexflow.models.estimator.CCCV1Decoder` that changes
only what differs for EEG: the input check (3-D epochs), the signal
preprocessing (per-channel robust scaling fitted on the training epochs, see
:class:`~cortexflow.data.eeg.preprocessing.EEGRobustScaler`) and the network
(a front-end from :mod:`cortexflow.models.frontends` feeding CCCV1's
CLIP-guided encoder). Training (:func:`cortexflow.training.train_model`),
prediction, scoring and checkpoints are the parent's.

>>> from cortexflow.data.eeg import simulate_evoked_eeg
>>> from cortexflow.data.stimuli import class_images, targets_for_labels
>>> ep = simulate_evoked_eeg(n_per_class=4, seed=0)
>>> Y = targets_for_labels(ep.labels, class_images(ep.class_names))
>>> dec = EEGDecoder(frontend="shallow", sfreq=ep.sfreq, config={"epochs": 2}).fit(ep.data, Y)
>>> dec.predict(ep.data[:3]).shape
(3, 28, 28)
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from cortexflow.data.eeg.preprocessing import EEGRobustScaler
from cortexflow.data.validation import validate_signals
from cortexflow.exceptions import ConfigError, DataValidationError
from cortexflow.models.base import check_number
from cortexflow.models.estimator import CCCV1Decoder
from cortexflow.models.frontends import FRONTENDS, build_eeg_model
from cortexflow.training.config import CCCV1Config
from cortexflow.registry.options import options_from_dataclass, options_from_estimator
from cortexflow.registry.methods import register_method
from cortexflow.models.ensemble import check_config_options
from cortexflow.registry.sklearn_notes import UNDERTRAINED
from cortexflow.training.config import get_config

__all__ = ["EEGDecoder"]


class EEGDecoder(CCCV1Decoder):
    """Reconstruct images from EEG epochs with an EEG front-end + CCCV1.

    Parameters
    ----------
    frontend : {"shallow", "eegnet", "flatten"}
        The input module (see :mod:`cortexflow.models.frontends`).
    frontend_params : dict, optional
        Keyword arguments of the front-end (``n_filters``, ``dropout``, ...).
    n_channels : int, optional
        For 2-D input only: rows of ``n_channels * n_times`` values (channel
        after channel, as ``epochs.reshape(n, -1)`` lays them out) are
        reshaped to (n_channels, n_times). Without it a 2-D row is one
        channel. 3-D input needs no reshaping.
    sfreq : float, optional
        Sampling rate of the epochs; converts the front-end's kernel and
        pooling lengths from seconds to samples (give it: the defaults assume
        250 Hz for ``shallow`` and 128 Hz for ``eegnet``).
    clip : float or None
        Clipping of the robust-scaled signals, in robust standard deviations.
    config, dataset, random_state, device, progress, loss_terms, amp
        As in :class:`~cortexflow.models.estimator.CCCV1Decoder`; ``config``'s
        ``model`` field is set to ``"eeg_<frontend>"``.

    Attributes
    ----------
    n_channels_, n_times_ : int
        Shape of one training epoch.
    n_features_in_ : int
        ``n_channels_ * n_times_``.
    signal_scaler_ : EEGRobustScaler
    (and every fitted attribute of CCCV1Decoder)
    """

    checkpoint_kind = "cccv1-eeg"

    def __init__(
        self,
        frontend: str = "shallow",
        frontend_params: dict | None = None,
        n_channels: int | None = None,
        sfreq: float | None = None,
        clip: float | None = 20.0,
        config: Any = "auto",
        dataset: str | None = None,
        random_state: int = 0,
        device: str = "auto",
        progress: bool = False,
        loss_terms: dict | None = None,
        amp: str = "off",
    ):
        super().__init__(config=config, dataset=dataset, random_state=random_state, device=device,
                         progress=progress, loss_terms=loss_terms, amp=amp)
        self.frontend = frontend
        self.frontend_params = frontend_params
        self.n_channels = n_channels
        self.sfreq = sfreq
        self.clip = clip

    def _check_params(self) -> None:
        super()._check_params()
        if self.frontend not in FRONTENDS:
            raise ConfigError(f"unknown EEG front-end {self.frontend!r}; allowed: {', '.join(sorted(FRONTENDS))}")
        if self.frontend_params is not None and not isinstance(self.frontend_params, dict):
            raise ConfigError(f"frontend_params={self.frontend_params!r} is not allowed; allowed: None or a dict")
        check_number(self, "n_channels", low=1, integer=True, none=True)
        check_number(self, "sfreq", low=0, low_open=True, none=True)
        check_number(self, "clip", low=0, low_open=True, none=True)

    # ------------------------------------------------------------- hooks
    def _validate_X(self, X, *, reset: bool) -> np.ndarray:
        if hasattr(X, "toarray") or hasattr(X, "tocsr"):  # scipy sparse: np.asarray would make a 0-d object array
            raise DataValidationError(f"X is a sparse {type(X).__name__}; sparse input is not supported: EEGDecoder "
                                      "expects dense epochs (X.toarray())")
        X = np.asarray(X)
        if X.ndim == 2:
            X = self._rows_to_epochs(X, reset=reset)
        if X.ndim != 3:
            raise DataValidationError(
                f"X has shape {X.shape}; EEGDecoder expects 3-D epochs (n_epochs, n_channels, n_times) "
                "or 2-D rows of n_channels * n_times values (one epoch: X[None])"
            )
        X = validate_signals(X.reshape(len(X), -1), key="X", allow_degenerate=True).reshape(X.shape)
        if reset:
            self.n_channels_, self.n_times_ = int(X.shape[1]), int(X.shape[2])
            self.n_features_in_ = self.n_channels_ * self.n_times_
        elif X.shape[1:] != (self.n_channels_, self.n_times_):
            raise DataValidationError(
                f"X has epochs of shape {X.shape[1:]}, but this decoder was trained on "
                f"({self.n_channels_}, {self.n_times_}) (channels, times)"
            )
        return X

    def _rows_to_epochs(self, X: np.ndarray, *, reset: bool) -> np.ndarray:
        n_feat = X.shape[1]
        c = self.n_channels if reset else getattr(self, "n_channels_", None)
        c = int(c) if c else 1
        if n_feat % c:
            raise DataValidationError(
                f"X has {n_feat} values per row, which is not a multiple of n_channels={c} "
                "(2-D X is read as rows of n_channels * n_times values; pass one epoch as X[None])"
            )
        return X.reshape(len(X), c, n_feat // c)

    def _training_setup(self, X, Y, config: CCCV1Config):
        if self.frontend not in FRONTENDS:
            raise ConfigError(f"unknown EEG front-end {self.frontend!r}; allowed: {', '.join(sorted(FRONTENDS))}")
        config, terms = super()._training_setup(X, Y, config)
        return config.replace(model=f"eeg_{self.frontend}"), terms

    def _make_signal_scaler(self) -> EEGRobustScaler:
        return EEGRobustScaler(clip=self.clip)

    @classmethod
    def _signal_scaler_from_state(cls, state: dict) -> EEGRobustScaler:
        return EEGRobustScaler.from_state(state)

    def _build_network(self, n_features: int, output_shape: tuple[int, ...], config: CCCV1Config):
        params = dict(self.frontend_params or {})
        if self.sfreq is not None:
            params.setdefault("sfreq", float(self.sfreq))
        sc = self.signal_scaler_
        return build_eeg_model(self.frontend, (sc.n_channels_, sc.n_times_), output_shape, config, **params)

    @classmethod
    def load(cls, path, device: str = "auto") -> "EEGDecoder":
        """Load a checkpoint written by :meth:`save` (see :meth:`CCCV1Decoder.load`)."""
        obj = super().load(path, device=device)
        obj.n_channels_, obj.n_times_ = obj.signal_scaler_.n_channels_, obj.signal_scaler_.n_times_
        return obj


# ---------------------------------------------------------------- registration
#: EEG method name -> EEG front-end
EEG_METHODS: dict[str, str] = {
    "cccv1-eeg-shallow": "shallow",
    "cccv1-eeg-eegnet": "eegnet",
    "cccv1-eeg-flatten": "flatten",
}


def eeg_method_factory(frontend: str, seed: int, dataset_name: str, n_train: int, *, fast: bool = False,
                       device: str = "auto", n_channels: int | None = None, sfreq: float | None = None,
                       frontend_params: dict | None = None, clip: float | None = 20.0, **overrides: Any) -> EEGDecoder:
    """Factory of the ``cccv1-eeg-*`` methods: an :class:`EEGDecoder` with the given front-end.

    The configuration is the ``"auto"`` choice for the dataset (or its size),
    with ``overrides`` (CCCV1Config fields) applied. ``n_channels`` and ``sfreq``
    tell the decoder how the dataset's rows are laid out (rows of
    ``n_channels * n_times`` values).
    """
    cfg = get_config("auto", n_train=n_train, dataset=dataset_name, **overrides)
    if fast:
        cfg = cfg.replace(epochs=2, patience=1, hidden_dim=64, embed_dim=32)
    return EEGDecoder(frontend=frontend, frontend_params=frontend_params, n_channels=n_channels, sfreq=sfreq,
                      clip=clip, config=cfg, dataset=dataset_name, random_state=seed, device=device)


_OWN_MESSAGE = ("asserts scikit-learn's own wording of the error; EEGDecoder refuses this input with CortexFlow's "
                "one-line DataValidationError, which names the key and the shape instead")
_BATCH_OF_ONE = ("the toy problem's epochs are so short (a few samples) that the shallow front-end's BatchNorm sees "
                 "one value per channel in a final training batch of one epoch, which it cannot normalise in "
                 "training mode; real epochs (100+ samples) do not reach it")
_EEG_XFAIL = {
    **dict.fromkeys(("check_complex_data", "check_estimators_empty_data_messages", "check_dtype_object",
                     "check_n_features_in_after_fitting", "check_fit2d_predict1d"), _OWN_MESSAGE),
    **dict.fromkeys(("check_dict_unchanged", "check_dont_overwrite_parameters", "check_f_contiguous_array_estimator",
                     "check_estimators_dtypes", "check_methods_sample_order_invariance",
                     "check_methods_subset_invariance", "check_regressor_multioutput"), _BATCH_OF_ONE),
    "check_regressors_train": UNDERTRAINED,
}
for _name, _frontend in EEG_METHODS.items():
    register_method(
        _name, functools.partial(eeg_method_factory, _frontend), estimator=EEGDecoder, in_all=False,
        needs=("eeg",), label=f"CCCV1-EEG ({_frontend})",
        options=options_from_dataclass(CCCV1Config) + tuple(
            o for o in options_from_estimator(EEGDecoder) if o.name in ("device", "n_channels", "sfreq",
                                                                         "frontend_params", "clip")),
        description=f"EEGDecoder: {_frontend} EEG front-end + CCCV1 (rows reshaped to n_channels x n_times)",
        sklearn_xfail=_EEG_XFAIL, check=check_config_options,
    )
