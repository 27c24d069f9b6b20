"""Simulated EEG epochs with class-dependent evoked responses and realistic noise.

MNE's source-space simulation needs a head model (fsaverage), which is a
download; this module is a documented, self-contained generator instead, used
by the end-to-end tests and the numbers in ``docs/eeg.md``.

Model of one trial of class ``c`` on channel ``k`` (microvolts)::

    x_k(t) = sum_s  G[k, s] * A[c, s] * g_i * w_s(t - L_s - D[c, s] - j_i)      evoked part
           + (M @ pink)_k(t)                                                    1/f background
           + alpha_k(t) + line_k(t) + blink_k(t) + white_k(t)                   other noise

* Three sources ``s`` ~ P1 (100 ms), N170 (170 ms) and P3 (350 ms), each a
  Gaussian wave ``w_s`` with its own width and sign, at a fixed scalp spot;
  ``G`` holds smooth Gaussian topographies over approximate 10-20 positions.
* Class dependence: ``A[c, s] = 1 + class_spread * N(0, 1)`` (relative
  amplitude) and ``D[c, s] ~ U(-latency_spread, latency_spread)`` (latency
  shift), drawn once per call from ``seed``.
* Trial variability: gain ``g_i = 1 + 0.2 N(0, 1)``, latency jitter
  ``j_i ~ N(0, 10 ms)``.
* Background: independent 1/f ("pink") noise per channel mixed by a smooth
  spatial matrix ``M`` (neighbouring channels correlate), scaled to
  ``noise_uv`` RMS; posterior 8-12 Hz alpha with random phase and amplitude;
  a line-frequency sinusoid; sensor white noise; and, in a fraction
  ``blink_rate`` of trials, a 100-200 uV blink on frontal channels.
"""

from __future__ import annotations

import numpy as np

from cortexflow.data.eeg.epochs import EEGEpochs
from cortexflow.data.eeg.mindbigdata import DIGIT_CLASSES, MINDBIGDATA_DEVICES
from cortexflow.exceptions import DataValidationError

__all__ = ["simulate_evoked_eeg", "pink_noise", "CHANNEL_POSITIONS"]

#: Approximate 2-D scalp positions (x: left to right, y: back to front) of common 10-20 sites.
CHANNEL_POSITIONS: dict[str, tuple[float, float]] = {
    "AF3": (-0.3, 0.8), "AF4": (0.3, 0.8), "F7": (-0.7, 0.55), "F8": (0.7, 0.55), "F3": (-0.4, 0.5),
    "F4": (0.4, 0.5), "FC5": (-0.65, 0.3), "FC6": (0.65, 0.3), "T7": (-0.9, 0.0), "T8": (0.9, 0.0),
    "P7": (-0.7, -0.55), "P8": (0.7, -0.55), "O1": (-0.3, -0.9), "O2": (0.3, -0.9), "PZ": (0.0, -0.5),
    "FP1": (-0.25, 0.95), "FP2": (0.25, 0.95), "TP9": (-0.95, -0.3), "TP10": (0.95, -0.3), "CZ": (0.0, 0.0),
    "OZ": (0.0, -0.95), "FZ": (0.0, 0.55), "C3": (-0.45, 0.0), "C4": (0.45, 0.0), "P3": (-0.4, -0.5),
    "P4": (0.4, -0.5),
}

# (name, latency s, width s, sign, scalp position)
_SOURCES = (
    ("P1", 0.10, 0.025, +1.0, (0.0, -0.85)),
    ("N170", 0.17, 0.035, -1.0, (0.55, -0.6)),
    ("P3", 0.35, 0.09, +1.0, (0.0, -0.35)),
)


def pink_noise(rng: np.random.Generator, shape: tuple[int, ...], *, exponent: float = 1.0) -> np.ndarray:
    """Noise with power spectrum ~ 1/f**exponent along the last axis, unit variance."""
    n = shape[-1]
    freqs = np.fft.rfftfreq(n)
    spec = rng.standard_normal(shape[:-1] + (len(freqs),)) + 1j * rng.standard_normal(shape[:-1] + (len(freqs),))
    scale = np.ones_like(freqs)
    scale[1:] = freqs[1:] ** (-exponent / 2.0)
    scale[0] = 0.0
    x = np.fft.irfft(spec * scale, n=n, axis=-1)
    x /= x.std(axis=-1, keepdims=True) + 1e-12
    return x


def _positions(ch_names) -> np.ndarray:
    pos = []
    golden = np.pi * (3 - np.sqrt(5))
    for i, ch in enumerate(ch_names):
        if ch.upper() in CHANNEL_POSITIONS:
            pos.append(CHANNEL_POSITIONS[ch.upper()])
        else:  # spread unknown channels over the disk (golden-angle spiral)
            r = np.sqrt((i + 0.5) / len(ch_names))
            pos.append((r * np.cos(i * golden), r * np.sin(i * golden)))
    return np.asarray(pos, dtype=np.float64)


def simulate_evoked_eeg(
    n_per_class: int = 40,
    class_names: tuple[str, ...] = DIGIT_CLASSES,
    *,
    ch_names: tuple[str, ...] = MINDBIGDATA_DEVICES["EP"].channels,
    sfreq: float = 128.0,
    n_times: int = 256,
    evoked_uv: float = 4.0,
    noise_uv: float = 10.0,
    class_spread: float = 0.6,
    latency_spread: float = 0.03,
    lateral_spread: float = 0.5,
    alpha_uv: float = 6.0,
    line_uv: float = 2.0,
    line_freq: float = 50.0,
    white_uv: float = 1.0,
    blink_rate: float = 0.1,
    seed: int = 0,
) -> EEGEpochs:
    """Simulate ``n_per_class`` trials of each class (see the module docstring for the model).

    Parameters
    ----------
    n_per_class : int
        Trials per class; trials come in a seeded random order.
    class_names : tuple of str
        One class per name; labels are 0..n_classes-1.
    ch_names, sfreq, n_times :
        Montage and epoch shape (default: Emotiv EPOC, 128 Hz, 2 s, as MindBigData).
    evoked_uv : float
        Peak amplitude of each evoked component before class gains, in uV.
    noise_uv : float
        RMS of the 1/f background, in uV.
    class_spread, latency_spread : float
        How much classes differ: relative amplitude SD and latency range (s).
    alpha_uv, line_uv, white_uv : float
        Amplitudes of the alpha rhythm, line noise and sensor noise (uV).
    line_freq : float
        Line frequency (Hz); skipped when above Nyquist.
    blink_rate : float
        Fraction of trials with an eye blink.
    seed : int
        Seeds the class templates and every noise draw.

    Returns
    -------
    EEGEpochs
        In microvolts; ``metadata`` records every parameter and the achieved
        single-trial SNR (evoked RMS over noise RMS).
    """
    if n_per_class < 1 or len(class_names) < 2:
        raise DataValidationError(f"need n_per_class >= 1 and at least 2 classes; got {n_per_class}, {len(class_names)}")
    if n_times < 8 or sfreq <= 0:
        raise DataValidationError(f"need n_times >= 8 and sfreq > 0; got {n_times}, {sfreq}")
    rng = np.random.default_rng(seed)
    n_cls, n_ch = len(class_names), len(ch_names)
    n = n_per_class * n_cls
    t = np.arange(n_times) / sfreq
    pos = _positions(ch_names)

    # spatial patterns of the sources and class templates
    G = np.stack([np.exp(-np.sum((pos - np.asarray(p)) ** 2, axis=1) / (2 * 0.4**2)) for *_, p in _SOURCES], axis=1)
    A = 1.0 + class_spread * rng.standard_normal((n_cls, len(_SOURCES)))
    D = rng.uniform(-latency_spread, latency_spread, size=(n_cls, len(_SOURCES)))
    # class-specific lateralisation of each source: topography times (1 + B[c, s] * x)
    B = rng.uniform(-lateral_spread, lateral_spread, size=(n_cls, len(_SOURCES)))
    # smooth mixing of the background (neighbouring channels correlate)
    dist2 = np.sum((pos[:, None, :] - pos[None, :, :]) ** 2, axis=-1)
    M = np.exp(-dist2 / (2 * 0.5**2))
    M /= np.sqrt((M**2).sum(axis=1, keepdims=True))

    labels = rng.permutation(np.repeat(np.arange(n_cls), n_per_class))
    gain = 1.0 + 0.2 * rng.standard_normal(n)
    jitter = 0.010 * rng.standard_normal(n)
    evoked = np.zeros((n, n_ch, n_times))
    for s, (_, lat, width, sign, _) in enumerate(_SOURCES):
        centre = lat + D[labels, s] + jitter  # (n,)
        wave = sign * np.exp(-((t[None, :] - centre[:, None]) ** 2) / (2 * width**2))  # (n, T)
        amp = evoked_uv * A[labels, s] * gain  # (n,)
        topo = G[None, :, s] * (1.0 + B[labels, s][:, None] * pos[None, :, 0])  # (n, n_ch)
        evoked += (amp[:, None] * wave)[:, None, :] * topo[:, :, None]

    background = np.einsum("kj,njt->nkt", M, pink_noise(rng, (n, n_ch, n_times))) * noise_uv
    posterior = np.clip(-pos[:, 1], 0, None)[None, :, None]  # alpha is strongest at the back
    f_alpha = rng.uniform(8, 12, size=(n, 1, 1))
    ph = rng.uniform(0, 2 * np.pi, size=(n, 1, 1))
    amp_alpha = alpha_uv * rng.uniform(0.3, 1.2, size=(n, 1, 1))
    alpha = amp_alpha * posterior * np.sin(2 * np.pi * f_alpha * t[None, None, :] + ph)
    noise = background + alpha + white_uv * rng.standard_normal((n, n_ch, n_times))
    if line_freq < sfreq / 2:
        noise += line_uv * np.sin(2 * np.pi * line_freq * t[None, None, :] + rng.uniform(0, 2 * np.pi, (n, n_ch, 1)))
    frontal = np.clip(pos[:, 1], 0, None)[None, :, None] ** 2
    blink = rng.random(n) < blink_rate
    if blink.any():
        at = rng.uniform(0.1, t[-1], size=blink.sum())
        size = rng.uniform(100, 200, size=blink.sum())
        shape = np.exp(-((t[None, :] - at[:, None]) ** 2) / (2 * 0.08**2)) * size[:, None]
        noise[blink] += shape[:, None, :] * frontal[0][None]
    X = evoked + noise
    snr = float(np.sqrt((evoked**2).mean()) / max(float(np.sqrt((noise**2).mean())), 1e-12))
    return EEGEpochs(
        data=X.astype(np.float32),
        labels=labels,
        ch_names=tuple(ch_names),
        sfreq=float(sfreq),
        class_names=tuple(class_names),
        event_ids=np.arange(n),
        metadata={
            "source": "simulate_evoked_eeg",
            "seed": int(seed),
            "units": "uV",
            "snr_rms": snr,
            "n_blinks": int(blink.sum()),
            "params": {
                "n_per_class": n_per_class, "evoked_uv": evoked_uv, "noise_uv": noise_uv,
                "class_spread": class_spread, "latency_spread": latency_spread, "lateral_spread": lateral_spread,
                "alpha_uv": alpha_uv,
                "line_uv": line_uv, "line_freq": line_freq, "white_uv": white_uv, "blink_rate": blink_rate,
            },
        },
    )
