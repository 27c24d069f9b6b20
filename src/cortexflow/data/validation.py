"""Validation of signal and stimulus arrays, with messages that name the problem."""

from __future__ import annotations

import numpy as np

from cortexflow.exceptions import DataValidationError

__all__ = ["validate_signals", "validate_stimuli", "check_same_rows", "N_PIXELS", "IMAGE_SHAPE"]

IMAGE_SHAPE = (28, 28)
N_PIXELS = IMAGE_SHAPE[0] * IMAGE_SHAPE[1]

#: How to accept a degenerate signal anyway; names only options that exist (format tests only: no
#: command trains on such a signal, ``cortexflow datasets info --allow-degenerate`` describes it).
_DEGENERATE_HINT = (
    " (for format tests only: load_dataset(..., allow_degenerate=True) in Python; on the command line "
    "`cortexflow datasets info NAME --allow-degenerate` describes such a file, and no command trains on it)"
)


def _as_numeric(arr, source: str, key: str) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise DataValidationError(
            f"{source}: key {key!r} holds non-numeric data of dtype {arr.dtype}; expected a numeric array"
        )
    return arr


def _check_finite(arr: np.ndarray, source: str, key: str) -> None:
    if np.issubdtype(arr.dtype, np.floating) and not np.all(np.isfinite(arr)):
        bad = np.argwhere(~np.isfinite(arr))
        r, c = (int(v) for v in bad[0]) if arr.ndim == 2 else (int(bad[0][0]), 0)
        raise DataValidationError(
            f"{source}: key {key!r} contains {len(bad)} NaN or Inf value(s); first at row {r}, column {c} "
            f"(value {arr[r, c] if arr.ndim == 2 else arr.flat[r]!r})"
        )


def validate_signals(
    X,
    *,
    source: str = "<array>",
    key: str = "X",
    n_features: int | None = None,
    allow_degenerate: bool = False,
) -> np.ndarray:
    """Check a (n_samples, n_features) signal matrix and return it as float32.

    Parameters
    ----------
    X : array-like
        Brain signals, one row per trial.
    source, key : str
        Named in error messages (file path and variable name).
    n_features : int, optional
        Required number of columns.
    allow_degenerate : bool
        Accept a matrix whose rows are all identical, or whose rows are each
        constant (useful only for format tests).

    Raises
    ------
    DataValidationError
        Non-numeric data, wrong number of dimensions or columns, NaN/Inf, or a
        degenerate signal.
    """
    X = _as_numeric(X, source, key)
    if X.ndim != 2:
        raise DataValidationError(f"{source}: key {key!r} has shape {X.shape}; expected 2-D (n_samples, n_features)")
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise DataValidationError(f"{source}: key {key!r} is empty (shape {X.shape})")
    if n_features is not None and X.shape[1] != n_features:
        raise DataValidationError(
            f"{source}: key {key!r} has {X.shape[1]} features per row; expected {n_features}"
        )
    _check_finite(X, source, key)
    X = X.astype(np.float32, copy=False)
    if not allow_degenerate:
        row_range = X.max(axis=1) - X.min(axis=1)
        const_rows = np.flatnonzero(row_range == 0)
        if const_rows.size:
            raise DataValidationError(
                f"{source}: key {key!r} has {const_rows.size} constant row(s) (every feature equal), first at "
                f"row {int(const_rows[0])} with value {float(X[const_rows[0], 0])!r}; such a signal carries no "
                "information" + _DEGENERATE_HINT
            )
        if X.shape[0] > 1 and np.all(X == X[0]):
            raise DataValidationError(
                f"{source}: key {key!r}: all {X.shape[0]} rows are identical, so the signal carries no "
                "information about the stimulus" + _DEGENERATE_HINT
            )
    return X


def validate_stimuli(
    Y,
    *,
    source: str = "<array>",
    key: str = "Y",
    scale: float | None = None,
    pixel_order: str = "C",
) -> np.ndarray:
    """Check stimuli and return float32 images of shape (n, 28, 28) in [0, 1].

    Parameters
    ----------
    Y : array-like
        Either (n, 784) rows or (n, 28, 28) images.
    scale : float, optional
        The value that stands for white. ``None`` infers it: 255 if the data
        exceed 1, else 1.
    pixel_order : {"C", "F"}
        Memory order of rows of 784 values; ``"F"`` is column-major (MATLAB).
    """
    if pixel_order not in ("C", "F"):
        raise DataValidationError(f"{source}: pixel_order {pixel_order!r} is not one of 'C', 'F'")
    Y = _as_numeric(Y, source, key)
    if Y.ndim == 3:
        if Y.shape[1:] != IMAGE_SHAPE:
            raise DataValidationError(f"{source}: key {key!r} has images of shape {Y.shape[1:]}; expected {IMAGE_SHAPE}")
        Y = Y.reshape(len(Y), N_PIXELS, order=pixel_order)
    if Y.ndim != 2:
        raise DataValidationError(f"{source}: key {key!r} has shape {Y.shape}; expected (n, {N_PIXELS}) or (n, 28, 28)")
    if Y.shape[1] != N_PIXELS:
        raise DataValidationError(
            f"{source}: key {key!r} has {Y.shape[1]} pixels per row; expected {N_PIXELS} (28 x 28)"
        )
    _check_finite(Y, source, key)
    Y = Y.astype(np.float32)
    if scale is None:
        scale = 255.0 if Y.max(initial=0) > 1.0 else 1.0
    if Y.min(initial=0) < 0 or Y.max(initial=0) > scale:
        raise DataValidationError(
            f"{source}: key {key!r} has values in [{Y.min()}, {Y.max()}]; expected [0, {scale}]"
        )
    Y = Y / np.float32(scale)
    return Y.reshape(len(Y), 28, 28, order=pixel_order).astype(np.float32, copy=False)


def check_same_rows(a: np.ndarray, b: np.ndarray, *, source: str, key_a: str, key_b: str) -> None:
    """Raise if ``a`` and ``b`` have different numbers of rows."""
    if len(a) != len(b):
        raise DataValidationError(
            f"{source}: key {key_a!r} has {len(a)} rows but key {key_b!r} has {len(b)}; they must match"
        )
