"""Validation of signal and stimulus arrays, with messages that name the problem."""

from __future__ import annotations

import math

import numpy as np

from cortexflow.exceptions import DataValidationError

__all__ = [
    "validate_signals",
    "validate_stimuli",
    "infer_stimulus_scale",
    "check_same_rows",
    "check_orientation",
    "normalize_image_shape",
    "N_PIXELS",
    "IMAGE_SHAPE",
    "MIN_SIDE",
    "MAX_SIDE",
    "CHANNELS",
]

#: Image shape of the registered data sets' files (flat rows of 784 values); other shapes are accepted.
IMAGE_SHAPE = (28, 28)
N_PIXELS = IMAGE_SHAPE[0] * IMAGE_SHAPE[1]
#: Smallest and largest image height and width that the library supports (SSIM's smallest window is 7 px).
MIN_SIDE, MAX_SIDE = 8, 256
#: Allowed channel counts: 1 (grayscale) and 3 (RGB), channel-last.
CHANNELS = (1, 3)
_FLOAT32_MAX = float(np.finfo(np.float32).max)
# Whole-number stimuli are read as 8-bit images only when their brightest pixel is in the upper half of
# [0, 255]; a maximum of 2 or 17 is more likely another coding (labels, levels) than a dark 8-bit image.
_MIN_8BIT_MAX = 128

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
    if np.iscomplexobj(arr):
        raise DataValidationError(
            f"{source}: key {key!r} holds complex values (dtype {arr.dtype}); expected real numbers "
            "(take the magnitude or the real part yourself if that is what you mean)"
        )
    return arr


def _to_float32(arr: np.ndarray, source: str, key: str) -> np.ndarray:
    """Cast to float32, refusing finite values that the cast would turn into infinities."""
    if arr.dtype.kind == "f" and arr.dtype.itemsize > 4 and arr.size:
        big = np.abs(arr) > _FLOAT32_MAX
        if big.any():
            first = np.unravel_index(int(np.flatnonzero(big.ravel())[0]), arr.shape)
            raise DataValidationError(
                f"{source}: key {key!r} holds {int(big.sum())} value(s) too large for float32 (largest magnitude "
                f"{float(np.abs(arr).max()):.3g}, first at index {tuple(int(i) for i in first)}; float32 holds at "
                f"most {_FLOAT32_MAX:.3g}); rescale the data"
            )
    return arr.astype(np.float32, copy=False)


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
        Non-numeric or boolean data, wrong number of dimensions or columns
        (an array whose rows match ``n_features`` is named as transposed),
        NaN/Inf, or a degenerate signal.
    """
    X = _as_numeric(X, source, key)
    if X.dtype == bool:
        raise DataValidationError(
            f"{source}: key {key!r} holds boolean values (dtype bool, shape {X.shape}); brain signals must be "
            "numbers, one recording per row (convert a mask or spike raster to a number type yourself if that is "
            "what you mean)"
        )
    if X.ndim != 2:
        raise DataValidationError(
            f"{source}: key {key!r} has shape {X.shape}; expected 2-D (n_samples, n_features), one row per "
            f"trial, but it is {X.ndim}-D"
        )
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise DataValidationError(f"{source}: key {key!r} is empty (shape {X.shape})")
    if n_features is not None and X.shape[1] != n_features:
        hint = ""
        if X.shape[0] == n_features:
            hint = (f"; it looks transposed: its shape {X.shape} is (n_features, n_rows), so pass its transpose, "
                    f"shape {X.shape[::-1]} (one recording per row)")
        raise DataValidationError(
            f"{source}: key {key!r} has {X.shape[1]} features per row; expected {n_features}{hint}"
        )
    _check_finite(X, source, key)
    X = _to_float32(X, source, key)
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


def _check_side(shape: tuple[int, ...], source: str, key: str) -> None:
    h, w = shape[0], shape[1]
    if not (MIN_SIDE <= h <= MAX_SIDE and MIN_SIDE <= w <= MAX_SIDE):
        raise DataValidationError(
            f"{source}: key {key!r} has images of {h} x {w} pixels; height and width must each be between "
            f"{MIN_SIDE} and {MAX_SIDE}"
        )


def normalize_image_shape(image_shape, *, source: str = "<array>") -> tuple[int, ...]:
    """Check an ``image_shape`` argument and return it as ``(H, W)`` (grayscale) or ``(H, W, 3)`` (RGB).

    ``(H, W, 1)`` is the same as ``(H, W)``. H and W must lie in
    [:data:`MIN_SIDE`, :data:`MAX_SIDE`].

    Raises
    ------
    DataValidationError
        Not 2 or 3 positive whole numbers, a channel count other than 1 or 3,
        or a side outside the supported range.
    """
    try:
        shape = tuple(int(v) for v in image_shape)
        ok = all(float(v) == int(v) for v in image_shape) and len(shape) in (2, 3)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise DataValidationError(
            f"{source}: image_shape={image_shape!r} is not (H, W) or (H, W, C) with whole numbers"
        )
    if len(shape) == 3:
        if shape[2] not in CHANNELS:
            raise DataValidationError(
                f"{source}: image_shape={image_shape!r} has {shape[2]} channels; expected 1 (grayscale) or 3 (RGB)"
            )
        if shape[2] == 1:
            shape = shape[:2]
    _check_side(shape, source, "image_shape")
    return shape


def _images_to_channel_last(Y: np.ndarray, source: str, key: str) -> np.ndarray:
    """(n, H, W, C) or channel-first (n, C, H, W) with C in {1, 3} -> (n, H, W) or (n, H, W, 3)."""
    if Y.shape[-1] in CHANNELS:
        out = Y
    elif Y.shape[1] in CHANNELS:  # channel-first (PyTorch layout): move the channels last
        out = np.moveaxis(Y, 1, -1)
    else:
        raise DataValidationError(
            f"{source}: key {key!r} has shape {Y.shape}; a 4-D stimulus array must be (n, H, W, C) or "
            f"(n, C, H, W) with C = 1 (grayscale) or 3 (RGB), but neither axis 1 ({Y.shape[1]}) nor axis 3 "
            f"({Y.shape[3]}) is 1 or 3"
        )
    return out[..., 0] if out.shape[-1] == 1 else out


def validate_stimuli(
    Y,
    *,
    source: str = "<array>",
    key: str = "Y",
    scale: float | None = None,
    pixel_order: str = "C",
    image_shape: tuple[int, ...] | None = None,
) -> np.ndarray:
    """Check stimuli and return float32 images in [0, 1].

    Grayscale images come back as (n, H, W), RGB images as (n, H, W, 3)
    (channel-last); H and W lie in [:data:`MIN_SIDE`, :data:`MAX_SIDE`].

    Parameters
    ----------
    Y : array-like
        One of

        * (n, H, W): grayscale images;
        * (n, H, W, C) with C = 1 or 3: channel-last images (C = 1 is
          returned as (n, H, W));
        * (n, C, H, W) with C = 1 or 3: channel-first images (the PyTorch
          layout), converted to channel-last;
        * (n, P): flat rows of P values; they need an image shape, from
          ``image_shape`` or, without it, a square grayscale image of side
          sqrt(P) (P = 784 gives 28 x 28).
    scale : float, optional
        The value that stands for white; a finite number > 0. ``None`` infers
        it with :func:`infer_stimulus_scale` and refuses ranges it cannot
        explain.
    pixel_order : {"C", "F"}
        Memory order of flat rows; ``"F"`` is column-major (MATLAB: a row is
        an (H, W) or (H, W, C) array stored column by column). Not used for
        arrays that are already images.
    image_shape : tuple of int, optional
        ``(H, W)`` or ``(H, W, C)`` of one image: how flat rows are shaped,
        and, for image arrays, the shape they must have.

    Raises
    ------
    DataValidationError
        Wrong shape (sides outside [8, 256], a channel count other than 1 or
        3, flat rows that fit no image shape), NaN/Inf, complex values, an
        invalid ``scale``, values outside ``[0, scale]``, or a range whose
        scale cannot be inferred.
    """
    if pixel_order not in ("C", "F"):
        raise DataValidationError(f"{source}: pixel_order {pixel_order!r} is not one of 'C', 'F'")
    wanted = None if image_shape is None else normalize_image_shape(image_shape, source=source)
    Y = _as_numeric(Y, source, key)
    if Y.ndim in (3, 4):
        if Y.ndim == 4:
            Y = _images_to_channel_last(Y, source, key)
        shape = tuple(int(v) for v in Y.shape[1:])
        _check_side(shape, source, key)
        if wanted is not None and shape != wanted:
            raise DataValidationError(
                f"{source}: key {key!r} has images of shape {shape}; expected {wanted} (image_shape)"
            )
        Y = Y.reshape(len(Y), -1)
        order = "C"
    elif Y.ndim == 2:
        n_pix = int(Y.shape[1])
        if wanted is not None:
            shape = wanted
            if math.prod(shape) != n_pix:
                raise DataValidationError(
                    f"{source}: key {key!r} has {n_pix} pixels per row; expected {math.prod(shape)} "
                    f"({' x '.join(str(v) for v in shape)}, image_shape={shape})"
                )
        else:
            side = math.isqrt(n_pix)
            if side * side != n_pix:
                raise DataValidationError(
                    f"{source}: key {key!r} has {n_pix} pixels per row, which is not a square grayscale image "
                    f"(784 = 28 x 28 is); pass image_shape=(H, W) or (H, W, 3) to say how a row is shaped"
                )
            shape = (side, side)
            _check_side(shape, source, key)
        order = pixel_order
    else:
        raise DataValidationError(
            f"{source}: key {key!r} has shape {Y.shape}; expected (n, P) flat rows, (n, H, W), (n, H, W, C) "
            "or (n, C, H, W) with C = 1 or 3"
        )
    _check_finite(Y, source, key)
    if scale is None:
        scale = infer_stimulus_scale(Y, source=source, key=key)
    elif isinstance(scale, bool) or not isinstance(scale, (int, float, np.integer, np.floating)) \
            or not math.isfinite(scale) or scale <= 0:
        raise DataValidationError(
            f"{source}: stimulus_scale={scale!r} is not a finite number > 0 (the value that stands for white, "
            "e.g. 1 or 255)"
        )
    lo, hi = (float(Y.min()), float(Y.max())) if Y.size else (0.0, 0.0)
    if lo < 0 or hi > scale:
        raise DataValidationError(
            f"{source}: key {key!r} has values in [{lo:g}, {hi:g}]; expected [0, {float(scale):g}] "
            f"(stimulus_scale={float(scale):g})"
        )
    Y = _to_float32(Y, source, key) / np.float32(scale)
    return Y.reshape((len(Y),) + shape, order=order).astype(np.float32, copy=False)


def infer_stimulus_scale(Y, *, source: str = "<array>", key: str = "Y") -> float:
    """The value that stands for white, decided from the data type and the range.

    * booleans, and numbers up to 1: 1;
    * whole numbers (integer dtype, or floats holding whole numbers) whose
      maximum is in [128, 255]: 255 (8-bit images);
    * anything else (fractions above 1, whole numbers above 255 or with a
      small maximum such as [0, 2]) is refused: the scale is
      ambiguous, and a wrong guess would silently darken or saturate every
      image.

    Raises
    ------
    DataValidationError
        When the range cannot be explained; the message asks for an explicit
        ``stimulus_scale``.
    """
    Y = np.asarray(Y)
    if Y.dtype == bool or Y.size == 0:
        return 1.0
    lo, hi = float(Y.min()), float(Y.max())
    if hi <= 1:
        return 1.0  # negative values are refused by the caller's range check, naming [0, 1]
    whole = np.issubdtype(Y.dtype, np.integer) or bool(np.all(np.mod(Y, 1) == 0))
    if whole and _MIN_8BIT_MAX <= hi <= 255:
        return 255.0
    if not whole:
        why = "fractional values above 1 fit neither [0, 1] images nor 8-bit [0, 255] images"
    elif hi > 255:
        why = "whole numbers above 255 are not 8-bit images"
    else:
        why = f"a maximum of {hi:g} is too small for an 8-bit image and too large for a [0, 1] image"
    raise DataValidationError(
        f"{source}: key {key!r} (dtype {Y.dtype}) has values in [{lo:g}, {hi:g}]; cannot tell which value stands "
        f"for white ({why}); rescale the stimuli to [0, 1] or pass stimulus_scale explicitly"
    )


def check_orientation(X, n_rows: int, *, source: str, key: str, rows_key: str) -> None:
    """Refuse a 2-D signal array that looks transposed: ``n_rows`` columns but not ``n_rows`` rows.

    Parameters
    ----------
    X : array-like
        The signal array as read (before :func:`validate_signals`).
    n_rows : int
        The number of rows it must have (the row count of ``rows_key``, its stimuli).
    source, key, rows_key : str
        Named in the message (file, signal key, stimulus key).

    Raises
    ------
    DataValidationError
        ``X`` is (n_features, n_rows) instead of (n_rows, n_features).
    """
    shape = np.shape(X)
    if len(shape) == 2 and shape[0] != n_rows and shape[1] == n_rows:
        raise DataValidationError(
            f"{source}: key {key!r} has shape {shape} but key {rows_key!r} has {n_rows} rows; it looks transposed "
            f"(shape (n_features, n_rows)): store its transpose, shape {shape[::-1]}, one recording per row"
        )


def check_same_rows(a: np.ndarray, b: np.ndarray, *, source: str, key_a: str, key_b: str) -> None:
    """Raise if ``a`` and ``b`` have different numbers of rows."""
    if len(a) != len(b):
        raise DataValidationError(
            f"{source}: key {key_a!r} has {len(a)} rows but key {key_b!r} has {len(b)}; they must match"
        )
