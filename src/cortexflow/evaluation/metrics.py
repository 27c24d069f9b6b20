"""Reconstruction metrics, per image and aggregated.

All functions take the keyword arguments ``true`` (the stimuli) and ``pred``
(the reconstructions), of shape (n, H, W) (or (n, P)) with pixels in [0, 1],
and return one value per image. The arguments are keyword-only on purpose:
two-way identification is not symmetric, so ``f(a, b)`` and ``f(b, a)`` differ,
and a swapped positional call must fail rather than give another number.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from scipy.ndimage import gaussian_filter

__all__ = [
    "mse_per_image",
    "pearson_per_image",
    "ssim_per_image",
    "psnr_per_image",
    "two_way_identification",
    "evaluate_reconstructions",
    "summarize",
    "METRICS",
]


def _flat(a) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    return a.reshape(len(a), -1)


def _check(true, pred) -> tuple[np.ndarray, np.ndarray]:
    p, t = np.asarray(pred, dtype=np.float64), np.asarray(true, dtype=np.float64)
    if p.shape != t.shape:
        raise ValueError(f"pred has shape {p.shape} but true has shape {t.shape}; they must match")
    return p, t


def mse_per_image(*, true, pred) -> np.ndarray:
    """Mean squared pixel error of each image."""
    p, t = _check(true, pred)
    return ((_flat(p) - _flat(t)) ** 2).mean(axis=1)


def pearson_per_image(*, true, pred) -> np.ndarray:
    """Pearson correlation between each reconstruction and its stimulus (0 for a constant image)."""
    p, t = _check(true, pred)
    p, t = _flat(p), _flat(t)
    pc = p - p.mean(axis=1, keepdims=True)
    tc = t - t.mean(axis=1, keepdims=True)
    denom = np.sqrt((pc**2).sum(axis=1) * (tc**2).sum(axis=1))
    # an exactly constant image: its centred values are rounding noise, not signal
    constant = (np.ptp(p, axis=1) == 0) | (np.ptp(t, axis=1) == 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (pc * tc).sum(axis=1) / denom
    return np.where((denom > 0) & ~constant, r, 0.0)


def ssim_per_image(*, true, pred, sigma: float = 1.5, data_range: float = 1.0) -> np.ndarray:
    """Structural similarity with a Gaussian window (sigma 1.5), as in Wang et al. 2004.

    Matches ``skimage.metrics.structural_similarity(..., gaussian_weights=True,
    sigma=1.5, use_sample_covariance=False, data_range=1)``.
    """
    p, t = _check(true, pred)
    if p.ndim != 3:
        raise ValueError(f"SSIM needs images of shape (n, H, W); got {p.shape}")
    truncate = 3.5
    win = 2 * int(truncate * sigma + 0.5) + 1
    pad = (win - 1) // 2
    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2
    out = np.empty(len(p))
    filt = lambda a: gaussian_filter(a, sigma=sigma, truncate=truncate, mode="reflect")  # noqa: E731
    for i, (x, y) in enumerate(zip(p, t)):
        ux, uy = filt(x), filt(y)
        vx = filt(x * x) - ux * ux
        vy = filt(y * y) - uy * uy
        vxy = filt(x * y) - ux * uy
        s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))
        out[i] = s[pad:-pad, pad:-pad].mean()
    return out


def psnr_per_image(*, true, pred, data_range: float = 1.0, max_db: float = 100.0) -> np.ndarray:
    """Peak signal-to-noise ratio in dB (capped at ``max_db`` for a perfect image)."""
    m = mse_per_image(true=true, pred=pred)
    with np.errstate(divide="ignore"):
        v = 10 * np.log10(data_range**2 / m)
    return np.minimum(v, max_db)


def two_way_identification(*, true, pred, features: Callable[[np.ndarray], np.ndarray] | None = None) -> np.ndarray:
    """Two-way identification accuracy of each reconstruction (chance 0.5).

    For reconstruction i, the fraction of other stimuli j for which
    corr(pred_i, true_j) < corr(pred_i, true_i); ties count one half.

    Parameters
    ----------
    features : callable, optional
        Maps images to feature vectors first (for example a pretrained image
        encoder); pixel space when omitted.
    """
    p, t = _check(true, pred)
    n = len(p)
    if n < 2:
        return np.full(n, np.nan)
    fp = _flat(features(p) if features else p)
    ft = _flat(features(t) if features else t)
    fp = fp - fp.mean(axis=1, keepdims=True)
    ft = ft - ft.mean(axis=1, keepdims=True)
    fp /= np.maximum(np.linalg.norm(fp, axis=1, keepdims=True), 1e-12)
    ft /= np.maximum(np.linalg.norm(ft, axis=1, keepdims=True), 1e-12)
    C = fp @ ft.T  # C[i, j] = corr(pred_i, true_j)
    own = np.diag(C)[:, None]
    wins = (C < own - 1e-12).astype(float) + 0.5 * (np.abs(C - own) <= 1e-12)
    np.fill_diagonal(wins, 0.0)
    return wins.sum(axis=1) / (n - 1)


#: name -> per-image metric, called as ``metric(true=..., pred=...)`` (keyword-only everywhere:
#: two-way identification is asymmetric, so a swapped positional call would give another number)
METRICS: dict[str, Callable[..., np.ndarray]] = {
    "mse": mse_per_image,
    "pearson": pearson_per_image,
    "ssim": ssim_per_image,
    "psnr": psnr_per_image,
    "two_way": two_way_identification,
}


def evaluate_reconstructions(*, true, pred, metrics: list[str] | None = None) -> dict[str, np.ndarray]:
    """Compute per-image metrics.

    Parameters
    ----------
    true : array-like of shape (n, H, W)
        The stimuli.
    pred : array-like of shape (n, H, W)
        The reconstructions, in the same order.
    metrics : list of str, optional
        Names from :data:`METRICS` (all by default).

    Returns
    -------
    dict of str to ndarray
        One array of length n per metric name.
    """
    names = metrics or list(METRICS)
    unknown = [m for m in names if m not in METRICS]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; allowed: {list(METRICS)}")
    return {m: METRICS[m](true=true, pred=pred) for m in names}


def summarize(per_image: dict[str, np.ndarray]) -> dict[str, float]:
    """Mean of each per-image metric."""
    return {k: float(np.nanmean(v)) for k, v in per_image.items()}
