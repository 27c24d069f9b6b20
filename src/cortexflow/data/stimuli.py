"""Stimulus targets: the 28x28 image that each class label of an EEG dataset stands for.

MindBigData's labels are digits and Crell's are letters; what the person saw
was a glyph, so the reconstruction target of a trial is the image of its
class. CortexFlow cannot ship the template images of the translated files, so
it renders its own with DejaVu Sans Bold, the font that matplotlib installs
(white glyph on black, fitted into a 20x20 box centred in 28x28 like MNIST),
or reads a user's folder of images named after the classes (``0.png`` ..
``9.png``, ``a.png`` .. ``v.png``), the layout of the translated files' own
stimulus folders.

:func:`recover_grid` and :func:`upscale_grid` (from :mod:`cortexflow.data.grids`)
turn stimuli that are nearest-neighbour upscalings of a coarse grid (miyawaki's
10 x 10 patterns stored at 28 x 28) back into the grid, exactly.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import matplotlib
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from cortexflow.data.eeg.crell import CRELL_LETTERS
from cortexflow.data.eeg.epochs import targets_for_labels
from cortexflow.data.eeg.mindbigdata import DIGIT_CLASSES
from cortexflow.data.grids import grid_index, recover_grid, upscale_grid
from cortexflow.exceptions import DataValidationError

__all__ = [
    "DIGIT_CLASSES",
    "CRELL_LETTERS",
    "IMAGE_EXTENSIONS",
    "font_path",
    "render_glyphs",
    "load_stimulus_folder",
    "class_images",
    "targets_for_labels",
    "grid_index",
    "upscale_grid",
    "recover_grid",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff")
_FONT_FILES = {"regular": "DejaVuSans.ttf", "bold": "DejaVuSans-Bold.ttf"}


def font_path(weight: str = "bold") -> Path:
    """Path of the DejaVu Sans font file that matplotlib ships."""
    if weight not in _FONT_FILES:
        raise DataValidationError(f"weight={weight!r} is not one of {sorted(_FONT_FILES)}")
    p = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / _FONT_FILES[weight]
    if not p.is_file():  # pragma: no cover - matplotlib always ships it
        raise FileNotFoundError(f"matplotlib's font file {p} is missing")
    return p


def _fit_box(img: np.ndarray, size: int, box: int) -> np.ndarray:
    """Crop to the ink, scale the longer side to ``box`` and centre in ``size`` x ``size``."""
    ys, xs = np.nonzero(img > 0)
    if len(ys) == 0:
        return np.zeros((size, size), dtype=np.float32)
    crop = img[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    h, w = crop.shape
    scale = box / max(h, w)
    nh, nw = max(1, int(round(h * scale))), max(1, int(round(w * scale)))
    small = Image.fromarray(crop.astype(np.uint8)).resize((nw, nh), Image.Resampling.LANCZOS)
    out = np.zeros((size, size), dtype=np.float32)
    top, left = (size - nh) // 2, (size - nw) // 2
    out[top : top + nh, left : left + nw] = np.asarray(small, dtype=np.float32) / 255.0
    return np.clip(out, 0.0, 1.0)


def render_glyphs(
    names: Sequence[str],
    *,
    size: int = 28,
    box: int = 20,
    weight: str = "bold",
    font: str | os.PathLike | None = None,
) -> np.ndarray:
    """Render each class name (one character) as a white glyph on black.

    Parameters
    ----------
    names : sequence of str
        Single characters, e.g. :data:`DIGIT_CLASSES` or :data:`CRELL_LETTERS`.
    size : int
        Side of the output images.
    box : int
        The glyph's longer side after fitting (20 of 28, as in MNIST).
    weight : {"bold", "regular"}
        Which DejaVu Sans file to use.
    font : path-like, optional
        Any TrueType/OpenType file instead of DejaVu Sans.

    Returns
    -------
    ndarray of float32, shape (n, size, size), values in [0, 1]
    """
    if not 1 <= box <= size:
        raise DataValidationError(f"box={box} must be between 1 and size={size}")
    ttf = ImageFont.truetype(str(font or font_path(weight)), 200)
    out = []
    for name in names:
        name = str(name)
        if len(name) != 1:
            raise DataValidationError(f"class name {name!r} is not a single character; render_glyphs draws one glyph per class")
        canvas = Image.new("L", (320, 320), 0)
        ImageDraw.Draw(canvas).text((60, 30), name, fill=255, font=ttf)
        out.append(_fit_box(np.asarray(canvas), size, box))
    return np.stack(out).astype(np.float32)


def _read_image(path: Path, size: int) -> np.ndarray:
    try:
        with Image.open(path) as im:
            im = im.convert("L")
            if im.size != (size, size):
                im = im.resize((size, size), Image.Resampling.LANCZOS)
            return np.asarray(im, dtype=np.float32) / 255.0
    except OSError as exc:
        raise DataValidationError(f"{path}: cannot be read as an image ({exc})") from exc


def load_stimulus_folder(
    folder: str | os.PathLike,
    class_names: Sequence[str] | None = None,
    *,
    size: int = 28,
    invert: bool | str = "auto",
) -> tuple[np.ndarray, tuple[str, ...]]:
    """Read one image per class from ``folder``, named ``<class>.<ext>``.

    Parameters
    ----------
    folder : path-like
        E.g. a folder holding ``0.jpg`` .. ``9.jpg`` or ``a.png`` .. ``v.png``.
    class_names : sequence of str, optional
        Classes to read, in this order; every one must have a file. By
        default every image file in the folder, sorted by name.
    size : int
        Images are converted to grayscale and resized to ``size`` x ``size``.
    invert : bool or "auto"
        Make glyphs white on black: ``"auto"`` inverts an image whose border
        is mostly bright (a dark glyph on white paper), ``True`` inverts all.

    Returns
    -------
    images : ndarray (n, size, size) float32 in [0, 1]
    names : tuple of str
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataValidationError(f"{folder}: no such stimulus folder")
    files = {p.stem: p for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGE_EXTENSIONS}
    if class_names is None:
        names = tuple(sorted(files))
        if not names:
            raise DataValidationError(f"{folder}: no image file ({', '.join(IMAGE_EXTENSIONS)})")
    else:
        names = tuple(str(c) for c in class_names)
        missing = [c for c in names if c not in files]
        if missing:
            raise DataValidationError(
                f"{folder}: no image for class(es) {missing}; expected files named <class>.<ext>, found {sorted(files)}"
            )
    if invert not in (True, False, "auto"):
        raise DataValidationError(f"invert={invert!r} is not one of True, False, 'auto'")
    out = []
    for name in names:
        img = _read_image(files[name], size)
        border = np.concatenate([img[0], img[-1], img[:, 0], img[:, -1]])
        if invert is True or (invert == "auto" and np.median(border) > 0.5):
            img = 1.0 - img
        out.append(img)
    return np.stack(out).astype(np.float32), names


def class_images(
    class_names: Sequence[str],
    source: str | os.PathLike | None = None,
    **kwargs,
) -> np.ndarray:
    """Target image of each class: rendered (``source=None``) or read from a folder.

    Returns an array (n_classes, 28, 28) in the order of ``class_names``;
    ``kwargs`` go to :func:`render_glyphs` or :func:`load_stimulus_folder`.
    """
    if source is None:
        return render_glyphs(class_names, **kwargs)
    images, _ = load_stimulus_folder(source, class_names, **kwargs)
    return images
