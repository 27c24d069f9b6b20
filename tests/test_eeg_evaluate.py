"""Cross-validated EEG evaluation (``cortexflow eeg evaluate``), its preprocessing and its statistics."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from cortexflow.cli.main import cli
from cortexflow.data.eeg import EpochPreprocessor, format_mindbigdata_line, simulate_evoked_eeg
from cortexflow.data.stimuli import class_images
from cortexflow.benchmark.eeg import cross_validate_eeg, sign_flip_pvalue, summarize_eeg_cv
from cortexflow.exceptions import ConfigError, DataValidationError

TINY = {"hidden_dim": 32, "embed_dim": 16, "epochs": 3, "patience": 1, "batch_size": 8}


def _epochs(n_per_class=6, n_classes=3, seed=0):
    return simulate_evoked_eeg(n_per_class=n_per_class, class_names=tuple("012"[:n_classes]), ch_names=("FP1",),
                               sfreq=128.0, n_times=128, evoked_uv=40.0, seed=seed)


def test_preprocessor_works_trial_by_trial_and_fixes_the_length():
    ep = _epochs()
    prep = EpochPreprocessor(ep.sfreq, new_sfreq=64.0, crop_s=0.75).fit(ep.data[:10])
    assert (prep.sfreq_, prep.n_times_, prep.n_times_in_) == (64.0, 48, 128)
    Z = prep.transform(ep.data)
    assert Z.shape == (len(ep.data), 1, 48)
    np.testing.assert_allclose(Z[5], prep.transform(ep.data[5:6])[0], atol=1e-5)  # no trial sees another
    np.testing.assert_allclose(Z.mean(-1), 0, atol=1e-5)
    np.testing.assert_allclose(Z.std(-1), 1, atol=1e-4)
    with pytest.raises(DataValidationError, match="fitted on"):
        prep.transform(ep.data[:, :, :100])
    with pytest.raises(DataValidationError, match="crop_s=5"):
        EpochPreprocessor(ep.sfreq, crop_s=5).fit(ep.data)


def test_sign_flip_pvalue():
    rng = np.random.default_rng(0)
    assert sign_flip_pvalue(rng.normal(1.0, 0.5, 40), n_perm=2000) < 0.001
    assert sign_flip_pvalue(rng.normal(0.0, 1.0, 40), n_perm=2000) > 0.05
    assert sign_flip_pvalue(np.zeros(5)) == 1.0
    assert np.isnan(sign_flip_pvalue([]))


def test_cross_validation_rows_floor_and_pairing():
    ep = _epochs()
    images = class_images(ep.class_names)
    trials, fits = cross_validate_eeg(ep, images, frontends=["flatten"], n_folds=3, seeds=[3], config=TINY,
                                      progress=False)
    n = ep.n_epochs
    assert len(fits) == 3 * 2 and set(fits["labels"]) == {"true", "shuffled"} and set(fits["seed"]) == {3}
    assert len(trials) == n + n * 2  # the floor once, then each front-end x seed x condition
    for _, g in trials.groupby(["frontend", "labels", "seed"]):
        assert sorted(g["trial"]) == list(range(n))  # every trial tested exactly once
    # folds are stratified and shared by every fit
    folds = trials[trials["frontend"] == "mean-template"].groupby("fold")["label"].apply(lambda s: np.bincount(s))
    assert all(c.tolist() == [2, 2, 2] for c in folds)
    assert (trials.groupby("trial")["fold"].nunique() == 1).all()
    # the floor predicts the mean training image: two-way 0.5 on average in each fold, MSE as computed here
    floor = trials[trials["frontend"] == "mean-template"].sort_values("trial")
    assert np.allclose(floor.groupby("fold")["two_way"].mean(), 0.5)
    row = floor.iloc[0]
    train_labels = floor.loc[floor["fold"] != row["fold"], "label"].to_numpy()
    mean_img = images[train_labels].mean(axis=0)
    assert np.isclose(row["mse"], np.mean((mean_img - images[int(row["label"])]) ** 2), rtol=1e-5)
    summary = summarize_eeg_cv(trials, n_perm=500)
    assert {(r["frontend"], r["labels"]) for r in summary["rows"]} == {
        ("mean-template", "none"), ("flatten", "true"), ("flatten", "shuffled")}
    tw = [t for t in summary["tests"] if t["metric"] == "two_way"][0]
    assert tw["n"] == n and 0 < tw["permutation_p"] <= tw["permutation_p_holm"] <= 1
    assert tw["comparison"] == "true - shuffled"
    vs_floor = [t for t in summary["tests"] if t["comparison"] == "true - mean-template"]
    assert [t["metric"] for t in vs_floor] == ["mse"] and vs_floor[0]["n"] == n


def test_bad_arguments_fail_before_any_training():
    ep = _epochs(n_per_class=3)
    images = class_images(ep.class_names)
    with pytest.raises(ConfigError, match="smallest class"):
        cross_validate_eeg(ep, images, frontends=["flatten"], n_folds=4, config=TINY)
    with pytest.raises(ConfigError, match="allowed: flatten, shallow, eegnet"):
        cross_validate_eeg(ep, images, frontends=["bogus"], n_folds=3)
    with pytest.raises(ConfigError, match="patience"):
        cross_validate_eeg(ep, images, frontends=["flatten"], n_folds=3, config_overrides={"patience": 0})


def _mw_export(path, ep) -> None:
    """Write ``ep`` (one channel) as a MindBigData MW spreadsheet export, with a BOM and a blank row."""
    lines = []
    for i, (lab, x) in enumerate(zip(ep.labels, ep.data[:, 0, :])):
        head, _, rest = format_mindbigdata_line(i, i, "MW", "FP1", int(lab), np.round(x)).rpartition("\t")
        values = rest.split(",")
        lines.append(f'"{head}\t{values[0]}",' + ",".join(values[1:]))
    path.write_text("\ufeff" + "\n".join(lines) + "\n" + "," * (ep.n_times - 1) + "\n", encoding="utf-8")


def test_cli_evaluate_on_an_export_writes_strict_json(tmp_path):
    ep = _epochs(n_per_class=4)
    src = tmp_path / "MW-small.csv"
    _mw_export(src, ep)
    out = tmp_path / "run"
    args = ["eeg", "evaluate", "--dataset", str(src), "--frontends", "flatten", "--folds", "2", "--seeds", "1",
            "--resample", "64", "--out", str(out), "--no-progress"]
    args += [f"--set={k}={v}" for k, v in TINY.items()]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    assert "| flatten | true |" in res.stdout and "| flatten | shuffled |" in res.stdout
    summary = json.loads((out / "summary.json").read_text(), parse_constant=lambda c: pytest.fail(c))
    assert summary["settings"]["n_folds"] == 2 and summary["settings"]["preprocess"]["new_sfreq"] == 64.0
    assert summary["dataset"]["format"] == "mindbigdata-v1-spreadsheet" and summary["dataset"]["n_epochs"] == 12
    assert summary["command"].startswith("cortexflow ") or summary["command"] is None
    trials = pd.read_csv(out / "results.csv")
    assert len(trials) == 12 * 3 and (out / "summary.md").read_text().startswith("| front-end |")
    assert len(pd.read_csv(out / "fits.csv")) == 4
    # the four tables, and the per-fit records of the benchmark's result store
    assert sorted(p.name for p in out.iterdir()) == ["fits.csv", "results.csv", "runs", "summary.json", "summary.md"]
    assert len(list((out / "runs").glob("*.json"))) == 2 + 4  # the floor of each fold and the 4 fits
    assert summary["runs_computed"] == 6 and summary["runs_resumed"] == 0


def test_cli_evaluate_rejects_bad_options(tmp_path):
    runner = CliRunner()
    base = ["eeg", "evaluate", "--dataset", str(tmp_path / "none.csv"), "--out", str(tmp_path / "o")]
    res = runner.invoke(cli, base + ["--frontends", "flatten,bogus"])
    assert res.exit_code == 2 and "allowed: flatten, shallow, eegnet" in res.output
    res = runner.invoke(cli, base + ["--folds", "1"])
    assert res.exit_code == 2 and "--folds" in res.output
    res = runner.invoke(cli, base)
    assert res.exit_code == 2 and "none.csv" in res.output and "mindbigdata-mw-sample" in res.output
    assert "Traceback" not in res.output


def test_cli_simulate_runs(tmp_path):
    out = tmp_path / "sim.json"
    res = CliRunner().invoke(cli, ["eeg", "simulate", "--frontends", "flatten", "--seeds", "1", "--n-classes", "2",
                                   "--n-per-class", "8", "--set", "epochs=2", "--set", "hidden_dim=32",
                                   "--set", "embed_dim=16", "--out", str(out)])
    assert res.exit_code == 0, res.output
    rows = json.loads(out.read_text())
    assert [r["shuffle_labels"] for r in rows] == [False, True] and rows[0]["config"]["hidden_dim"] == 32
    assert "flatten   true" in res.stdout


def test_unwritable_output_fails_before_training(tmp_path):
    from cortexflow.benchmark.eeg import run_eeg_evaluation

    blocker = tmp_path / "file"
    blocker.write_text("mine")
    ep = _epochs(n_per_class=3)
    with pytest.raises(ConfigError, match="cannot create the output folder"):
        run_eeg_evaluation(ep, class_images(ep.class_names), blocker / "out", frontends=["flatten"], n_folds=3,
                           config=TINY)
    assert blocker.read_text() == "mine"
