"""Generators of the synthetic prior corpora (deterministic from a seed).

* :func:`miyawaki_patterns`: random 10x10 binary patterns and random geometric
  shapes on the same grid, rendered by :func:`render_grid`, the exact
  nearest-neighbour upscaling of the miyawaki file (a 10x10 cell becomes a
  block of 2, 3, 3, 3, 3, 3, 3, 3, 3, 2 pixel rows and columns:
  ``scipy.ndimage.zoom(order=0)`` of 10 -> 28, pixel ``i`` taking cell
  ``round(i * 9 / 27)``). White shapes on black, as in the file.
* :func:`font_letters`: lower-case letters in matplotlib's DejaVu fonts, random
  affine and elastic deformation, black ink on white like the Crell targets.
* :func:`color_shapes`: RGB images (32x32x3 by default) of one to three
  coloured rectangles, ellipses and triangles on a coloured background: a
  small RGB corpus for RGB data sets (no RGB brain data is registered).

Bump ``MIYAWAKI_VERSION`` / ``LETTERS_VERSION`` / ``COLOR_SHAPES_VERSION`` whenever a change alters the
output: they are part of the corpus checksum, hence of every prior's cache key.
"""

from __future__ import annotations

import string
from pathlib import Path

import matplotlib
import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

__all__ = [
    "MIYAWAKI_VERSION",
    "LETTERS_VERSION",
    "GRID_INDEX",
    "render_grid",
    "grid_from_image",
    "random_shape",
    "miyawaki_patterns",
    "font_letters",
    "LETTER_FONTS",
    "COLOR_SHAPES_VERSION",
    "COLOR_SHAPE_KINDS",
    "color_shapes",
]

MIYAWAKI_VERSION = "1"
LETTERS_VERSION = "1"
COLOR_SHAPES_VERSION = "1"

#: Cell of the 10x10 grid that each of the 28 pixel rows (and columns) shows.
GRID_INDEX = np.rint(np.arange(28) * 9 / 27).astype(np.int64)
#: First pixel of each cell (2, 3, ..., 3, 2 pixels per cell).
_CELL_START = np.searchsorted(GRID_INDEX, np.arange(10))

SHAPE_KINDS = ("rectangle", "frame", "plus", "x", "line", "bars", "pair")


def render_grid(patterns: np.ndarray) -> np.ndarray:
    """Upscale 10x10 patterns to 28x28 exactly as the miyawaki file does.

    Parameters
    ----------
    patterns : array (10, 10) or (n, 10, 10)

    Returns
    -------
    ndarray of float32, shape (..., 28, 28)
    """
    p = np.asarray(patterns, dtype=np.float32)
    return np.ascontiguousarray(p[..., GRID_INDEX, :][..., :, GRID_INDEX])


def grid_from_image(images: np.ndarray) -> np.ndarray:
    """The 10x10 pattern behind a rendered 28x28 image (one pixel per cell)."""
    im = np.asarray(images)
    return im[..., _CELL_START, :][..., :, _CELL_START]


def _span(rng: np.random.Generator, lo: int, hi: int) -> tuple[int, int]:
    """A random length in [lo, hi] and a start so that it fits in 10 cells."""
    length = int(rng.integers(lo, hi + 1))
    return length, int(rng.integers(0, 10 - length + 1))


def random_shape(rng: np.random.Generator, kind: str) -> np.ndarray:
    """One random 10x10 binary shape of ``kind`` (one of ``SHAPE_KINDS``)."""
    g = np.zeros((10, 10), dtype=np.float32)
    if kind == "rectangle":
        (h, r), (w, c) = _span(rng, 2, 8), _span(rng, 2, 8)
        g[r : r + h, c : c + w] = 1
    elif kind == "frame":
        (h, r), (w, c) = _span(rng, 4, 10), _span(rng, 4, 10)
        t = int(rng.integers(1, 3)) if min(h, w) >= 6 else 1
        g[r : r + h, c : c + w] = 1
        g[r + t : r + h - t, c + t : c + w - t] = 0
    elif kind == "plus":
        (h, r), (w, c) = _span(rng, 4, 10), _span(rng, 4, 10)
        t = int(rng.integers(1, 3))
        cr, cc = r + (h - t) // 2, c + (w - t) // 2
        g[cr : cr + t, c : c + w] = 1
        g[r : r + h, cc : cc + t] = 1
    elif kind == "x":
        s, r = _span(rng, 4, 10)
        c = int(rng.integers(0, 10 - s + 1))
        t = int(rng.integers(1, 3))
        for i in range(s):
            for k in range(t):
                g[r + i, min(c + i + k, c + s - 1)] = 1
                g[r + i, max(c + s - 1 - i - k, c)] = 1
    elif kind == "line":
        t = int(rng.integers(1, 3))
        length, start = _span(rng, 3, 10)
        pos = int(rng.integers(0, 10 - t + 1))
        if rng.random() < 0.5:
            g[pos : pos + t, start : start + length] = 1
        else:
            g[start : start + length, pos : pos + t] = 1
    elif kind == "bars":  # 2-4 axis-aligned bars in a box: letter-like glyphs (n, u, e, r, ...)
        (h, r), (w, c) = _span(rng, 4, 10), _span(rng, 4, 10)
        t = 1 if min(h, w) < 6 else int(rng.integers(1, 3))
        for _ in range(int(rng.integers(2, 5))):
            if rng.random() < 0.5:  # horizontal bar at the top, middle or bottom of the box
                rr = r + [0, (h - t) // 2, h - t][int(rng.integers(0, 3))]
                g[rr : rr + t, c : c + w] = 1
            else:
                cc = c + [0, (w - t) // 2, w - t][int(rng.integers(0, 3))]
                g[r : r + h, cc : cc + t] = 1
    elif kind == "pair":
        a, b = rng.choice(SHAPE_KINDS[:-1], size=2)
        g = np.maximum(random_shape(rng, str(a)), random_shape(rng, str(b)))
    else:
        raise ValueError(f"unknown shape kind {kind!r}; one of {SHAPE_KINDS}")
    if kind != "pair" and rng.random() < 0.15:
        g = 1 - g  # a few inverted shapes
    return g


def miyawaki_patterns(n_random: int, n_shapes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random binary patterns, then random shapes, rendered to 28x28.

    Parameters
    ----------
    n_random : int
        Patterns whose 100 cells are independent coin flips with a per-image
        density drawn from U(0.3, 0.7) (Miyawaki et al. trained on random
        patterns).
    n_shapes : int
        Random shapes, kinds in turn from ``SHAPE_KINDS``.
    seed : int

    Returns
    -------
    images : ndarray (n_random + n_shapes, 28, 28) float32 of 0/1
    labels : ndarray of int64: 0 for random patterns, 1 + shape-kind index for shapes
    """
    rng = np.random.default_rng(seed)
    density = rng.uniform(0.3, 0.7, size=(n_random, 1, 1))
    rand = (rng.random((n_random, 10, 10)) < density).astype(np.float32)
    shapes = np.zeros((n_shapes, 10, 10), dtype=np.float32)
    kinds = np.arange(n_shapes) % len(SHAPE_KINDS)
    for i, k in enumerate(kinds):
        shapes[i] = random_shape(rng, SHAPE_KINDS[k])
    grids = np.concatenate([rand, shapes])
    labels = np.concatenate([np.zeros(n_random, dtype=np.int64), 1 + kinds.astype(np.int64)])
    return render_grid(grids), labels


# ---------------------------------------------------------------- letters
#: DejaVu faces drawn by :func:`font_letters` (matplotlib's ttf folder).
LETTER_FONTS = (
    "DejaVuSans.ttf",
    "DejaVuSans-Oblique.ttf",
    "DejaVuSansMono.ttf",
    "DejaVuSerif.ttf",
    "DejaVuSerif-Italic.ttf",
    "DejaVuSans-Bold.ttf",
)


def _glyph_crops(letters: str, fonts: tuple[str, ...]) -> list[list[np.ndarray]]:
    """High-resolution ink crops (float in [0, 1]) of every letter in every font."""
    folder = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    out = []
    for font in fonts:
        ttf = ImageFont.truetype(str(folder / font), 112)
        row = []
        for ch in letters:
            canvas = Image.new("L", (192, 192), 0)
            ImageDraw.Draw(canvas).text((40, 10), ch, fill=255, font=ttf)
            a = np.asarray(canvas, dtype=np.float32) / 255.0
            ys, xs = np.nonzero(a > 0.05)
            row.append(a[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1])
        out.append(row)
    return out


def _place(crop: np.ndarray, height: float, rng: np.random.Generator) -> np.ndarray:
    """Scale an ink crop to ``height`` pixels (width in proportion, at most 22) and centre it in 28x28."""
    h, w = crop.shape
    scale = min(height / h, 22.0 / w)
    nh, nw = max(2, int(round(h * scale))), max(2, int(round(w * scale)))
    small = np.asarray(Image.fromarray((crop * 255).astype(np.uint8)).resize((nw, nh), Image.Resampling.LANCZOS),
                       dtype=np.float32) / 255.0
    out = np.zeros((28, 28), dtype=np.float32)
    top = (28 - nh) // 2 + int(rng.integers(-1, 2))
    left = (28 - nw) // 2 + int(rng.integers(-1, 2))
    top, left = int(np.clip(top, 0, 28 - nh)), int(np.clip(left, 0, 28 - nw))
    out[top : top + nh, left : left + nw] = small
    return out


def _deform(ink: np.ndarray, rng: np.random.Generator, *, alpha: float = 1.2, sigma: float = 3.0) -> np.ndarray:
    """Random affine (rotation, shear, scale) plus a smooth elastic displacement, in one resampling."""
    angle = np.deg2rad(rng.uniform(-12, 12))
    shear = rng.uniform(-0.25, 0.25)
    scale = rng.uniform(0.9, 1.1, size=2)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    A = rot @ np.array([[1.0, shear], [0.0, 1.0]]) @ np.diag(1.0 / scale)
    yy, xx = np.meshgrid(np.arange(28.0), np.arange(28.0), indexing="ij")
    c = 13.5
    coords = np.einsum("ij,jhw->ihw", A, np.stack([yy - c, xx - c])) + c
    for k in range(2):
        field = ndimage.gaussian_filter(rng.uniform(-1, 1, size=(28, 28)), sigma, mode="constant")
        field /= np.abs(field).max() + 1e-8
        coords[k] += alpha * field
    return np.clip(ndimage.map_coordinates(ink, coords, order=1, mode="constant", cval=0.0), 0.0, 1.0)


def font_letters(per_letter: int, seed: int, letters: str = string.ascii_lowercase) -> tuple[np.ndarray, np.ndarray]:
    """Deformed renderings of each letter, black ink on white.

    Each image: a random DejaVu face of :data:`LETTER_FONTS`, the glyph's
    height drawn from U(14, 20) pixels (the Crell letters are 15-20 pixels
    tall), centred in 28x28 with a shift of up to one pixel, then a random
    rotation (+-12 degrees), shear (+-0.25), scale (0.9-1.1) and an elastic
    field (smoothed noise, sigma 3, up to 1.2 pixels).

    Returns
    -------
    images : ndarray (26 * per_letter, 28, 28) float32 in [0, 1] (1 = white paper)
    labels : ndarray of int64, the letter index (0 = "a")
    """
    rng = np.random.default_rng(seed)
    crops = _glyph_crops(letters, LETTER_FONTS)
    n = len(letters) * per_letter
    labels = np.repeat(np.arange(len(letters), dtype=np.int64), per_letter)
    images = np.empty((n, 28, 28), dtype=np.float32)
    for i, lab in enumerate(labels):
        font = int(rng.integers(0, len(LETTER_FONTS)))
        ink = _place(crops[font][lab], rng.uniform(14, 20), rng)
        images[i] = 1.0 - _deform(ink, rng)
    return images, labels


COLOR_SHAPE_KINDS = ("rectangle", "ellipse", "triangle")


def _shape_mask(rng: np.random.Generator, kind: str, size: int, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """Boolean (size, size) mask of one random shape of ``kind``, 25-70 % of the side across."""
    w, h = rng.uniform(0.25, 0.7, size=2) * size
    cx, cy = rng.uniform(w / 2, size - w / 2), rng.uniform(h / 2, size - h / 2)
    if kind == "rectangle":
        return (np.abs(xx - cx) <= w / 2) & (np.abs(yy - cy) <= h / 2)
    if kind == "ellipse":
        return ((xx - cx) / (w / 2)) ** 2 + ((yy - cy) / (h / 2)) ** 2 <= 1.0
    # triangle, apex up or down: |x - cx| <= (w / 2) * t, t running 0..1 from the apex to the base
    t = (yy - (cy - h / 2)) / h
    if rng.random() < 0.5:
        t = 1.0 - t
    return (t >= 0) & (t <= 1) & (np.abs(xx - cx) <= (w / 2) * t)


def color_shapes(n_images: int, seed: int, size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """RGB images of one to three random coloured shapes on a coloured background.

    Parameters
    ----------
    n_images : int
    seed : int
    size : int
        Side of the square images.

    Returns
    -------
    images : ndarray of float32, shape (n_images, size, size, 3), values in [0, 1]
    labels : ndarray of int64, shape (n_images,)
        Index in :data:`COLOR_SHAPE_KINDS` of the first (largest drawn first) shape.
    """
    rng = np.random.default_rng(seed)
    images = np.empty((n_images, size, size, 3), dtype=np.float32)
    labels = np.empty(n_images, dtype=np.int64)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
    for i in range(n_images):
        img = np.empty((size, size, 3), dtype=np.float64)
        img[:] = rng.uniform(0.0, 1.0, size=3) * rng.uniform(0.2, 1.0)
        for j in range(int(rng.integers(1, 4))):
            k = int(rng.integers(len(COLOR_SHAPE_KINDS)))
            if j == 0:
                labels[i] = k
            img[_shape_mask(rng, COLOR_SHAPE_KINDS[k], size, yy, xx)] = rng.uniform(0.0, 1.0, size=3)
        images[i] = img
    return images, labels
