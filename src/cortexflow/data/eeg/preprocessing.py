"""EEG preprocessing for epoched arrays of shape (n_epochs, n_channels, n_times).

Filters are zero-phase (forward-backward) IIR filters from SciPy, so the
module works without MNE; :func:`preprocess_raw` applies the same steps to a
continuous :class:`mne.io.Raw` with MNE's own methods, which is the better
place to filter (no edge effects at epoch borders) when the continuous
recording exists, as for Crell.

Every step is a pure function; :func:`preprocess_epochs` chains them and
reports what it did. :class:`EEGRobustScaler` is the one step with fitted
statistics: fit it on training trials only.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Sequence

import numpy as np
from scipy import signal
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from cortexflow.data.eeg._optional import require
from cortexflow.exceptions import DataValidationError

__all__ = [
    "bandpass_filter",
    "notch_filter",
    "rereference",
    "baseline_correct",
    "resample",
    "peak_to_peak",
    "reject_by_peak_to_peak",
    "RejectionReport",
    "EEGRobustScaler",
    "EpochPreprocessor",
    "normalize_trials",
    "preprocess_epochs",
    "PreprocessReport",
    "preprocess_raw",
]

logger = logging.getLogger(__name__)

MAD_TO_SD = 1.4826  # MAD of a normal distribution times this is its standard deviation


def _check_epochs(X, name: str = "X") -> np.ndarray:
    X = np.asarray(X)
    if X.ndim != 3:
        raise DataValidationError(f"{name} has shape {X.shape}; expected (n_epochs, n_channels, n_times)")
    if not np.issubdtype(X.dtype, np.number):
        raise DataValidationError(f"{name} has non-numeric dtype {X.dtype}")
    X = X.astype(np.float64, copy=False)
    if not np.all(np.isfinite(X)):
        raise DataValidationError(f"{name} holds {int((~np.isfinite(X)).sum())} NaN or Inf value(s)")
    return X


def _padlen(n_times: int, sos: np.ndarray) -> int:
    # scipy's default pad length, capped so that short epochs can still be filtered
    default = 3 * (2 * len(sos) + 1)
    return min(default, n_times - 1)


def bandpass_filter(
    X, sfreq: float, l_freq: float | None, h_freq: float | None, *, order: int = 4
) -> np.ndarray:
    """Zero-phase Butterworth band-pass (or high-/low-pass when one edge is ``None``).

    Parameters
    ----------
    X : array (n_epochs, n_channels, n_times)
    sfreq : float
        Sampling rate in Hz.
    l_freq, h_freq : float or None
        Pass-band edges in Hz; ``None`` leaves that side open.
    order : int
        Butterworth order of each pass (the effective order is doubled by the
        forward-backward filtering).
    """
    X = _check_epochs(X)
    nyq = sfreq / 2.0
    if l_freq is None and h_freq is None:
        return X.astype(np.float32)
    if l_freq is not None and not 0 < l_freq < nyq:
        raise DataValidationError(f"l_freq={l_freq} Hz must lie in (0, {nyq}) for sfreq={sfreq} Hz")
    if h_freq is not None and not 0 < h_freq < nyq:
        raise DataValidationError(f"h_freq={h_freq} Hz must lie in (0, {nyq}) (the Nyquist rate of sfreq={sfreq} Hz)")
    if l_freq is not None and h_freq is not None and l_freq >= h_freq:
        raise DataValidationError(f"l_freq={l_freq} must be below h_freq={h_freq}")
    if l_freq is not None and h_freq is not None:
        sos = signal.butter(order, [l_freq, h_freq], btype="bandpass", fs=sfreq, output="sos")
    elif l_freq is not None:
        sos = signal.butter(order, l_freq, btype="highpass", fs=sfreq, output="sos")
    else:
        sos = signal.butter(order, h_freq, btype="lowpass", fs=sfreq, output="sos")
    out = signal.sosfiltfilt(sos, X, axis=-1, padlen=_padlen(X.shape[-1], sos))
    return out.astype(np.float32)


def notch_filter(X, sfreq: float, freqs: float | Sequence[float] = 50.0, *, quality: float = 30.0, harmonics: bool = True) -> np.ndarray:
    """Zero-phase IIR notch at the line frequency (and its harmonics below Nyquist).

    Parameters
    ----------
    freqs : float or sequence of float
        Line frequency (50 Hz in Europe, 60 Hz in the Americas) or an explicit list.
    quality : float
        Quality factor of each notch (bandwidth = freq / quality).
    harmonics : bool
        Also remove multiples of a single ``freqs`` below Nyquist.
    """
    X = _check_epochs(X)
    nyq = sfreq / 2.0
    base = [float(freqs)] if np.isscalar(freqs) else [float(f) for f in freqs]
    todo = []
    for f in base:
        if f <= 0:
            raise DataValidationError(f"notch frequency {f} Hz must be positive")
        k = 1
        while k * f < nyq:
            todo.append(k * f)
            if not (harmonics and np.isscalar(freqs)):
                break
            k += 1
    if not todo:
        logger.info("notch_filter: %s Hz lies above the Nyquist rate of %s Hz; nothing to do", base, nyq)
    out = X
    for f in todo:
        b, a = signal.iirnotch(f, quality, fs=sfreq)
        out = signal.filtfilt(b, a, out, axis=-1, padlen=min(3 * max(len(a), len(b)), X.shape[-1] - 1))
    return np.asarray(out, dtype=np.float32)


def rereference(X, reference: str | Sequence[int] = "average") -> np.ndarray:
    """Re-reference each epoch: ``"average"`` (common average) or the mean of given channel indices."""
    X = _check_epochs(X)
    if isinstance(reference, str):
        if reference != "average":
            raise DataValidationError(f"reference={reference!r}: use 'average' or a list of channel indices")
        if X.shape[1] < 2:
            raise DataValidationError("average reference needs at least 2 channels; this data has 1")
        ref = X.mean(axis=1, keepdims=True)
    else:
        idx = np.asarray(list(reference), dtype=int)
        if idx.size == 0 or idx.min() < 0 or idx.max() >= X.shape[1]:
            raise DataValidationError(f"reference channels {idx.tolist()} out of range 0..{X.shape[1] - 1}")
        ref = X[:, idx].mean(axis=1, keepdims=True)
    return (X - ref).astype(np.float32)


def baseline_correct(X, sfreq: float, window: tuple[float | None, float | None] | None = None, *, tmin: float = 0.0) -> np.ndarray:
    """Subtract, per epoch and channel, the mean over a time window.

    Parameters
    ----------
    window : (start, stop) in seconds, optional
        Relative to the event (``None`` = from the first / to the last
        sample), as in MNE. ``None`` subtracts the mean of the whole epoch
        (the choice for MindBigData, whose epochs start at the stimulus).
    tmin : float
        Time of the first sample, in seconds.
    """
    X = _check_epochs(X)
    n = X.shape[-1]
    if window is None:
        lo, hi = 0, n
    else:
        start, stop = window
        lo = 0 if start is None else int(round((start - tmin) * sfreq))
        hi = n if stop is None else int(round((stop - tmin) * sfreq)) + 1
        lo, hi = max(lo, 0), min(hi, n)
        if hi - lo < 1:
            raise DataValidationError(
                f"baseline window {window} s holds no sample of epochs spanning {tmin}..{tmin + (n - 1) / sfreq:.3f} s"
            )
    return (X - X[..., lo:hi].mean(axis=-1, keepdims=True)).astype(np.float32)


def resample(X, sfreq: float, new_sfreq: float, *, max_denominator: int = 1000) -> tuple[np.ndarray, float]:
    """Polyphase resampling (with its anti-alias filter) to ``new_sfreq``.

    Returns the resampled epochs and the exact new rate (the ratio is made
    rational with denominator at most ``max_denominator``).
    """
    X = _check_epochs(X)
    if new_sfreq <= 0:
        raise DataValidationError(f"new_sfreq must be positive; got {new_sfreq}")
    ratio = Fraction(float(new_sfreq) / float(sfreq)).limit_denominator(max_denominator)
    if ratio == 1:
        return X.astype(np.float32), float(sfreq)
    out = signal.resample_poly(X, ratio.numerator, ratio.denominator, axis=-1)
    return out.astype(np.float32), float(sfreq) * ratio.numerator / ratio.denominator


def peak_to_peak(X) -> np.ndarray:
    """Peak-to-peak amplitude of each epoch and channel, shape (n_epochs, n_channels)."""
    X = _check_epochs(X)
    return X.max(axis=-1) - X.min(axis=-1)


@dataclass
class RejectionReport:
    """What :func:`reject_by_peak_to_peak` removed."""

    threshold: float
    n_total: int
    n_rejected: int
    rejected_index: np.ndarray
    per_channel: dict[str, int] = field(default_factory=dict)

    @property
    def n_kept(self) -> int:
        return self.n_total - self.n_rejected

    def to_dict(self) -> dict[str, Any]:
        return {
            "threshold": self.threshold,
            "n_total": self.n_total,
            "n_rejected": self.n_rejected,
            "n_kept": self.n_kept,
            "rejected_index": self.rejected_index.tolist(),
            "per_channel": dict(self.per_channel),
        }


def reject_by_peak_to_peak(
    X, threshold: float, *, ch_names: Sequence[str] | None = None, picks: Sequence[int] | None = None
) -> tuple[np.ndarray, RejectionReport]:
    """Find artefact trials: any (picked) channel with peak-to-peak above ``threshold``.

    Parameters
    ----------
    X : array (n_epochs, n_channels, n_times)
    threshold : float
        In the unit of ``X`` (e.g. 150e-6 for 150 uV in volts, or 150 for data in uV).
    ch_names : sequence of str, optional
        Names used in the per-channel counts of the report.
    picks : sequence of int, optional
        Channels that are checked (all by default).

    Returns
    -------
    keep : ndarray of bool, shape (n_epochs,)
        True for trials that pass.
    report : RejectionReport
        Counts overall and per offending channel (a trial counts once for each
        channel above the threshold).
    """
    if threshold is None or not threshold > 0:
        raise DataValidationError(f"peak-to-peak threshold must be positive; got {threshold}")
    ptp = peak_to_peak(X)
    sel = np.arange(ptp.shape[1]) if picks is None else np.asarray(list(picks), dtype=int)
    bad = ptp[:, sel] > threshold
    keep = ~bad.any(axis=1)
    names = list(ch_names) if ch_names is not None else [str(i) for i in range(ptp.shape[1])]
    per_channel = {names[c]: int(bad[:, j].sum()) for j, c in enumerate(sel) if bad[:, j].any()}
    report = RejectionReport(float(threshold), int(len(keep)), int((~keep).sum()), np.flatnonzero(~keep), per_channel)
    if report.n_rejected:
        logger.info("peak-to-peak rejection: %d of %d trials above %g", report.n_rejected, report.n_total, threshold)
    return keep, report


class EEGRobustScaler(TransformerMixin, BaseEstimator):
    """Per-channel robust scaling of epochs: ``(x - median) / (1.4826 * MAD)``, then clipping.

    Statistics are computed per channel over all training trials and time
    points, so fit on the training trials only. Follows scikit-learn's
    transformer contract on arrays of shape (n_epochs, n_channels, n_times);
    ``get_state``/``from_state`` carry the fitted statistics in checkpoints.

    Parameters
    ----------
    clip : float or None
        Clip scaled values to ``[-clip, clip]`` (in robust standard
        deviations); 20 follows Defossez et al. (2023), who clamp robust-scaled
        M/EEG at 20. ``None`` disables clipping.
    center : bool
        Subtract the median.

    Attributes
    ----------
    median_, scale_ : ndarray, shape (n_channels,)
    n_channels_, n_times_ : int
    n_features_in_ : int
        ``n_channels_ * n_times_``.
    """

    def __init__(self, clip: float | None = 20.0, center: bool = True):
        self.clip = clip
        self.center = center

    def fit(self, X, y=None) -> "EEGRobustScaler":
        X = _check_epochs(X)
        if self.clip is not None and not self.clip > 0:
            raise DataValidationError(f"clip must be positive or None; got {self.clip}")
        per_ch = np.moveaxis(X, 1, 0).reshape(X.shape[1], -1)
        med = np.median(per_ch, axis=1)
        mad = np.median(np.abs(per_ch - med[:, None]), axis=1) * MAD_TO_SD
        fallback = per_ch.std(axis=1)
        scale = np.where(mad > 0, mad, np.where(fallback > 0, fallback, 1.0))
        self.median_ = med if self.center else np.zeros_like(med)
        self.scale_ = scale
        self.n_channels_, self.n_times_ = int(X.shape[1]), int(X.shape[2])
        self.n_features_in_ = self.n_channels_ * self.n_times_
        return self

    def transform(self, X) -> np.ndarray:
        check_is_fitted(self, "median_")
        X = _check_epochs(X)
        if X.shape[1] != self.n_channels_:
            raise DataValidationError(f"X has {X.shape[1]} channels; the scaler was fitted on {self.n_channels_}")
        Z = (X - self.median_[None, :, None]) / self.scale_[None, :, None]
        if self.clip is not None:
            Z = np.clip(Z, -self.clip, self.clip)
        return Z.astype(np.float32)

    def inverse_transform(self, Z) -> np.ndarray:
        check_is_fitted(self, "median_")
        Z = np.asarray(Z, dtype=np.float64)
        return (Z * self.scale_[None, :, None] + self.median_[None, :, None]).astype(np.float32)

    def get_state(self) -> dict[str, Any]:
        """Parameters and fitted statistics as JSON-serialisable values."""
        check_is_fitted(self, "median_")
        return {
            "params": self.get_params(),
            "median_": self.median_.tolist(),
            "scale_": self.scale_.tolist(),
            "n_times_": self.n_times_,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "EEGRobustScaler":
        """Rebuild a fitted scaler from :meth:`get_state` output."""
        obj = cls(**state["params"])
        obj.median_ = np.asarray(state["median_"], dtype=np.float64)
        obj.scale_ = np.asarray(state["scale_"], dtype=np.float64)
        obj.n_channels_ = len(obj.median_)
        obj.n_times_ = int(state["n_times_"])
        obj.n_features_in_ = obj.n_channels_ * obj.n_times_
        return obj


def normalize_trials(X) -> np.ndarray:
    """Z-score every trial and channel over its own time points (no statistics shared across trials)."""
    X = _check_epochs(X)
    mu = X.mean(axis=-1, keepdims=True)
    sd = X.std(axis=-1, keepdims=True)
    return ((X - mu) / np.where(sd > 0, sd, 1.0)).astype(np.float32)


class EpochPreprocessor(TransformerMixin, BaseEstimator):
    """Per-trial EEG preprocessing to a fixed length, as a scikit-learn transformer.

    Notch, band-pass, epoch-mean baseline, resampling, cropping to a fixed
    number of samples and per-trial z-scoring (:func:`normalize_trials`).
    Every step works on one trial at a time; the only thing ``fit`` learns
    is the output length (the shortest training epoch after resampling, or
    ``crop_s``), so fitting on the training trials of a split and
    transforming its test trials leaks nothing.

    Parameters
    ----------
    sfreq : float
        Sampling rate of the input epochs in Hz.
    l_freq, h_freq : float or None
        Band-pass edges in Hz (``None``: that side open).
    notch : float or None
        Line frequency in Hz (harmonics below Nyquist too).
    new_sfreq : float or None
        Resample to this rate (``None``: keep ``sfreq``).
    crop_s : float or None
        Keep the first ``crop_s`` seconds after resampling (``None``: all).
    normalize : bool
        Z-score each trial and channel.

    Attributes
    ----------
    sfreq_ : float
        Rate of the output.
    n_channels_, n_times_in_, n_times_ : int
        Channels, input and output samples per trial.
    """

    def __init__(
        self,
        sfreq: float,
        l_freq: float | None = 1.0,
        h_freq: float | None = 40.0,
        notch: float | None = 50.0,
        new_sfreq: float | None = 128.0,
        crop_s: float | None = None,
        normalize: bool = True,
    ):
        self.sfreq = sfreq
        self.l_freq = l_freq
        self.h_freq = h_freq
        self.notch = notch
        self.new_sfreq = new_sfreq
        self.crop_s = crop_s
        self.normalize = normalize

    def _steps(self, X: np.ndarray) -> tuple[np.ndarray, float]:
        X, _, rep = preprocess_epochs(X, float(self.sfreq), l_freq=self.l_freq, h_freq=self.h_freq,
                                      notch=self.notch, baseline="epoch", new_sfreq=self.new_sfreq)
        return X, rep.sfreq

    def fit(self, X, y=None) -> "EpochPreprocessor":
        """Check the settings and learn the output length from the training trials ``X``."""
        if not (self.sfreq and float(self.sfreq) > 0):
            raise DataValidationError(f"sfreq must be a positive rate in Hz; got {self.sfreq!r}")
        if self.crop_s is not None and not float(self.crop_s) > 0:
            raise DataValidationError(f"crop_s must be a positive number of seconds or None; got {self.crop_s!r}")
        X = _check_epochs(X)
        Z, sfreq = self._steps(X[:1])
        self.sfreq_ = float(sfreq)
        self.n_channels_, self.n_times_in_ = int(X.shape[1]), int(X.shape[2])
        n = Z.shape[-1]
        if self.crop_s is not None:
            want = int(round(float(self.crop_s) * self.sfreq_))
            if want > n:
                raise DataValidationError(
                    f"crop_s={self.crop_s} s is {want} samples at {self.sfreq_:g} Hz, but the epochs hold only {n}"
                )
            n = want
        self.n_times_ = int(n)
        return self

    def transform(self, X) -> np.ndarray:
        """Apply the per-trial steps and crop to ``n_times_`` samples."""
        check_is_fitted(self, "n_times_")
        X = _check_epochs(X)
        if X.shape[1:] != (self.n_channels_, self.n_times_in_):
            raise DataValidationError(
                f"X has epochs of shape {X.shape[1:]}; the preprocessor was fitted on "
                f"({self.n_channels_}, {self.n_times_in_}) (channels, times)"
            )
        Z, _ = self._steps(X)
        Z = Z[..., : self.n_times_]
        return normalize_trials(Z) if self.normalize else Z


@dataclass
class PreprocessReport:
    """Steps applied by :func:`preprocess_epochs`, the resulting rate, and the rejection counts."""

    steps: list[str]
    sfreq: float
    rejection: RejectionReport | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "steps": list(self.steps),
            "sfreq": self.sfreq,
            "rejection": None if self.rejection is None else self.rejection.to_dict(),
        }


def preprocess_epochs(
    X,
    sfreq: float,
    *,
    l_freq: float | None = None,
    h_freq: float | None = None,
    notch: float | Sequence[float] | None = None,
    reference: str | Sequence[int] | None = None,
    baseline: tuple[float | None, float | None] | str | None = None,
    tmin: float = 0.0,
    new_sfreq: float | None = None,
    reject_ptp: float | None = None,
    ch_names: Sequence[str] | None = None,
) -> tuple[np.ndarray, np.ndarray, PreprocessReport]:
    """Chain the preprocessing steps in a fixed, sensible order.

    Order: notch, band-pass, re-reference, baseline, peak-to-peak rejection
    (judged on the filtered signal, so slow drifts and DC offsets of raw
    consumer-headset data do not reject every trial, while blinks and
    movement still do), resampling. Steps left at ``None`` are skipped.
    Every step works trial by trial, so nothing here leaks across trials;
    robust scaling, which does fit statistics, is left to
    :class:`EEGRobustScaler` fitted on training trials.

    Parameters
    ----------
    baseline : (start, stop), "epoch" or None
        A window in seconds, ``"epoch"`` for the whole-epoch mean, or None.

    Returns
    -------
    X : ndarray (n_kept, n_channels, n_times') float32
    keep : ndarray of bool, shape (n_epochs,)
        Which input trials were kept (apply to the labels).
    report : PreprocessReport
    """
    X = _check_epochs(X)
    steps: list[str] = []
    rej = None
    keep = np.ones(len(X), dtype=bool)
    if notch is not None:
        X = notch_filter(X, sfreq, notch)
        steps.append(f"notch {notch} Hz")
    if l_freq is not None or h_freq is not None:
        X = bandpass_filter(X, sfreq, l_freq, h_freq)
        steps.append(f"bandpass {l_freq}-{h_freq} Hz")
    if reference is not None:
        X = rereference(X, reference)
        steps.append(f"reference {reference}")
    if baseline is not None:
        X = baseline_correct(X, sfreq, None if baseline == "epoch" else baseline, tmin=tmin)
        steps.append(f"baseline {baseline}")
    if reject_ptp is not None:
        keep, rej = reject_by_peak_to_peak(X, reject_ptp, ch_names=ch_names)
        X = X[keep]
        steps.append(f"reject_ptp>{reject_ptp:g}: {rej.n_rejected}/{rej.n_total} rejected")
        if len(X) == 0:
            raise DataValidationError(f"peak-to-peak threshold {reject_ptp:g} rejected all {rej.n_total} trials")
    if new_sfreq is not None:
        X, sfreq = resample(X, sfreq, new_sfreq)
        steps.append(f"resample to {sfreq:g} Hz")
    return np.asarray(X, dtype=np.float32), keep, PreprocessReport(steps, float(sfreq), rej)


def preprocess_raw(
    raw,
    *,
    l_freq: float | None = None,
    h_freq: float | None = None,
    notch: float | Sequence[float] | None = None,
    reference: str | Sequence[str] | None = None,
    new_sfreq: float | None = None,
    copy: bool = True,
):
    """Filter, notch, re-reference and resample a continuous MNE Raw with MNE's methods.

    Needs the optional extra ``cortexflow[eeg]`` (MNE). Only EEG channels are
    filtered by MNE's defaults for ``picks``; EOG and stim channels are left
    as they are except for resampling.

    Returns
    -------
    mne.io.Raw
        The processed copy (or ``raw`` itself with ``copy=False``).
    """

    require("mne", "preprocess_raw")
    raw = raw.copy() if copy else raw
    raw.load_data()
    if notch is not None:
        freqs = np.arange(notch, raw.info["sfreq"] / 2, notch) if np.isscalar(notch) else np.asarray(notch)
        raw.notch_filter(freqs, picks="eeg", verbose="error")
    if l_freq is not None or h_freq is not None:
        raw.filter(l_freq, h_freq, picks="eeg", verbose="error")
    if reference is not None:
        raw.set_eeg_reference(reference, projection=False, verbose="error")
    if new_sfreq is not None:
        raw.resample(new_sfreq, verbose="error")
    return raw
