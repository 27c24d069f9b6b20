"""``mean-image``: predict the mean training image for every signal (the floor)."""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils.validation import check_is_fitted

from cortexflow.baselines._common import check_training_rows
from cortexflow.exceptions import DataValidationError

__all__ = ["MeanImageDecoder"]


class MeanImageDecoder(RegressorMixin, BaseEstimator):
    """Predicts the pixel-wise mean of the training images, whatever the signal.

    Every method must beat it; its Pearson correlation with the stimuli and
    its two-way identification (0.5, chance) show what a method gets for free.

    Parameters
    ----------
    random_state : int
        Unused (the method is deterministic); kept so that every benchmark
        method takes the same arguments.

    Attributes
    ----------
    mean_image_ : ndarray, shape (28, 28)
    n_features_in_ : int
    """

    def __init__(self, random_state: int = 0):
        self.random_state = random_state

    def fit(self, X, Y) -> "MeanImageDecoder":
        """Store the mean of ``Y`` (and the number of signal features)."""
        X, Y = check_training_rows(X, Y, min_rows=1, name="MeanImageDecoder", dtype=np.float64)
        self.n_features_in_ = X.shape[1]
        self.mean_image_ = Y.mean(axis=0).astype(np.float32)
        return self

    def predict(self, X) -> np.ndarray:
        """The mean training image, once per row of ``X``."""
        check_is_fitted(self, "mean_image_")
        X = np.asarray(X)
        if X.ndim != 2 or X.shape[1] != self.n_features_in_:
            raise DataValidationError(f"X has shape {X.shape}; expected (n, {self.n_features_in_})")
        return np.repeat(self.mean_image_[None], len(X), axis=0)
