"""Leak-proof preprocessing: transformers fitted on training rows only.

Both transformers follow scikit-learn's contract and expose ``get_state`` /
``from_state`` so that their fitted statistics travel with a checkpoint as JSON.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted, validate_data

__all__ = ["SignalScaler", "ImageScaler"]


class SignalScaler(TransformerMixin, BaseEstimator):
    """Z-score each signal feature with training mean and standard deviation.

    Features with zero training variance get a scale of 1 (they become 0).

    Parameters
    ----------
    with_mean, with_std : bool
        Centre and/or scale.
    clip : float or None
        Clip the z-scores to ``[-clip, clip]`` after scaling.
    """

    def __init__(self, with_mean: bool = True, with_std: bool = True, clip: float | None = None):
        self.with_mean = with_mean
        self.with_std = with_std
        self.clip = clip

    def fit(self, X, y=None):
        X = validate_data(self, X, dtype=np.float64, reset=True)
        self.mean_ = X.mean(axis=0) if self.with_mean else np.zeros(X.shape[1])
        std = X.std(axis=0) if self.with_std else np.ones(X.shape[1])
        self.scale_ = np.where(std > 0, std, 1.0)
        return self

    def transform(self, X):
        check_is_fitted(self, "mean_")
        X = validate_data(self, X, dtype=np.float64, reset=False)
        Z = (X - self.mean_) / self.scale_
        if self.clip is not None:
            Z = np.clip(Z, -self.clip, self.clip)
        return Z.astype(np.float32)

    def inverse_transform(self, X):
        check_is_fitted(self, "mean_")
        return (np.asarray(X, dtype=np.float64) * self.scale_ + self.mean_).astype(np.float32)

    def get_state(self) -> dict[str, Any]:
        """Parameters and fitted statistics as JSON-serialisable lists."""
        check_is_fitted(self, "mean_")
        return {"params": self.get_params(), "mean_": self.mean_.tolist(), "scale_": self.scale_.tolist()}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "SignalScaler":
        """Rebuild a fitted scaler from :meth:`get_state` output."""
        obj = cls(**state["params"])
        obj.mean_ = np.asarray(state["mean_"], dtype=np.float64)
        obj.scale_ = np.asarray(state["scale_"], dtype=np.float64)
        obj.n_features_in_ = len(obj.mean_)
        return obj


class ImageScaler(TransformerMixin, BaseEstimator):
    """Min-max scale flattened target images into [0, 1] with training statistics.

    Input is images of any shape, (n, H, W) or (n, H, W, C), or flat rows
    (n, P); output of ``transform`` is (n, P), each image flattened in C
    order. ``inverse_transform`` returns the image shape seen by ``fit``
    (``image_shape_``); after a fit on flat rows, or for a scaler restored
    from an older state without ``image_shape_``, square sizes come back as
    (n, side, side) and other sizes flat, (n, P). The range is global (one
    min and one max for all pixels and channels), so image contrast is
    preserved.

    Attributes
    ----------
    n_pixels_ : int
        Values per image (H x W x C).
    image_shape_ : tuple of int or None
        Shape of one image given to ``fit``; None after a fit on flat rows.
    data_min_, data_max_, data_range_ : float
    """

    def fit(self, Y, y=None):
        Y = np.asarray(Y, dtype=np.float64)
        self.image_shape_ = tuple(int(v) for v in Y.shape[1:]) if Y.ndim > 2 else None
        Y = Y.reshape(len(Y), -1)
        self.n_pixels_ = Y.shape[1]
        self.data_min_ = float(Y.min())
        self.data_max_ = float(Y.max())
        rng = self.data_max_ - self.data_min_
        self.data_range_ = rng if rng > 0 else 1.0
        return self

    def transform(self, Y):
        check_is_fitted(self, "data_min_")
        Y = np.asarray(Y, dtype=np.float64).reshape(len(Y), -1)
        if Y.shape[1] != self.n_pixels_:
            raise ValueError(f"ImageScaler was fitted on {self.n_pixels_} pixels per image; got {Y.shape[1]}")
        return ((Y - self.data_min_) / self.data_range_).astype(np.float32)

    def inverse_transform(self, Z):
        check_is_fitted(self, "data_min_")
        Z = np.asarray(Z, dtype=np.float64).reshape(len(Z), -1)
        out = Z * self.data_range_ + self.data_min_
        shape = getattr(self, "image_shape_", None)
        if shape is not None and int(np.prod(shape)) == self.n_pixels_:
            return out.reshape((len(Z),) + tuple(shape)).astype(np.float32)
        side = int(round(np.sqrt(self.n_pixels_)))
        if side * side != self.n_pixels_:  # not a square image: keep the flat (n, n_pixels) layout
            return out.astype(np.float32)
        return out.reshape(len(Z), side, side).astype(np.float32)

    def get_state(self) -> dict[str, Any]:
        """Fitted statistics as a JSON-serialisable dict."""
        check_is_fitted(self, "data_min_")
        state = {"n_pixels_": self.n_pixels_, "data_min_": self.data_min_, "data_max_": self.data_max_}
        if getattr(self, "image_shape_", None) is not None:
            state["image_shape_"] = list(self.image_shape_)
        return state

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "ImageScaler":
        """Rebuild a fitted scaler from :meth:`get_state` output."""
        obj = cls()
        obj.n_pixels_ = int(state["n_pixels_"])
        obj.data_min_ = float(state["data_min_"])
        obj.data_max_ = float(state["data_max_"])
        shape = state.get("image_shape_")
        obj.image_shape_ = None if shape is None else tuple(int(v) for v in shape)
        rng = obj.data_max_ - obj.data_min_
        obj.data_range_ = rng if rng > 0 else 1.0
        return obj
