"""Crell (BNCI 2024-001): synthetic recordings shaped like the public one, through the MOABB path."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from cortexflow.data.eeg import CRELL_LETTERS, epoch_crell_raw, load_crell
from cortexflow.exceptions import DataValidationError

SFREQ = 500.0
TRIAL_S = 3.0  # markers this far apart (the real paradigm has 8.5 s; shorter keeps the test small)
LEAD_S = 1.0
N_EEG, N_EOG = 60, 4


def _recording(letters, seed=0):
    """(n_samples, 64) microvolts: inside [marker, marker + 2 s) EEG channel 0 holds the letter's
    index + 1 and channel 1 a 10 Hz sine; after the fade-in window channel 0 jumps to 100."""
    rng = np.random.default_rng(seed)
    n = int((LEAD_S + TRIAL_S * len(letters) + 1.0) * SFREQ)
    data = rng.normal(0, 0.01, size=(n, N_EEG + N_EOG))
    onsets = []
    for k, letter in enumerate(letters):
        start = int((LEAD_S + k * TRIAL_S) * SFREQ)
        onsets.append(start)
        win = slice(start, start + int(2 * SFREQ))
        data[win, 0] = CRELL_LETTERS.index(letter) + 1
        data[win, 1] = np.sin(2 * np.pi * 10 * np.arange(int(2 * SFREQ)) / SFREQ)
        data[start + int(2 * SFREQ) : start + int(2.5 * SFREQ), 0] = 100.0
    return data, np.asarray(onsets)


def _raw_with_annotations(letters, *, names="letter"):
    mne = pytest.importorskip("mne")
    data, onsets = _recording(letters)
    ch_names = [f"EEG{i:02d}" for i in range(N_EEG)] + [f"EOG{i}" for i in range(1, N_EOG + 1)]
    info = mne.create_info(ch_names, SFREQ, ["eeg"] * N_EEG + ["eog"] * N_EOG)
    raw = mne.io.RawArray(data.T * 1e-6, info, verbose="error")
    desc = [f"letter_{c}" if names == "letter" else c for c in letters]
    raw.set_annotations(mne.Annotations(onsets / SFREQ, [3.0] * len(letters), desc))
    return raw


def test_epochs_from_annotations():
    letters = list(CRELL_LETTERS) + ["a", "v"]
    ep = epoch_crell_raw(_raw_with_annotations(letters))
    assert ep.data.shape == (12, N_EEG, 1000)  # EOG dropped, 2 s at 500 Hz
    assert ep.sfreq == SFREQ and ep.tmin == 0.0
    assert [CRELL_LETTERS[i] for i in ep.labels] == letters
    np.testing.assert_allclose(ep.data[:, 0, :].mean(axis=1), ep.labels + 1, atol=1e-2)  # only the fade-in window
    assert ep.metadata["event_source"] == "annotations" and ep.metadata["units"] == "uV"
    assert ep.n_dropped == 0


def test_plain_letter_names_eog_and_longer_window():
    ep = epoch_crell_raw(_raw_with_annotations(["d", "e"], names="plain"), include_eog=True, tmax=2.5)
    assert ep.data.shape == (2, N_EEG + N_EOG, 1250)
    assert ep.ch_names[-1] == "EOG4"
    assert ep.data[0, 0, -1] == pytest.approx(100.0, abs=0.1)  # the visible phase after the fade-in


def test_stim_channel_events_and_preprocessing():
    mne = pytest.importorskip("mne")
    letters = ["s", "t", "j", "o"]
    data, onsets = _recording(letters)
    stim = np.zeros((1, len(data)))
    stim[0, onsets] = [CRELL_LETTERS.index(c) + 1 for c in letters]  # MOABB's codes 1..10
    info = mne.create_info([f"EEG{i:02d}" for i in range(N_EEG)] + ["STI"], SFREQ, ["eeg"] * N_EEG + ["stim"])
    raw = mne.io.RawArray(np.vstack([data[:, :N_EEG].T * 1e-6, stim]), info, verbose="error")
    ep = epoch_crell_raw(raw, preprocess={"new_sfreq": 250.0})
    assert ep.metadata["event_source"] == "stim"
    assert ep.data.shape == (4, N_EEG, 500) and ep.sfreq == 250.0
    assert [CRELL_LETTERS[i] for i in ep.labels] == letters
    ep = epoch_crell_raw(raw, preprocess={"l_freq": 1.0, "h_freq": 40.0, "notch": 50.0, "reference": "average"})
    assert ep.data.shape == (4, N_EEG, 1000)
    # the 10 Hz sine of channel 1 survives a 1-40 Hz band-pass
    assert np.abs(ep.data[:, 1, 200:800]).max() > 0.5


def test_artefact_rejection_and_edge_trials():
    raw = _raw_with_annotations(["a", "d", "e"])
    raw._data[5, int((LEAD_S + TRIAL_S) * SFREQ) + 100] = 500e-6  # a 500 uV spike in trial 2
    ep = epoch_crell_raw(raw, reject_ptp=200.0)
    assert ep.n_epochs == 2 and ep.dropped["artefact"] == 1
    assert ep.metadata["rejection"]["per_channel"] == {"EEG05": 1}
    ep = epoch_crell_raw(raw, tmin=-0.5, tmax=5.0)  # the last trial runs past the end
    assert ep.dropped["edge_or_bad"] == 1 and ep.n_epochs == 2


def test_no_letter_events_is_an_error():
    mne = pytest.importorskip("mne")
    info = mne.create_info(["C3", "C4"], SFREQ, "eeg")
    raw = mne.io.RawArray(np.zeros((2, 1000)), info, verbose="error")
    raw.set_annotations(mne.Annotations([0.1], [0.1], ["BAD_blink"]))
    with pytest.raises(DataValidationError, match="neither letter annotations"):
        epoch_crell_raw(raw)


def test_moabb_loader_feeds_the_same_function(tmp_path, monkeypatch):
    """MOABB's real BNCI2024_001 code (mat reading, conversion to Raw, its annotation
    pipeline) on a synthetic subject file; only the download is replaced."""
    pytest.importorskip("mne")
    pytest.importorskip("moabb")
    import scipy.io

    from moabb.datasets.bnci import bnci_2024_001

    letters = ["v", "a", "n", "f"]
    runs = {}
    for r, name in enumerate(("round01_paradigm", "round02_paradigm")):
        data, onsets = _recording(letters[r:] + letters[:r], seed=r)
        t0 = 1000.0 + 500 * r
        times = t0 + np.arange(len(data)) / SFREQ
        markers, mtimes = [], []
        for onset, letter in zip(onsets, letters[r:] + letters[:r]):
            # paradigm markers: 100 + alphabet position, then 1 (fade-in starts) .. 4 (fade-out ends)
            for code, dt in ((100 + ord(letter) - ord("a"), 0.0), (1, 0.0), (2, 2.0), (3, 2.5), (4, 4.5)):
                markers.append(code)
                mtimes.append(times[onset] + dt)
        runs[name] = {
            "BrainVisionRDA_data": data, "BrainVisionRDA_time": times,
            "ParadigmMarker_data": np.asarray(markers, dtype=float), "ParadigmMarker_time": np.asarray(mtimes),
        }
    mat = tmp_path / "S01.mat"
    scipy.io.savemat(mat, runs)
    calls = []

    def fake_download(url, path=None, force_update=False, update_path=None, *a, **k):
        calls.append(url)
        return [str(mat)]

    monkeypatch.setattr(bnci_2024_001, "bnci_data_path", fake_download)
    monkeypatch.setenv("MOABB_DOWNLOAD_PROVIDER", "upstream")
    ep = load_crell([1], data_dir=tmp_path)
    assert calls and calls[0].endswith("001-2024/S01.mat")
    assert ep.n_epochs == 8 and ep.data.shape[1:] == (N_EEG, 1000)
    assert ep.groups.tolist() == [0] * 4 + [1] * 4
    assert [CRELL_LETTERS[i] for i in ep.labels[:4]] == letters
    np.testing.assert_allclose(ep.data[:, 0, :].mean(axis=1), ep.labels + 1, atol=1e-2)
    assert ep.metadata["event_source"] == "annotations"  # MOABB's letter_* annotations
    assert ep.ch_names[:3] == ("Fp1", "Fpz", "Fp2") and "EOG1" not in ep.ch_names
    assert ep.metadata["runs"] == [(1, "0", "0"), (1, "0", "1")]


def test_missing_extra_names_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "moabb", None)
    monkeypatch.setitem(sys.modules, "mne", None)
    with pytest.raises(ImportError, match=r"cortexflow\[eeg\]"):
        load_crell([1])
    with pytest.raises(ImportError, match=r"cortexflow\[eeg\]"):
        epoch_crell_raw(object())


def test_bad_subjects():
    pytest.importorskip("mne")
    pytest.importorskip("moabb")
    with pytest.raises(DataValidationError, match="subjects 1..20"):
        load_crell([0, 21])


def test_download_failure_is_reported(monkeypatch):
    pytest.importorskip("mne")
    pytest.importorskip("moabb")
    from moabb.datasets.bnci import bnci_2024_001

    from cortexflow.exceptions import CortexFlowError

    def offline(*a, **k):
        raise OSError("network is unreachable")

    monkeypatch.setattr(bnci_2024_001, "bnci_data_path", offline)
    monkeypatch.setenv("MOABB_DOWNLOAD_PROVIDER", "upstream")
    with pytest.raises(CortexFlowError, match=r"MOABB could not load BNCI 2024-001 subject\(s\) \[2\].*unreachable"):
        load_crell([2])
