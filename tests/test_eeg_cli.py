"""``cortexflow eeg``: raw recordings to dataset files that load_dataset reads."""

from __future__ import annotations

import json

import numpy as np
import pytest
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


def test_reref_rejects_unknown_values_and_old_flags_are_gone(tmp_path):
    src = tmp_path / "MindBigData-EP-v1.0.txt"
    _epoc_file(src, n_per_digit=1)
    runner = CliRunner()
    res = runner.invoke(cli, ["eeg", "mindbigdata", str(src), "--out", str(tmp_path / "a.npz"), "--reref", "bogus"])
    assert res.exit_code == 2 and "'bogus' is not one of 'average', 'none'" in res.output
    for old in (["--reference", "average"], ["--device", "EP"]):
        res = runner.invoke(cli, ["eeg", "mindbigdata", str(src), "--out", str(tmp_path / "a.npz"), *old])
        assert res.exit_code == 2 and f"No such option {old[0]}" in res.output.replace("'", "").replace(":", "")
    res = runner.invoke(cli, ["eeg", "crell", "--out", str(tmp_path / "c.npz"), "--reref", "bogus"])
    assert res.exit_code == 2 and "'average', 'none'" in res.output


def test_headset_flag_selects_the_device(tmp_path):
    src = tmp_path / "MindBigData-EP-v1.0.txt"
    _epoc_file(src, n_per_digit=2)
    out = tmp_path / "ep.npz"
    res = CliRunner().invoke(cli, ["eeg", "mindbigdata", str(src), "--headset", "ep", "--out", str(out),
                                   "--test-fraction", "0.5"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["device"] == "EP"
    res = CliRunner().invoke(cli, ["eeg", "mindbigdata", str(src), "--headset", "MW", "--out", str(out), "--overwrite"])
    assert res.exit_code == 2 and "no complete event" in res.output


def test_benchmark_hint_names_flags_and_methods_that_exist(tmp_path):
    from cortexflow.cli.benchmark import benchmark
    from cortexflow.benchmark.methods import list_methods
    from cortexflow.cli.eeg import benchmark_hint

    hint = benchmark_hint(tmp_path / "x.npz", 14, 64.0).split()
    flags = {opt for p in benchmark.params for opt in p.opts}
    used = {w for w in hint if w.startswith("--")}
    assert used and used <= flags, used - flags
    methods = hint[hint.index("--methods") + 1].split(",")
    assert set(methods) <= set(list_methods()), set(methods) - set(list_methods())
    values = [hint[i + 1] for i, w in enumerate(hint) if w == "--set"]
    assert {v.split(":")[0] for v in values} == {"cccv1-eeg-eegnet", "cccv1-eeg-shallow", "cccv1-eeg-flatten"}


def test_registered_recording_to_dataset_file(data_dir, tmp_path):
    if not (data_dir / "mindbigdata_raw" / "MW-sample.csv").is_file():
        pytest.skip("MW-sample.csv not in the data folder")
    out = tmp_path / "mw.npz"
    res = CliRunner().invoke(cli, ["eeg", "mindbigdata", "mindbigdata-mw-sample", "--data-dir", str(data_dir),
                                   "--resample", "128", "--out", str(out)])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["n_epochs"] == 174 and summary["n_channels"] == 1 and summary["n_times"] == 238
    assert summary["format"] == "mindbigdata-v1-spreadsheet" and "123 of 174" in summary["size_mismatch"]
    assert not any("reference" in s for s in summary["preprocessing"])  # one channel: no re-referencing
    assert load_dataset(out).X_train.shape[1] == 238
