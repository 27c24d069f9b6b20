"""Figures: stimulus/reconstruction grids and metric bar charts (matplotlib, Agg backend).

Every title and label is drawn through :func:`cortexflow.utils.text.plain_label`:
ANSI escapes and control characters of user-given names (data sets, methods,
options) are removed, as in the written reports, and a ``$`` is shown as a
dollar sign instead of starting matplotlib's mathtext.
"""

from __future__ import annotations

import functools
import io
import os
from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.category  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402

from cortexflow.utils.io import atomic_write_bytes  # noqa: E402
from cortexflow.utils.text import plain_label  # noqa: E402

__all__ = ["reconstruction_grid", "save_image", "bar_chart", "save_figure", "save_stimulus_sheet"]


def _clean_text(text) -> None:
    raw = text.get_text()
    if raw:
        clean = plain_label(raw, keep_newlines=True)
        if clean != raw:
            text.set_text(clean)


def _clean_tick_formatter(axis) -> None:
    """Clean the text tick labels of ``axis`` (fixed or categorical ones; numeric formatters are left alone)."""
    formatter = axis.get_major_formatter()
    fixed = isinstance(formatter, (matplotlib.ticker.FixedFormatter, matplotlib.category.StrCategoryFormatter))
    if isinstance(formatter, matplotlib.ticker.FuncFormatter):  # what set_ticklabels makes for fixed tick positions
        func = formatter.func
        fixed = isinstance(func, functools.partial) and bool(func.args) and isinstance(func.args[0], dict)
    if fixed and not getattr(formatter, "_cortexflow_clean", False):
        wrapped = matplotlib.ticker.FuncFormatter(
            lambda x, pos=None, inner=formatter: plain_label(inner(x, pos), keep_newlines=True))
        wrapped._cortexflow_clean = True
        axis.set_major_formatter(wrapped)


def _clean_texts(fig) -> None:
    """Pass the titles, axis labels, text tick labels, annotations and legends of ``fig`` through plain_label."""
    texts = [t for t in (getattr(fig, "_suptitle", None), getattr(fig, "_supxlabel", None),
                         getattr(fig, "_supylabel", None)) if t is not None] + list(fig.texts)
    for ax in fig.axes:
        texts += [ax.title, getattr(ax, "_left_title", None), getattr(ax, "_right_title", None),
                  ax.xaxis.label, ax.yaxis.label, *ax.texts]
        legend = ax.get_legend()
        if legend is not None:
            texts += list(legend.get_texts()) + [legend.get_title()]
        for axis in (ax.xaxis, ax.yaxis):
            _clean_tick_formatter(axis)
    for text in texts:
        if text is not None:
            _clean_text(text)


def save_figure(fig, path: str | os.PathLike, dpi: int = 110) -> Path:
    """Save a matplotlib figure as PNG atomically and close it.

    Every text of the figure (titles, axis labels, text tick labels, annotations, legends) is
    first passed through :func:`~cortexflow.utils.text.plain_label`, so a
    figure drawn elsewhere (e.g. the benchmark's metric panel) gets no control
    characters and no mathtext from a user-given name either.
    """
    _clean_texts(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def _displayable(img) -> np.ndarray:
    """An (H, W) or (H, W, 3) image in [0, 1] for matplotlib; (H, W, 1) becomes (H, W)."""
    img = np.clip(np.asarray(img, dtype=np.float64), 0, 1)
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    if img.ndim == 1:  # a flat square image
        side = int(round(np.sqrt(img.size)))
        if side * side == img.size:
            img = img.reshape(side, side)
    if not (img.ndim == 2 or (img.ndim == 3 and img.shape[-1] == 3)):
        raise ValueError(f"an image must be (H, W) grayscale or (H, W, 3) RGB; got shape {img.shape}")
    return img


def _show(ax, img) -> None:
    img = _displayable(img)
    if img.ndim == 2:
        ax.imshow(img, cmap="gray", vmin=0, vmax=1)
    else:
        ax.imshow(img)


def save_image(img: np.ndarray, path: str | os.PathLike, scale: int = 4) -> Path:
    """Save one (H, W) grayscale or (H, W, 3) RGB image in [0, 1] as a PNG, upscaled ``scale`` times."""
    img = _displayable(img)
    img = np.repeat(np.repeat(img, scale, axis=0), scale, axis=1)
    buf = io.BytesIO()
    if img.ndim == 2:
        plt.imsave(buf, img, cmap="gray", vmin=0, vmax=1, format="png")
    else:
        plt.imsave(buf, img, format="png")
    return atomic_write_bytes(path, buf.getvalue())


def reconstruction_grid(
    stimuli: np.ndarray | None,
    reconstructions: Mapping[str, np.ndarray],
    path: str | os.PathLike,
    *,
    max_images: int = 12,
    title: str | None = None,
    column_labels: Sequence[str] | None = None,
) -> Path:
    """Grid with the stimuli in the top row and each method's reconstructions beneath.

    Parameters
    ----------
    stimuli : ndarray (n, H, W), (n, H, W, 3) or None
        Ground truth (grayscale, or RGB channel-last; any H and W); omitted
        row when None.
    reconstructions : mapping of row label to ndarray (n, H, W) or (n, H, W, 3)
    path : path-like
        PNG destination.
    """
    rows: list[tuple[str, np.ndarray]] = []
    if stimuli is not None:
        rows.append(("stimulus", np.asarray(stimuli)))
    rows += [(k, np.asarray(v)) for k, v in reconstructions.items()]
    n = min(max_images, min(len(r) for _, r in rows))
    h, w = rows[0][1].shape[1:3] if rows[0][1].ndim >= 3 else (1, 1)
    aspect = float(h) / float(w)  # panel height per unit width: non-square images keep their proportions
    fig, axes = plt.subplots(len(rows), n, figsize=(1.0 * n + 1.2, 1.05 * aspect * len(rows) + (0.4 if title else 0)),
                             squeeze=False)
    for r, (label, imgs) in enumerate(rows):
        for c in range(n):
            ax = axes[r, c]
            _show(ax, imgs[c])
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(plain_label(label), rotation=0, ha="right", va="center", fontsize=8)
            if r == 0 and column_labels is not None:
                ax.set_title(plain_label(column_labels[c]), fontsize=7)
    if title:
        fig.suptitle(plain_label(title), fontsize=9)
    return save_figure(fig, path)


def bar_chart(
    means: Mapping[str, float],
    errors: Mapping[str, float],
    path: str | os.PathLike,
    *,
    ylabel: str,
    title: str | None = None,
    marks: Mapping[str, str] | None = None,
) -> Path:
    """Bar chart of one metric per method with error bars (and optional significance marks)."""
    names = list(means)
    fig, ax = plt.subplots(figsize=(1.1 * len(names) + 1.5, 3))
    x = np.arange(len(names))
    vals = [means[k] for k in names]
    errs = [errors.get(k, 0.0) for k in names]
    ax.bar(x, vals, yerr=errs, capsize=4, color="#4C72B0")
    ax.set_xticks(x)
    ax.set_xticklabels([plain_label(k) for k in names], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(plain_label(ylabel))
    if marks:
        top = max(v + e for v, e in zip(vals, errs)) if vals else 0
        for i, k in enumerate(names):
            if marks.get(k):
                ax.text(i, vals[i] + errs[i] + 0.02 * abs(top), plain_label(marks[k]), ha="center", va="bottom", fontsize=9)
    if title:
        ax.set_title(plain_label(title), fontsize=9)
    return save_figure(fig, path)


def save_stimulus_sheet(images: np.ndarray, names: Sequence[str], path: str | os.PathLike) -> Path:
    """Save the class images side by side, named, as one PNG (to check them by eye)."""
    return reconstruction_grid(None, {"": np.asarray(images)}, path, max_images=len(images),
                               column_labels=[str(n) for n in names])
