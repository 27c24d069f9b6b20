"""Bad input to the benchmark: duplicate datasets, invalid run records, output folders, option checks, locks,
Markdown escaping, and the contract of methods that need the stimuli or report facts."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from cortexflow.baselines.mean_image import MeanImageDecoder
from cortexflow.benchmark.methods import register_method, unregister_method
from cortexflow.benchmark.runner import BenchmarkConfig, build_tasks, run_benchmark
from cortexflow.benchmark.store import ResultStore
from cortexflow.benchmark.tasks import run_task
from cortexflow.cli.main import cli
from cortexflow.exceptions import ConfigError


def _write_dataset(path: Path, n_train: int = 12, n_test: int = 4, p: int = 20, seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    stims = rng.uniform(0, 1, size=(n_train + n_test, 28 * 28)).astype(np.float32)
    X = stims @ rng.normal(size=(28 * 28, p)) / 28 + 0.1 * rng.normal(size=(n_train + n_test, p))
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, fmriTrn=X[:n_train].astype(np.float32), stimTrn=stims[:n_train],
             fmriTest=X[n_train:].astype(np.float32), stimTest=stims[n_train:])
    return str(path)


@pytest.fixture()
def dataset(tmp_path) -> str:
    return _write_dataset(tmp_path / "toy.npz")


@pytest.fixture()
def fits():
    """Registers ``counting-mean`` (the mean image, counting its fits)."""
    calls: list[int] = []

    class Counting(MeanImageDecoder):
        def fit(self, X, Y):
            calls.append(len(X))
            return super().fit(X, Y)

    register_method("counting-mean", lambda seed, ds, n, fast=False: Counting(random_state=seed), overwrite=True)
    yield calls
    unregister_method("counting-mean")


def _run(dataset, out, methods="counting-mean", report=True, **kw):
    cfg = BenchmarkConfig(dataset, methods, kw.pop("splits", "official"), kw.pop("n_folds", 3), kw.pop("seeds", 1),
                          out, **kw)
    return run_benchmark(cfg, progress=False, report=report)


# ------------------------------------------------------------- datasets
def test_same_dataset_twice_is_refused(dataset, tmp_path, fits):
    with pytest.raises(ConfigError, match="listed twice"):
        _run(f"{dataset},{dataset}", tmp_path / "o")
    r = CliRunner().invoke(cli, ["benchmark", "--datasets", "vangerven,vangerven", "--methods", "mean-image",
                                 "--out", str(tmp_path / "v")])
    assert r.exit_code == 2 and "listed twice" in r.output and "Traceback" not in r.output
    assert fits == []


def test_files_with_the_same_stem_get_unique_names(tmp_path, fits):
    a = _write_dataset(tmp_path / "d1" / "data.npz", seed=1)
    b = _write_dataset(tmp_path / "d2" / "data.npz", seed=2)
    res = _run(f"{a},{b}", tmp_path / "o", methods="counting-mean,mean-image", reference="mean-image")
    assert res["computed"] == 4
    df = pd.read_csv(tmp_path / "o" / "results.csv")
    assert set(df["dataset"]) == {"d1/data", "d2/data"}
    assert len(df) == 2 * 2 * 4 and not df.duplicated(["dataset", "method", "seed", "image"]).any()
    assert (tmp_path / "o" / "figures" / "grid_d1_data.png").is_file()
    assert "d2/data" in (tmp_path / "o" / "summary.md").read_text()


# --------------------------------------------------------- run records
@pytest.mark.parametrize("corrupt", ["mse-text", "no-rows", "json-list", "garbage-npz", "missing-npz"])
def test_invalid_run_records_are_recomputed_with_a_warning(dataset, tmp_path, fits, caplog, corrupt):
    out = tmp_path / "o"
    _run(dataset, out, report=False)
    (task,) = build_tasks(BenchmarkConfig(dataset, "counting-mean", seeds=1)).tasks
    store = ResultStore(out)
    rec = json.loads(store.json_path(task).read_text())
    if corrupt == "mse-text":
        rec["rows"][0]["mse"] = "abc"
        store.json_path(task).write_text(json.dumps(rec))
    elif corrupt == "no-rows":
        rec["rows"] = []
        store.json_path(task).write_text(json.dumps(rec))
    elif corrupt == "json-list":
        store.json_path(task).write_text("[1, 2]")
    elif corrupt == "garbage-npz":
        store.npz_path(task).write_bytes(b"not a zip file at all")
    else:
        store.npz_path(task).unlink()
    with caplog.at_level(logging.INFO, logger="cortexflow.benchmark.store"):
        res = _run(dataset, out)
    assert res["computed"] == 1 and len(fits) == 2
    assert "recomputed" in caplog.text
    df = pd.read_csv(out / "results.csv")
    assert len(df) == 4 and pd.api.types.is_float_dtype(df["mse"])


def test_a_folder_where_results_csv_goes_is_an_error_before_any_work(dataset, tmp_path, fits):
    (tmp_path / "o" / "results.csv").mkdir(parents=True)
    with pytest.raises(ConfigError, match=r"results.csv is a folder"):
        _run(dataset, tmp_path / "o")
    assert fits == []


def test_an_output_folder_that_cannot_be_created_or_written_is_an_error_before_any_work(dataset, tmp_path, fits):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match="output folder"):
        _run(dataset, blocker / "out")
    if os.geteuid() != 0:  # root writes anywhere
        ro = tmp_path / "ro"
        (ro / "runs").mkdir(parents=True)
        ro.chmod(0o500)
        try:
            with pytest.raises(ConfigError, match="not writable"):
                _run(dataset, ro)
        finally:
            ro.chmod(0o700)
    assert fits == []


# ------------------------------------------------------ options, up front
@pytest.mark.parametrize("args, message", [
    (["--split-seed", "-1"], "--split-seed -1 must be an integer >= 0"),
    (["--threads", "-1"], "--threads"),
    (["--seeds", "0"], "--seeds 0 must be at least 1"),
    (["--jobs", "0"], "--jobs 0 must be an integer >= 1"),
    (["--split", "kfold", "--folds", "1"], "--folds 1 must be an integer >= 2"),
    (["--set", "ridge:foo=1"], "method 'ridge' has no option 'foo'; its options: alphas, cv"),
    (["--set", "ridge"], "is not METHOD:KEY=VALUE"),
    (["--methods", "rigde"], "did you mean ridge?"),
    (["--reference", "bogus"], "unknown method 'bogus'"),
])
def test_bad_options_fail_cleanly_before_any_work(dataset, tmp_path, args, message):
    base = ["benchmark", "--datasets", dataset, "--methods", "ridge", "--out", str(tmp_path / "o"), "--no-progress"]
    if "--methods" in args:
        base = base[:3] + base[5:]
    r = CliRunner().invoke(cli, base + args)
    assert r.exit_code == 2, r.output
    assert message in r.output and "Traceback" not in r.output
    assert not (tmp_path / "o" / "runs").exists() or not list((tmp_path / "o" / "runs").iterdir())


def test_set_and_the_deprecated_option_flag(dataset, tmp_path):
    r = CliRunner().invoke(cli, ["benchmark", "--datasets", dataset, "--methods", "ridge", "--set", "ridge:cv=3",
                                 "--out", str(tmp_path / "a"), "--no-progress"])
    assert r.exit_code == 0, r.output
    rec = json.loads(next((tmp_path / "a" / "runs").glob("*.json")).read_text())
    assert rec["task"]["options"] == [["cv", 3]]
    r = CliRunner().invoke(cli, ["benchmark", "--datasets", dataset, "--methods", "ridge", "--option",
                                 "ridge:cv=3", "--out", str(tmp_path / "a"), "--no-progress"])
    assert r.exit_code == 0 and "0 computed" in r.output  # the same run, resumed
    assert "--option is deprecated; use --set METHOD:KEY=VALUE" in r.output
    assert "--option" not in CliRunner().invoke(cli, ["benchmark", "--help"]).output  # hidden


def test_methods_list():
    r = CliRunner().invoke(cli, ["methods", "list", "--json"])
    assert r.exit_code == 0, r.output
    rows = {m["name"]: m for m in json.loads(r.output)}
    names = lambda row: [o["name"] for o in row["options"]]  # noqa: E731
    assert names(rows["ridge"]) == ["alphas", "cv"] and rows["mean-image"]["options"] == []
    assert rows["cccv1"]["batched"] and "epochs" in names(rows["cccv1"])
    assert rows["cccv1-semantic"]["extra"] == "semantic" and not rows["cccv1-semantic"]["in_all"]
    # typed options: the prior methods show their real options, not "any keyword"
    knn = next(o for o in rows["ridge-prior"]["options"] if o["name"] == "knn")
    assert knn["type"] == "int" and knn["default"] == 10 and knn["min"] == 1 and knn["help"]
    decoding = next(o for o in rows["cccv1-prior"]["options"] if o["name"] == "decoding")
    assert decoding["choices"] == ["hybrid", "prior", "corpus-knn"]
    assert rows["ridge-prior"]["needs"] == ["guard", "prior"] and rows["ridge-prior"]["checkpoint_kind"] == "ridge-prior"
    r = CliRunner().invoke(cli, ["methods", "list"])
    assert r.exit_code == 0 and "options (--set ridge:KEY=VALUE):" in r.output
    assert "any keyword" not in r.output and "knn (int >=1; default 10)" in r.output


def test_deterministic_algorithms_are_restored(dataset, tmp_path):
    assert not torch.are_deterministic_algorithms_enabled()
    _run(dataset, tmp_path / "o", methods="mean-image", deterministic=True, report=False)
    assert not torch.are_deterministic_algorithms_enabled()
    assert "CORTEXFLOW_DETERMINISTIC" not in os.environ


# ---------------------------------------------------------------- locks
@pytest.mark.parametrize("owner", ["dead", "reused-pid"])
def test_a_stale_lock_is_taken_over(dataset, tmp_path, fits, owner):
    (task,) = build_tasks(BenchmarkConfig(dataset, "counting-mean", seeds=1)).tasks
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)" if owner != "dead" else "pass"])
    if owner == "dead":
        proc.wait()
    store = ResultStore(tmp_path / "o")
    store.runs.mkdir(parents=True)
    # a reused pid: alive, but started at another time than the lock says
    store.lock_path(task).write_text(str(proc.pid) if owner == "dead" else f"{proc.pid} 1")
    try:
        assert _run(dataset, tmp_path / "o", report=False)["computed"] == 1
    finally:
        proc.kill()
        proc.wait()
    assert not store.lock_path(task).exists()


def test_a_run_locked_by_another_benchmark_is_waited_for_not_recomputed(dataset, tmp_path, fits, caplog):
    cfg = BenchmarkConfig(dataset, "counting-mean", seeds=2, out=tmp_path / "o")
    other_task = build_tasks(cfg).tasks[1]
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    store = ResultStore(tmp_path / "o")
    store.runs.mkdir(parents=True)
    store.lock_path(other_task).write_text(str(other.pid))

    def the_other_benchmark_finishes():
        time.sleep(1.5)
        ResultStore(tmp_path / "o").save(run_task(other_task))
        other.kill()

    th = threading.Thread(target=the_other_benchmark_finishes)
    try:
        th.start()
        with caplog.at_level(logging.WARNING, logger="cortexflow.benchmark.store"):
            res = run_benchmark(cfg, progress=False, report=False)
    finally:
        th.join()
        other.kill()
        other.wait()
    assert "waiting for 1 run(s) being computed by another benchmark" in caplog.text
    assert str(other.pid) in caplog.text
    assert res["computed"] == 1 and len(fits) == 2  # one here, one by "the other benchmark"
    assert len(pd.read_csv(tmp_path / "o" / "results.csv")) == 2 * 4


# ------------------------------------------------------- report escaping
def test_summary_md_escapes_names(tmp_path):
    data = _write_dataset(tmp_path / "my|data_set.npz")
    name = "pipe|star*"
    register_method(name, lambda seed, ds, n, fast=False: MeanImageDecoder(random_state=seed), overwrite=True)
    try:
        _run(data, tmp_path / "o", methods=f"{name},mean-image", reference="mean-image")
    finally:
        unregister_method(name)
    md = (tmp_path / "o" / "summary.md").read_text()
    assert "pipe\\|star\\*" in md and "my\\|data\\_set" in md
    table = [line for line in md.splitlines() if line.startswith("| pipe") and "±" in line]
    assert table and all(line.replace("\\|", "").count("|") == 9 for line in table)  # 8 cells, no extra column
    assert "pipe|star*" in (tmp_path / "o" / "report.html").read_text()


# -------------------------------------- stimuli and report facts of a method
class _PriorLike(MeanImageDecoder):
    """Stands in for an image-prior method: sees every stimulus, reports facts about its fit."""

    def __init__(self, stimuli=None, random_state=None):
        super().__init__(random_state=random_state)
        self.stimuli = stimuli

    def fit(self, X, Y):
        super().fit(X, Y)
        s = self.stimuli
        self.report_info_ = {"prior corpus": "toy-corpus", "near-duplicates dropped": int(len(s) // 4),
                             "stimuli seen": f"{s.shape} {s.dtype} [{s.min():.0f}, {s.max():.0f}]",
                             "training rows": len(X)}
        return self


def test_methods_that_need_stimuli_get_them_and_their_report_facts_are_shown(dataset, tmp_path):
    got = []

    def factory(seed, ds, n, fast=False, stimuli=None):
        got.append(stimuli)
        return _PriorLike(stimuli=stimuli, random_state=seed)

    register_method("prior-like", factory, needs_stimuli=True, overwrite=True)
    try:
        _run(dataset, tmp_path / "o", methods="prior-like,mean-image", splits="official,kfold", reference="mean-image")
    finally:
        unregister_method("prior-like")
    assert len(got) == 4  # official + 3 folds
    for s in got:  # every stimulus of the dataset, train and test, whatever the split
        assert s.shape == (16, 28, 28) and s.dtype == np.float32 and 0 <= s.min() and s.max() <= 1
    recs = [json.loads(p.read_text()) for p in (tmp_path / "o" / "runs").glob("*.json")]
    infos = [r["report_info"] for r in recs if r["task"]["method"] == "prior-like"]
    assert infos and all(i["prior corpus"] == "toy-corpus" and i["near-duplicates dropped"] == 4 for i in infos)
    assert all(r["report_info"] == {} for r in recs if r["task"]["method"] == "mean-image")
    md = (tmp_path / "o" / "summary.md").read_text()
    assert "## Method notes" in md and "near-duplicates dropped: 4, prior corpus: toy-corpus" in md
    rows = sorted({i["training rows"] for i in infos})
    assert len(rows) > 1 and f"training rows: {rows[0]} to {rows[-1]}" in md  # a varying number: its range, once
    assert md.count("prior corpus: toy-corpus") == 1  # one line per data set, not one per run
    html = (tmp_path / "o" / "report.html").read_text()
    assert "Method notes" in html and "prior corpus: toy-corpus" in html
    meta = json.loads((tmp_path / "o" / "benchmark.json").read_text())
    assert list(meta["method_info"]) == ["prior-like"]
