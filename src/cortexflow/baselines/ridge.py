"""``ridge``: linear regression from z-scored signals to pixels, penalty chosen by inner CV."""

from __future__ import annotations

import logging

import numpy as np
from sklearn.utils.validation import check_is_fitted

from cortexflow.baselines._common import (
    check_alphas,
    default_alphas,
    fit_ridge_cv,
    fit_ridge_gcv_lean,
    fit_signal_scaler_lean,
    uses_lean_path,
)
from cortexflow.data.preprocessing import SignalScaler
from cortexflow.exceptions import ConfigError
from cortexflow.models.base import COMMON_STATE, BaseDecoder
from cortexflow.models.checkpoint import StateField
from cortexflow.registry.methods import register_method
from cortexflow.registry.sklearn_notes import CLIPPED, FLOAT32

__all__ = ["RidgeDecoder"]

logger = logging.getLogger(__name__)


class RidgeDecoder(BaseDecoder):
    """Ridge regression from brain signal to every pixel.

    Signals are z-scored with training statistics; one penalty shared by all
    pixels (and channels) is chosen from a log-spaced grid by cross-validation on the
    training rows (efficient leave-one-out by default, which for n << p uses
    the n x n Gram matrix). Above :data:`~cortexflow.baselines._common.LEAN_MIN_ELEMENTS`
    training values (with ``cv=None``) the fit is the lean float32 path of
    :func:`~cortexflow.baselines._common.fit_ridge_gcv_lean` (one
    eigendecomposition, penalty by GCV, no float64 copy of the signals).
    Predictions are clipped to [0, 1].

    Parameters
    ----------
    alphas : array-like, optional
        Penalty grid; 21 values from 1e-3 to 1e7 when omitted.
    cv : int or None
        ``None``: efficient leave-one-out; an int: K-fold on the training rows.
    random_state : int
        Unused (ridge is deterministic); kept for a uniform interface.

    Attributes
    ----------
    alpha_ : float
        The chosen penalty.
    scaler_ : SignalScaler
    ridge_ : sklearn.linear_model.RidgeCV
    n_features_in_ : int
    output_shape_ : tuple of int
    """

    _min_train_rows = 3
    checkpoint_kind = "ridge"
    checkpoint_schema = {
        **COMMON_STATE,
        "output_shape_": StateField("shape"),
        "scaler_": StateField("scaler"),
        "ridge_": StateField("ridge", shape=("n_pixels",)),
        "alpha_": StateField("float", low=0, low_open=True),
    }

    def __init__(self, alphas=None, cv: int | None = None, random_state: int = 0):
        self.alphas = alphas
        self.cv = cv
        self.random_state = random_state

    def _check_params(self) -> None:
        """Check ``alphas`` and ``cv`` (``ConfigError`` naming the value and the allowed ones)."""
        super()._check_params()
        check_alphas(self.alphas)
        if self.cv is not None and (isinstance(self.cv, bool) or not isinstance(self.cv, (int, np.integer))
                                    or self.cv < 2):
            raise ConfigError(f"cv={self.cv!r} is not allowed; allowed: None (efficient leave-one-out) or an integer >= 2")

    def fit(self, X, Y) -> "RidgeDecoder":
        """Fit the scaler and the ridge on the training rows."""
        self._check_params()
        X, Y = self._validate_fit_input(X, Y)
        alphas = default_alphas() if self.alphas is None else np.asarray(self.alphas, dtype=float)
        self.output_shape_ = tuple(Y.shape[1:])
        if uses_lean_path(np.shape(X), self.cv):
            # large data (NSD size): no float64 copy of X; the scaler is fitted by column blocks and the
            # z-scores are formed block by block inside the solver (docs/scale.md, "NSD-size data")
            self.scaler_ = fit_signal_scaler_lean(X)
            self.ridge_ = fit_ridge_gcv_lean(X, Y.reshape(len(Y), -1), alphas, transform=self.scaler_.transform)
        else:
            Y = Y.astype(np.float64)
            self.scaler_ = SignalScaler().fit(X)
            self.ridge_ = fit_ridge_cv(self.scaler_.transform(X).astype(np.float64), Y.reshape(len(Y), -1), alphas,
                                       self.cv)
        self.alpha_ = float(self.ridge_.alpha_)
        if self.alpha_ in (alphas.min(), alphas.max()):
            logger.warning("ridge penalty %.3g lies at the edge of the grid [%.3g, %.3g]", self.alpha_, alphas.min(), alphas.max())
        return self

    def predict(self, X) -> np.ndarray:
        """Reconstructions, shape (n, *output_shape), clipped to [0, 1]."""
        check_is_fitted(self, "ridge_")
        X = self._validate_X(X, reset=False)
        P = self.ridge_.predict(self.scaler_.transform(X).astype(np.float64))
        return np.clip(P, 0.0, 1.0).reshape((len(X),) + self.output_shape_).astype(np.float32)


# ---------------------------------------------------------------- registration
def _ridge_factory(seed: int, dataset_name: str, n_train: int, *, fast: bool = False, **options) -> RidgeDecoder:
    return RidgeDecoder(random_state=seed, **options)


register_method(
    "ridge", _ridge_factory, estimator=RidgeDecoder, label="ridge",
    description="ridge from z-scored signal to pixels, penalty by inner leave-one-out CV",
    sklearn_xfail={"check_regressors_train": CLIPPED, "check_regressor_multioutput": FLOAT32},
)
