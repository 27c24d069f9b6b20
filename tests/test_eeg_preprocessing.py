"""EEG preprocessing: filters, reference, baseline, resampling, robust scaling, rejection."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone

from cortexflow.data.eeg import (
    EEGRobustScaler,
    bandpass_filter,
    baseline_correct,
    notch_filter,
    preprocess_epochs,
    preprocess_raw,
    reject_by_peak_to_peak,
    rereference,
    resample,
)
from cortexflow.exceptions import DataValidationError

FS = 128.0


def _sines(freqs_amps, n_epochs=3, n_channels=2, n_times=256):
    t = np.arange(n_times) / FS
    x = sum(a * np.sin(2 * np.pi * f * t) for f, a in freqs_amps)
    return np.tile(x, (n_epochs, n_channels, 1))


def _amp(x, f):
    spec = np.abs(np.fft.rfft(x, axis=-1)) / (x.shape[-1] / 2)
    return spec[..., int(round(f * x.shape[-1] / FS))].mean()


def test_bandpass_keeps_passband_and_removes_the_rest():
    X = _sines([(2.0, 1.0), (10.0, 1.0), (50.0, 1.0)])
    Y = bandpass_filter(X, FS, 5.0, 30.0)
    assert Y.dtype == np.float32 and Y.shape == X.shape
    assert _amp(Y[..., 32:-32], 10.0) == pytest.approx(1.0, abs=0.1)
    assert _amp(Y, 50.0) < 0.05 and _amp(Y, 2.0) < 0.2
    assert _amp(bandpass_filter(X, FS, None, 20.0), 50.0) < 0.05  # low-pass only
    with pytest.raises(DataValidationError, match="Nyquist"):
        bandpass_filter(X, FS, 1.0, 70.0)
    with pytest.raises(DataValidationError, match="below"):
        bandpass_filter(X, FS, 30.0, 5.0)


def test_notch_removes_line_noise_and_harmonics():
    fs = 256.0
    t = np.arange(512) / fs
    X = np.tile(np.sin(2 * np.pi * 50 * t) + np.sin(2 * np.pi * 100 * t) + np.sin(2 * np.pi * 20 * t), (2, 1, 1))
    Y = notch_filter(X, fs, 50.0)
    spec = np.abs(np.fft.rfft(Y[0, 0, 64:-64])) / (384 / 2)
    f = np.fft.rfftfreq(384, 1 / fs)
    assert spec[np.argmin(abs(f - 50))] < 0.1 and spec[np.argmin(abs(f - 100))] < 0.1
    assert spec[np.argmin(abs(f - 20))] > 0.8


def test_average_reference_and_channel_reference():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(4, 5, 50)) + 7.0
    Y = rereference(X)
    np.testing.assert_allclose(Y.mean(axis=1), 0, atol=1e-5)
    Z = rereference(X, [0])
    np.testing.assert_allclose(Z[:, 0], 0, atol=1e-6)
    with pytest.raises(DataValidationError, match="at least 2 channels"):
        rereference(X[:, :1])
    with pytest.raises(DataValidationError, match="out of range"):
        rereference(X, [9])


def test_baseline_windows():
    X = np.ones((2, 3, 100)) * np.arange(100)
    np.testing.assert_allclose(baseline_correct(X, 100.0).mean(axis=-1), 0, atol=1e-4)
    Y = baseline_correct(X, 100.0, (None, 0.0), tmin=-0.2)  # samples 0..20 are the baseline
    np.testing.assert_allclose(Y[..., :21].mean(axis=-1), 0, atol=1e-4)
    with pytest.raises(DataValidationError, match="holds no sample"):
        baseline_correct(X, 100.0, (5.0, 6.0))


def test_resample_rate_and_length():
    X = _sines([(5.0, 1.0)], n_times=256)
    Y, fs = resample(X, FS, 64.0)
    assert fs == 64.0 and Y.shape == (3, 2, 128)
    assert _amp(Y, 5.0 * 2) == pytest.approx(1.0, abs=0.05)  # same tone: bin index doubles at half rate
    Y, fs = resample(np.zeros((1, 1, 1000)), 500.0, 220.0)
    assert fs == 220.0 and Y.shape[-1] == 440


def test_peak_to_peak_rejection_counts():
    X = np.zeros((5, 3, 20))
    X[1, 2, 5] = 300.0
    X[3, 0, 0], X[3, 1, 0] = 500.0, -500.0
    keep, rep = reject_by_peak_to_peak(X, 200.0, ch_names=["Fz", "Cz", "Pz"])
    assert keep.tolist() == [True, False, True, False, True]
    assert rep.n_rejected == 2 and rep.n_kept == 3 and rep.rejected_index.tolist() == [1, 3]
    assert rep.per_channel == {"Fz": 1, "Cz": 1, "Pz": 1}
    keep, rep = reject_by_peak_to_peak(X, 200.0, picks=[2])
    assert rep.n_rejected == 1
    with pytest.raises(DataValidationError, match="positive"):
        reject_by_peak_to_peak(X, 0)


def test_robust_scaler_fits_on_training_trials_only():
    rng = np.random.default_rng(0)
    train = rng.normal(5.0, 2.0, size=(40, 3, 64))
    train[0, 0, 0] = 1e6  # an outlier barely moves median/MAD
    sc = EEGRobustScaler(clip=5.0).fit(train)
    np.testing.assert_allclose(sc.median_, 5.0, atol=0.1)
    np.testing.assert_allclose(sc.scale_, 2.0, rtol=0.05)
    test = rng.normal(50.0, 2.0, size=(3, 3, 64))  # shifted test data must not change the statistics
    before = sc.median_.copy()
    Z = sc.transform(test)
    np.testing.assert_array_equal(sc.median_, before)
    assert Z.max() == pytest.approx(5.0)  # clipped
    Z = sc.transform(train)
    assert abs(np.median(Z)) < 0.05 and Z.max() <= 5.0
    again = EEGRobustScaler.from_state(sc.get_state())
    np.testing.assert_array_equal(again.transform(test), sc.transform(test))
    np.testing.assert_allclose(again.inverse_transform(again.transform(train[1:2]))[0], train[1], rtol=1e-5)
    assert clone(sc).get_params() == {"clip": 5.0, "center": True}
    with pytest.raises(DataValidationError, match="channels"):
        sc.transform(test[:, :2])
    flat = EEGRobustScaler().fit(np.zeros((2, 1, 4)))  # a flat channel does not divide by zero
    assert np.all(np.isfinite(flat.transform(np.ones((1, 1, 4)))))


def test_preprocess_epochs_chain_and_report():
    rng = np.random.default_rng(1)
    X = rng.normal(0, 10, size=(6, 4, 256))
    X[2, 1] += 500.0 * np.exp(-((np.arange(256) - 100) / FS) ** 2 / (2 * 0.08**2))  # a blink-like artefact
    X += 4000.0 + np.linspace(0, 300, 256)  # DC offset and drift of raw headset data: not artefacts
    Y, keep, rep = preprocess_epochs(
        X, FS, l_freq=1.0, h_freq=30.0, notch=50.0, reference="average", baseline="epoch",
        new_sfreq=64.0, reject_ptp=300.0, ch_names=["a", "b", "c", "d"],
    )
    assert Y.shape == (5, 4, 128) and keep.tolist() == [True, True, False, True, True, True]
    assert rep.sfreq == 64.0 and rep.rejection.n_rejected == 1 and len(rep.steps) == 6
    assert rep.to_dict()["rejection"]["per_channel"] == {"b": 1}
    with pytest.raises(DataValidationError, match="rejected all"):
        preprocess_epochs(X, FS, reject_ptp=1e-3)
    with pytest.raises(DataValidationError, match="expected"):
        preprocess_epochs(X[0], FS)
    bad = X.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(DataValidationError, match="NaN"):
        preprocess_epochs(bad, FS)


def test_preprocess_raw_with_mne():
    mne = pytest.importorskip("mne")
    sfreq = 500.0
    t = np.arange(5000) / sfreq
    data = np.vstack([np.sin(2 * np.pi * 50 * t) + np.sin(2 * np.pi * 8 * t)] * 3) * 1e-6
    raw = mne.io.RawArray(data, mne.create_info(["C3", "Cz", "C4"], sfreq, "eeg"), verbose="error")
    out = preprocess_raw(raw, l_freq=1.0, h_freq=40.0, notch=50.0, new_sfreq=250.0)
    assert out.info["sfreq"] == 250.0 and raw.info["sfreq"] == sfreq  # a copy
    x = out.get_data()[0, 250:-250]
    spec = np.abs(np.fft.rfft(x)) / (len(x) / 2)
    f = np.fft.rfftfreq(len(x), 1 / 250.0)
    assert spec[np.argmin(abs(f - 50))] < 0.05e-6 and spec[np.argmin(abs(f - 8))] > 0.8e-6
    ref = preprocess_raw(raw, reference="average")
    np.testing.assert_allclose(ref.get_data().mean(axis=0), 0, atol=1e-12)
