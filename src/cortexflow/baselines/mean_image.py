"""``mean-image``: predict the mean training image for every signal (the floor)."""

from __future__ import annotations

import numpy as np
from sklearn.utils.validation import check_is_fitted

from cortexflow.models.base import COMMON_STATE, BaseDecoder
from cortexflow.models.checkpoint import StateField
from cortexflow.registry.methods import register_method
from cortexflow.registry.sklearn_notes import FLOAT32

__all__ = ["MeanImageDecoder"]


class MeanImageDecoder(BaseDecoder):
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
    mean_image_ : ndarray, shape of one training image ((H, W) or (H, W, C))
    n_features_in_ : int
    """

    checkpoint_kind = "mean-image"
    checkpoint_schema = {**COMMON_STATE, "mean_image_": StateField("array", shape=("*image",))}

    def __init__(self, random_state: int = 0):
        self.random_state = random_state

    def fit(self, X, Y) -> "MeanImageDecoder":
        """Store the mean of ``Y`` (and the number of signal features)."""
        X, Y = self._validate_fit_input(X, Y)
        Y = Y.astype(np.float64)
        self.mean_image_ = Y.mean(axis=0).astype(np.float32)
        return self

    def predict(self, X) -> np.ndarray:
        """The mean training image, once per row of ``X``."""
        check_is_fitted(self, "mean_image_")
        X = self._validate_X(X, reset=False)
        return np.repeat(self.mean_image_[None], len(X), axis=0)


# ---------------------------------------------------------------- registration
def _mean_image_factory(seed: int, dataset_name: str, n_train: int, *, fast: bool = False) -> MeanImageDecoder:
    return MeanImageDecoder(random_state=seed)


register_method(
    "mean-image", _mean_image_factory, estimator=MeanImageDecoder, options=(), label="mean image",
    description="mean training image for every signal (the floor)",
    sklearn_xfail={"check_regressors_train": "the mean image ignores the signal by design (it is the floor), so "
                                             "R^2 is 0", "check_regressor_multioutput": FLOAT32},
)
