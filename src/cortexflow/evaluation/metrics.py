"""Reconstruction metrics, per image and aggregated.

All functions take the keyword arguments ``true`` (the stimuli) and ``pred``
(the reconstructions), of shape (n, H, W), (n, H, W, C) (RGB, channel-last)
or (n, P) with pixels in [0, 1], and return one value per image. MSE,
Pearson r, PSNR and two-way identification work on any shape (over all
pixels and channels); the SSIMs need images of at least 7 x 7 and average
their channels. The arguments are keyword-only on purpose:
two-way identification is not symmetric, so ``f(a, b)`` and ``f(b, a)`` differ,
and a swapped positional call must fail rather than give another number.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from scipy.ndimage import gaussian_filter, uniform_filter

__all__ = [
    "mse_per_image",
    "pearson_per_image",
    "ssim_per_image",
    "ssim_skimage_per_image",
    "ssim_256_per_image",
    "resize_bilinear",
    "SSIM_DEFINITIONS",
    "DEFAULT_METRICS",
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


#: Smallest image side SSIM supports: its smallest window is 7 x 7 (scikit-image's default window).
SSIM_MIN_SIDE = 7
#: Side of the images that :func:`ssim_256_per_image` compares (as Shape-Semantic GAN, Fang et al. 2020).
SSIM_UPSCALED_SIDE = 256
_TRUNCATE = 3.5  # Gaussian window truncated at 3.5 sigma: 11 taps for sigma 1.5 (Wang et al. 2004, scikit-image)


def _ssim_images(p: np.ndarray, t: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(n, H, W) or (n, H, W, C) float64 images as (n, H, W, C); clear errors for other shapes and small sides."""
    if p.ndim not in (3, 4):
        raise ValueError(f"{name} needs images of shape (n, H, W) or (n, H, W, C); got {p.shape}")
    h, w = p.shape[1], p.shape[2]
    if min(h, w) < SSIM_MIN_SIDE:
        raise ValueError(
            f"{name} needs images of at least {SSIM_MIN_SIDE} x {SSIM_MIN_SIDE} pixels (its smallest window); "
            f"got {h} x {w}"
        )
    if p.ndim == 3:
        p, t = p[..., None], t[..., None]
    return p, t


def _gaussian_win(h: int, w: int, sigma: float) -> int:
    """Crop window of the Gaussian SSIM: 2 * int(3.5 sigma + 0.5) + 1 (11 for sigma 1.5), shrunk to the
    largest odd number <= the smaller image side (at least 7) for smaller images."""
    win = 2 * int(_TRUNCATE * sigma + 0.5) + 1
    side = min(h, w)
    if win > side:
        win = side if side % 2 else side - 1
    return max(win, SSIM_MIN_SIDE)


def _ssim_core(x: np.ndarray, y: np.ndarray, filt, win: int, cov_norm: float, data_range: float) -> float:
    """Mean SSIM of two 2-D images, scikit-image's formulas: local statistics by ``filt``, border of
    (win - 1) / 2 pixels left out of the mean."""
    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2
    ux, uy = filt(x), filt(y)
    vx = cov_norm * (filt(x * x) - ux * ux)
    vy = cov_norm * (filt(y * y) - uy * uy)
    vxy = cov_norm * (filt(x * y) - ux * uy)
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))
    pad = (win - 1) // 2
    return float(s[pad:-pad, pad:-pad].mean())


def ssim_per_image(*, true, pred, sigma: float = 1.5, data_range: float = 1.0) -> np.ndarray:
    """Structural similarity with a Gaussian window (sigma 1.5), as in Wang et al. 2004: CortexFlow's SSIM.

    Local means, variances and covariance are Gaussian-weighted (sigma 1.5,
    truncated at 3.5 sigma: 11 taps; reflected at the border), with
    population (not sample) covariances; the SSIM map is averaged over the
    pixels at least (win - 1) / 2 from the border, where win is 11, or for
    images with a side below 11 the largest odd number <= that side (the
    filter itself stays the same). RGB images (n, H, W, 3) get the SSIM of
    each channel, averaged. This is
    ``skimage.metrics.structural_similarity(x, y, gaussian_weights=True,
    sigma=1.5, use_sample_covariance=False, data_range=1, win_size=win,
    channel_axis=-1 for RGB)``, per image.

    Raises
    ------
    ValueError
        Shapes that differ or are not (n, H, W) / (n, H, W, C), or a side
        below :data:`SSIM_MIN_SIDE` (7).
    """
    p, t = _ssim_images(*_check(true, pred), "SSIM")
    win = _gaussian_win(p.shape[1], p.shape[2], sigma)
    filt = lambda a: gaussian_filter(a, sigma=sigma, truncate=_TRUNCATE, mode="reflect")  # noqa: E731
    out = np.empty(len(p))
    for i in range(len(p)):
        out[i] = np.mean([_ssim_core(p[i, ..., c], t[i, ..., c], filt, win, 1.0, data_range) for c in range(p.shape[3])])
    return out


def ssim_skimage_per_image(*, true, pred, win_size: int = 7, data_range: float = 1.0) -> np.ndarray:
    """SSIM with scikit-image's default settings: a 7 x 7 uniform window and sample covariances.

    ``skimage.metrics.structural_similarity(x, y, data_range=1)`` (defaults
    ``win_size=7``, ``gaussian_weights=False``, ``use_sample_covariance=True``;
    ``channel_axis=-1`` for RGB, channels averaged), per image, computed here
    without scikit-image. Many papers report this definition.

    Raises
    ------
    ValueError
        As :func:`ssim_per_image`; also an even ``win_size`` or one above the
        smaller image side.
    """
    p, t = _ssim_images(*_check(true, pred), "SSIM (scikit-image settings)")
    if win_size % 2 == 0 or win_size < 3 or win_size > min(p.shape[1], p.shape[2]):
        raise ValueError(
            f"win_size={win_size} must be an odd number from 3 to the smaller image side ({min(p.shape[1], p.shape[2])})"
        )
    filt = lambda a: uniform_filter(a, size=win_size, mode="reflect")  # noqa: E731
    cov_norm = win_size**2 / (win_size**2 - 1.0)
    out = np.empty(len(p))
    for i in range(len(p)):
        out[i] = np.mean([_ssim_core(p[i, ..., c], t[i, ..., c], filt, win_size, cov_norm, data_range)
                          for c in range(p.shape[3])])
    return out


def _bilinear_axis(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source indices and weights of half-pixel-centre bilinear resampling along one axis (edges clamped)."""
    src = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
    src = np.clip(src, 0, n_in - 1)
    lo = np.floor(src).astype(int)
    hi = np.minimum(lo + 1, n_in - 1)
    return lo, hi, src - lo


def resize_bilinear(images, shape: tuple[int, int]) -> np.ndarray:
    """Resize (n, H, W) or (n, H, W, C) images to ``shape`` by bilinear interpolation.

    Half-pixel centres (output pixel ``j`` samples input coordinate
    ``(j + 0.5) * H_in / H_out - 0.5``), coordinates clamped to the image at
    the border, no anti-aliasing: the same as
    ``torch.nn.functional.interpolate(mode="bilinear", align_corners=False)``
    and ``skimage.transform.resize(order=1, mode="edge", anti_aliasing=False)``.
    """
    a = np.asarray(images, dtype=np.float64)
    r0, r1, wr = _bilinear_axis(a.shape[1], int(shape[0]))
    c0, c1, wc = _bilinear_axis(a.shape[2], int(shape[1]))
    extra = (None,) * (a.ndim - 3)
    wr = wr[(None, slice(None), None) + extra]
    wc = wc[(None, None, slice(None)) + extra]
    rows = a[:, r0] * (1 - wr) + a[:, r1] * wr
    return rows[:, :, c0] * (1 - wc) + rows[:, :, c1] * wc


def ssim_256_per_image(*, true, pred, sigma: float = 1.5, data_range: float = 1.0) -> np.ndarray:
    """CortexFlow's SSIM (:func:`ssim_per_image`) after upscaling both images to 256 x 256, bilinearly.

    Shape-Semantic GAN (Fang et al. 2020) scores its 28 x 28 reconstructions
    this way. The resize is :func:`resize_bilinear` (half-pixel centres,
    edges clamped, no anti-aliasing; ``torch.nn.functional.interpolate(...,
    mode="bilinear", align_corners=False)``); upscaling smooths both images,
    so this SSIM is higher than at the native size.
    """
    p, t = _ssim_images(*_check(true, pred), "SSIM at 256 x 256")
    side = SSIM_UPSCALED_SIDE
    return ssim_per_image(true=resize_bilinear(t, (side, side)), pred=resize_bilinear(p, (side, side)),
                          sigma=sigma, data_range=data_range)


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
    "ssim_skimage": ssim_skimage_per_image,
    "ssim_256": ssim_256_per_image,
}

#: what ``evaluate_reconstructions`` computes when no list is given (the SSIM variants are asked for by name)
DEFAULT_METRICS: tuple[str, ...] = ("mse", "pearson", "ssim", "psnr", "two_way")

#: the SSIM definitions of :data:`METRICS`, in words (for reports and tables)
SSIM_DEFINITIONS: dict[str, str] = {
    "ssim": "Gaussian window sigma 1.5 (11 taps), population covariance, at the native size (CortexFlow's)",
    "ssim_skimage": "7x7 uniform window, sample covariance (scikit-image's defaults), at the native size",
    "ssim_256": "CortexFlow's SSIM after bilinear upscaling of both images to 256x256 (as Shape-Semantic GAN)",
}


def evaluate_reconstructions(*, true, pred, metrics: list[str] | None = None) -> dict[str, np.ndarray]:
    """Compute per-image metrics.

    Parameters
    ----------
    true : array-like of shape (n, H, W) or (n, H, W, C)
        The stimuli.
    pred : array-like of the same shape
        The reconstructions, in the same order.
    metrics : list of str, optional
        Names from :data:`METRICS`; :data:`DEFAULT_METRICS` (MSE, Pearson r,
        SSIM, PSNR, two-way) by default. The SSIM variants ``ssim_skimage``
        and ``ssim_256`` (see :data:`SSIM_DEFINITIONS`) are computed only
        when named.

    Returns
    -------
    dict of str to ndarray
        One array of length n per metric name.
    """
    names = list(metrics) if metrics else list(DEFAULT_METRICS)
    unknown = [m for m in names if m not in METRICS]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; allowed: {list(METRICS)}")
    return {m: METRICS[m](true=true, pred=pred) for m in names}


def summarize(per_image: dict[str, np.ndarray]) -> dict[str, float]:
    """Mean of each per-image metric."""
    return {k: float(np.nanmean(v)) for k, v in per_image.items()}
