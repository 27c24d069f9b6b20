"""Stimulus images from files (PNG, JPEG, ... via Pillow), resized to a declared size.

Every image is read, converted to the declared colour (``"grayscale"``: one
channel, ``"rgb"``: three) and, when its size differs, resized with the
declared filter. A folder whose images mix grayscale and colour files is
refused unless the colour is declared (then every image is converted).
8-bit values ``v`` become ``v / 255`` as float32, exactly as the ``.mat``
loaders turn 0..255 stimuli into [0, 1].
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from cortexflow.data.readers._optional import require
from cortexflow.exceptions import DataValidationError

__all__ = ["IMAGE_SUFFIXES", "MAX_IMAGE_SIZE", "MIN_IMAGE_SIZE", "COLORS", "RESAMPLE_FILTERS", "read_image_files",
           "check_image_size"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp")
MAX_IMAGE_SIZE = 256
MIN_IMAGE_SIZE = 8
COLORS = ("grayscale", "rgb")
RESAMPLE_FILTERS = ("lanczos", "bilinear", "bicubic", "box", "nearest")
_GRAY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"}


def check_image_size(size: Sequence[int], source: str) -> tuple[int, int]:
    """``(height, width)`` from a declared size, each in [MIN_IMAGE_SIZE, MAX_IMAGE_SIZE]."""
    try:
        h, w = (int(v) for v in size)
    except (TypeError, ValueError):
        raise DataValidationError(f"{source}: size {size!r} must be [height, width], two integers") from None
    for v in (h, w):
        if not MIN_IMAGE_SIZE <= v <= MAX_IMAGE_SIZE:
            raise DataValidationError(
                f"{source}: image size {h}x{w} is outside {MIN_IMAGE_SIZE}..{MAX_IMAGE_SIZE} px per side; declare a "
                f"size within it (images are resized to it)"
            )
    return h, w


def _mode_kind(img) -> str:
    if img.mode == "P":
        pal = img.convert("RGB")
        a = np.asarray(pal)
        return "grayscale" if np.array_equal(a[..., 0], a[..., 1]) and np.array_equal(a[..., 1], a[..., 2]) else "rgb"
    return "grayscale" if img.mode in _GRAY_MODES else "rgb"


def read_image_files(
    paths: Sequence[str | os.PathLike],
    *,
    size: Sequence[int] | None = None,
    color: str | None = None,
    resample: str = "lanczos",
    source: str = "<images>",
) -> np.ndarray:
    """Read image files into one float32 array in [0, 1].

    Parameters
    ----------
    paths : sequence of path-like
        The files, in the order of the result's rows.
    size : (height, width), optional
        Declared size; every image is resized to it. By default the first
        image's size, and every other image must have it.
    color : {"grayscale", "rgb"}, optional
        Declared colour; by default that of the files (which must agree).
    resample : {"lanczos", "bilinear", "bicubic", "box", "nearest"}
        Filter of the resizing.
    source : str
        Named in errors (the spec file).

    Returns
    -------
    ndarray of float32
        (n, H, W) for grayscale, (n, H, W, 3) for RGB.

    Raises
    ------
    DataValidationError
        A missing or unreadable file, a size above 256 px (or below 8),
        grayscale and colour files mixed without a declared colour, sizes that
        differ without a declared size, or an unknown colour or filter.
    """
    Image = require("PIL.Image", f"reading the stimulus images of {source}")
    if color is not None and color not in COLORS:
        raise DataValidationError(f"{source}: color {color!r}; allowed: {', '.join(COLORS)}")
    if resample not in RESAMPLE_FILTERS:
        raise DataValidationError(f"{source}: resample {resample!r}; allowed: {', '.join(RESAMPLE_FILTERS)}")
    if not paths:
        raise DataValidationError(f"{source}: no stimulus image to read")
    hw = check_image_size(size, source) if size is not None else None
    filt = getattr(Image.Resampling, resample.upper())
    out = None
    first_kind = None
    for i, p in enumerate(paths):
        p = Path(p)
        if not p.is_file():
            raise DataValidationError(f"{source}: stimulus image {p} does not exist")
        try:
            with Image.open(p) as img:
                img.load()
                kind = _mode_kind(img)
                if first_kind is None:
                    first_kind = kind
                elif color is None and kind != first_kind:
                    raise DataValidationError(
                        f"{source}: {p} is {kind} but {Path(paths[0]).name} is {first_kind}; grayscale and RGB "
                        f"images are mixed: declare color = \"grayscale\" or \"rgb\" in [stimuli] to convert them all"
                    )
                want = color or first_kind
                if hw is None:
                    if max(img.size) > MAX_IMAGE_SIZE or min(img.size) < MIN_IMAGE_SIZE:
                        raise DataValidationError(
                            f"{source}: {p} is {img.size[1]}x{img.size[0]} px; images must be {MIN_IMAGE_SIZE}.."
                            f"{MAX_IMAGE_SIZE} px per side: declare size = [height, width] in [stimuli] to resize them"
                        )
                    hw = (img.size[1], img.size[0])
                conv = img.convert("L" if want == "grayscale" else "RGB") if img.mode not in ("I", "I;16", "F") \
                    else img
                if (conv.size[1], conv.size[0]) != hw:
                    if size is None:
                        raise DataValidationError(
                            f"{source}: {p} is {conv.size[1]}x{conv.size[0]} px but {Path(paths[0]).name} is "
                            f"{hw[0]}x{hw[1]}; declare size = [height, width] in [stimuli] to resize them all"
                        )
                    conv = conv.resize((hw[1], hw[0]), filt)
                arr = np.asarray(conv)
        except DataValidationError:
            raise
        except Exception as exc:  # PIL raises UnidentifiedImageError, OSError, ValueError, SyntaxError
            raise DataValidationError(f"{source}: cannot read image {p} ({type(exc).__name__}: {exc})") from exc
        if arr.dtype == np.uint8:
            vals = arr.astype(np.float32) / np.float32(255)
        elif arr.dtype.kind in "iu":  # 16-bit grayscale
            vals = arr.astype(np.float32) / np.float32(65535)
        else:
            vals = np.clip(arr.astype(np.float32), 0, 1)
        if out is None:
            out = np.empty((len(paths),) + vals.shape, dtype=np.float32)
        out[i] = vals
    return out
