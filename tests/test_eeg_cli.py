"""``cortexflow eeg``: raw recordings to dataset files that load_dataset reads."""

from __future__ import annotations

import json

import numpy as np
from click.testing import CliRunner

from cortexflow.cli.main import cli
from cortexflow.data import load_dataset
from cortexflow.data.eeg import MINDBIGDATA_DEVICES, simulate_evoked_eeg


def _epoc_file(path, n_per_digit=3, seed=0):
    """A MindBigData EPOC file: events of digits 0..9 (values around 4200, size 260) and one random event."""
    rng = np.random.default_rng(seed)
    lines, line_id, event = [], 1, 100
    for k in range(n_per_digit):
        for code in list(range(10)) + ([-1] if k == 0 else []):
            for ch in MINDBIGDATA_DEVICES["EP"].channels:
                vals = 4200 + 20 * rng.standard_normal(260) + np.linspace(0, 40, 260)
                lines.append(f"{line_id}\t{event}\tEP\t{ch}\t{code}\t260\t" + ",".join(f"{v:.6f}" for v in vals))
                line_id += 1
            event += 1
    path.write_text("\n".join(lines) + "\n")


def test_mindbigdata_command_writes_a_dataset(tmp_path):
    src = tmp_path / "MindBigData-EP-v1.0.txt"
    _epoc_file(src)
    out = tmp_path / "mbd.npz"
    res = CliRunner().invoke(cli, ["eeg", "mindbigdata", str(src), "--out", str(out), "--resample", "64",
                                   "--reject", "500", "--test-fraction", "0.34"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output)
    assert summary["n_epochs"] == 30 and summary["dropped"] == {"random": 1}
    assert summary["n_channels"] == 14 and summary["n_times"] == 130 and summary["sfreq"] == 64.0
    assert "cccv1-eeg-eegnet:n_channels=14" in summary["benchmark"]
    ds = load_dataset(out)
    assert ds.X_train.shape == (19, 14 * 130) and ds.X_test.shape == (11, 14 * 130)
    assert ds.Y_train.shape == (19, 28, 28) and set(ds.labels_test.tolist()) <= set(range(10))


def test_crell_command_wiring(tmp_path, monkeypatch):
    import cortexflow.data.eeg.crell as crell

    seen = {}

    def fake_load(subjects, **kw):
        seen.update(kw, subjects=subjects)
        return simulate_evoked_eeg(n_per_class=3, class_names=crell.CRELL_LETTERS, n_times=50, seed=1)

    monkeypatch.setattr(crell, "load_crell", fake_load)
    out = tmp_path / "crell.npz"
    res = CliRunner().invoke(cli, ["eeg", "crell", "--subjects", "1,3", "--out", str(out), "--notch", "0",
                                   "--resample", "250", "--tmax", "2.5"])
    assert res.exit_code == 0, res.output
    assert seen["subjects"] == [1, 3] and seen["tmax"] == 2.5
    assert seen["preprocess"] == {"l_freq": 1.0, "h_freq": 40.0, "reference": "average", "new_sfreq": 250.0}
    assert load_dataset(out).X_train.shape[1] == 14 * 50


def test_stimuli_command(tmp_path):
    res = CliRunner().invoke(cli, ["eeg", "stimuli", "--classes", "letters", "--out", str(tmp_path / "l.png")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "l.png").stat().st_size > 1000
