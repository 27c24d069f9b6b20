"""Benchmark protocol: splits, task keys, resumable results store, batched hook, backends, CLI and report."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from cortexflow.baselines.mean_image import MeanImageDecoder
from cortexflow.benchmark import executors as executors_mod
from cortexflow.benchmark.executors import BACKENDS, Executor, register_backend
from cortexflow.benchmark.methods import register_method, unregister_method
from cortexflow.benchmark.runner import BenchmarkConfig, build_tasks, execute, run_benchmark
from cortexflow.benchmark.store import ResultStore
from cortexflow.benchmark.tasks import load_task_data, run_task, task_rows
from cortexflow.evaluation.metrics import two_way_identification
from cortexflow.exceptions import ChecksumError, ConfigError


def _cfg(datasets, methods="all", splits="official", n_folds=10, seeds=3, out="unused", **kw) -> BenchmarkConfig:
    return BenchmarkConfig(datasets, methods, splits, n_folds, seeds, out, **kw)


def _plan(*args, **kw):
    return build_tasks(_cfg(*args, **kw))


def _run(*args, progress=False, report=True, **kw):
    return run_benchmark(_cfg(*args, **kw), progress=progress, report=report)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    import torch
    from threadpoolctl import threadpool_limits

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1):
        yield
    torch.set_num_threads(old)


def _write_dataset(path: Path, n_stim: int = 6, reps: int = 5, n_test: int = 6, p: int = 40, seed: int = 0) -> Path:
    """A small .npz dataset: ``n_stim`` stimuli shown ``reps`` times each in training (miyawaki-like)."""
    rng = np.random.default_rng(seed)
    stims = rng.uniform(0, 1, size=(n_stim + n_test, 28 * 28)).astype(np.float32)
    W = rng.normal(size=(28 * 28, p)) / 28
    idx_tr = np.repeat(np.arange(n_stim), reps)
    idx_te = np.arange(n_stim, n_stim + n_test)
    X_tr = stims[idx_tr] @ W + 0.2 * rng.normal(size=(len(idx_tr), p))
    X_te = stims[idx_te] @ W + 0.2 * rng.normal(size=(n_test, p))
    np.savez(path, fmriTrn=X_tr.astype(np.float32), stimTrn=stims[idx_tr], fmriTest=X_te.astype(np.float32),
             stimTest=stims[idx_te])
    return path


@pytest.fixture()
def dataset(tmp_path) -> str:
    return str(_write_dataset(tmp_path / "toy.npz"))


@pytest.fixture()
def counting_method():
    """Registers ``counting-mean``: the mean image, counting its fits."""
    calls: list[int] = []

    class Counting(MeanImageDecoder):
        def fit(self, X, Y):
            calls.append(len(X))
            return super().fit(X, Y)

    register_method("counting-mean", lambda seed, ds, n, fast=False, **o: Counting(random_state=seed), overwrite=True)
    yield calls
    unregister_method("counting-mean")


# ------------------------------------------------------------------ splits
def test_kfold_folds_are_the_same_for_every_method_and_seed(dataset):
    plan = _plan(dataset, "mean-image,ridge", "kfold", n_folds=3, seeds=2)
    assert len(plan.tasks) == 2 * 3 * 2
    ds = load_task_data(dataset, None)
    seen = {}
    for t in plan.tasks:
        test_idx = task_rows(ds, t)[4]
        seen.setdefault(t.fold, set()).add(tuple(test_idx))
    assert all(len(v) == 1 for v in seen.values())  # model seed and method do not move the folds
    all_test = np.concatenate([np.array(next(iter(v))) for v in seen.values()])
    assert sorted(all_test) == list(range(len(ds.X_train)))
    # the split seed, not the model seed, moves the folds
    t0 = next(t for t in plan.tasks if t.fold == 0)
    assert tuple(task_rows(ds, dataclasses.replace(t0, split_seed=1))[4]) != next(iter(seen[0]))


def test_novel_stimulus_caps_folds_and_never_tests_a_seen_stimulus(dataset):
    plan = _plan(dataset, "ridge", "novel-stimulus", n_folds=10, seeds=1)
    assert len(plan.tasks) == 6  # 6 unique training stimuli
    assert any("only 6 unique stimuli" in n for n in plan.notes)
    ds = load_task_data(dataset, None)
    from cortexflow.data.splits import stimulus_groups

    groups = stimulus_groups(ds.Y_train)
    for t in plan.tasks:
        X_tr, Y_tr, X_te, Y_te, test_idx, _ = task_rows(ds, t)
        train_idx = np.setdiff1d(np.arange(len(ds.Y_train)), test_idx)
        assert not set(groups[test_idx]) & set(groups[train_idx])


def test_bad_plan_arguments(dataset):
    with pytest.raises(ConfigError, match="unknown split"):
        _plan(dataset, "ridge", "holdout")
    with pytest.raises(ConfigError, match="unknown method"):
        _plan(dataset, "nonesuch")
    with pytest.raises(ConfigError, match="--folds"):
        _plan(dataset, "ridge", "kfold", n_folds=1000)
    with pytest.raises(ConfigError, match="seeds"):
        _plan(dataset, "ridge", "official", seeds=0)


# ---------------------------------------------------------------- task keys
def test_task_key_covers_what_determines_a_result(dataset):
    t = _plan(dataset, "ridge", "kfold", n_folds=3, seeds=1).tasks[0]
    assert t.key == dataclasses.replace(t, data_dir="/elsewhere").key  # where the data lie is not part of it
    for change in [dict(seed=1), dict(fold=1), dict(n_folds=4), dict(split_seed=1), dict(method="mean-image"),
                   dict(checksum="0" * 64), dict(fast=True), dict(options=(("cv", 3),)), dict(method_version="2"),
                   dict(kind="eeg-cv")]:
        assert dataclasses.replace(t, **change).key != t.key, change
    assert type(t).from_dict(json.loads(json.dumps(t.to_dict()))) == t
    assert "kind" not in t.key_payload()  # the keys of reconstruction tasks stored before task kinds existed hold
    from cortexflow.exceptions import DataValidationError

    with pytest.raises(DataValidationError, match="unknown task kind 'bogus'; allowed: reconstruction, eeg-cv"):
        run_task(dataclasses.replace(t, kind="bogus"))


def test_stratified_split_runs_in_the_benchmark(tmp_path):
    rng = np.random.default_rng(0)
    labels = np.arange(24) % 3
    Y = rng.uniform(size=(3, 28 * 28)).astype(np.float32)[labels]
    X = (rng.normal(size=(24, 20)) + labels[:, None]).astype(np.float32)
    path = tmp_path / "labelled.npz"
    np.savez(path, fmriTrn=X, stimTrn=Y, fmriTest=X[:3], stimTest=Y[:3], labelTrn=labels + 1, labelTest=labels[:3] + 1)
    res = _run(str(path), "mean-image", "stratified", n_folds=4, seeds=1, out=tmp_path / "out", report=False)
    assert res["computed"] == 4
    df = pd.read_csv(tmp_path / "out" / "results.csv")
    assert sorted(df["image"]) == list(range(24))  # every training row tested once
    assert (df.groupby("fold")["stimulus"].apply(lambda s: sorted(np.bincount(s))) .map(tuple) == (2, 2, 2)).all()


def test_run_task_is_pure_and_checks_the_checksum(dataset):
    t = _plan(dataset, "ridge", "official", seeds=1).tasks[0]
    a, b = run_task(t), run_task(t)
    assert a.rows == b.rows
    np.testing.assert_array_equal(a.predictions, b.predictions)
    assert len(a.rows) == 6 and set(a.rows[0]) >= {"dataset", "method", "split", "fold", "seed", "image", "two_way"}
    with pytest.raises(ChecksumError, match="checksum"):
        run_task(dataclasses.replace(t, checksum="f" * 64))


def test_cccv1_runs_through_run_task(dataset):
    t = _plan(dataset, "cccv1", "official", seeds=1, fast=True).tasks[0]
    res = run_task(t)  # run_task always fits the method's sequential estimator
    assert res.predictions.shape == (6, 28, 28) and len(res.rows) == 6


# ------------------------------------------------------------------- resume
def test_interrupted_benchmark_resumes_without_refitting(dataset, tmp_path, counting_method, monkeypatch):
    out = tmp_path / "bench"
    plan = _plan(dataset, "counting-mean,ridge", "kfold", n_folds=3, seeds=2)
    n_counting = sum(t.method == "counting-mean" for t in plan.tasks)

    # interrupt the first invocation after 4 finished runs
    real = executors_mod.run_task
    finished = []

    def interrupting(task):
        if len(finished) == 4:
            raise KeyboardInterrupt
        res = real(task)
        finished.append(task.key)
        return res

    monkeypatch.setattr(executors_mod, "run_task", interrupting)
    with pytest.raises(KeyboardInterrupt):
        _run(dataset, "counting-mean,ridge", "kfold", 3, 2, out, report=False)
    monkeypatch.setattr(executors_mod, "run_task", real)
    assert not list((out / "runs").glob("*.lock"))  # the interrupted invocation released its locks
    store = ResultStore(out)
    assert sorted(t.key for t in plan.tasks if store.has(t)) == sorted(finished)
    fits_first = len(counting_method)

    res = _run(dataset, "counting-mean,ridge", "kfold", 3, 2, out, report=False)
    assert res["done_before"] == 4 and res["computed"] == len(plan.tasks) - 4
    assert len(counting_method) == n_counting  # every counting task fitted exactly once over both invocations
    assert fits_first == sum(1 for t in plan.tasks if t.key in finished and t.method == "counting-mean")

    # a third invocation recomputes nothing; deleting one run recomputes exactly that run
    res = _run(dataset, "counting-mean,ridge", "kfold", 3, 2, out, report=False)
    assert res["computed"] == 0 and len(counting_method) == n_counting
    victim = next(t for t in plan.tasks if t.method == "counting-mean")
    store.json_path(victim).unlink()
    res = _run(dataset, "counting-mean,ridge", "kfold", 3, 2, out, report=False)
    assert res["computed"] == 1 and len(counting_method) == n_counting + 1
    results = pd.read_csv(out / "results.csv")
    assert len(results) == 2 * 2 * 30  # methods x seeds x training rows (each row tested once per seed)


def test_corrupt_result_file_is_recomputed(dataset, tmp_path, counting_method):
    out = tmp_path / "b"
    cfg = _cfg(dataset, "counting-mean", "official", seeds=1)
    plan = build_tasks(cfg)
    assert execute(plan, ResultStore(out), cfg, progress=False)["computed"] == 1
    ResultStore(out).json_path(plan.tasks[0]).write_text("{ truncated")
    assert execute(plan, ResultStore(out), cfg, progress=False)["computed"] == 1
    assert len(counting_method) == 2


# ---------------------------------------------------------- hooks, backends
def test_batched_hook_gets_all_tasks_of_its_method(dataset, tmp_path):
    received = []

    def many(tasks, *, progress=False):
        received.append(list(tasks))
        for t in tasks:
            res = run_task(dataclasses.replace(t, method="mean-image"))  # stand-in for a batched trainer
            yield dataclasses.replace(res, task=t)

    register_method("batched-mean", lambda seed, ds, n, fast=False, **o: MeanImageDecoder(), supports_batched=True,
                    fit_predict_many=many, overwrite=True)
    try:
        cfg = _cfg(dataset, "batched-mean,ridge", "kfold", n_folds=3, seeds=2)
        plan = build_tasks(cfg)
        batched = [t for t in plan.tasks if t.method == "batched-mean"]
        assert ("mode", "batched") in batched[0].train
        counts = execute(plan, ResultStore(tmp_path), cfg, progress=False)
        assert counts["computed"] == len(plan.tasks)
        assert len(received) == 1 and {t.key for t in received[0]} == {t.key for t in batched}
    finally:
        unregister_method("batched-mean")
    with pytest.raises(ConfigError, match="fit_predict_many"):
        register_method("x-batched", lambda *a, **k: None, supports_batched=True)


def test_custom_backend_and_unknown_backend(dataset, tmp_path):
    seen = []

    class Serial(Executor):
        name = "test-serial"

        def run(self, tasks):
            for t in tasks:
                seen.append(t.label)
                yield run_task(t)

        def run_groups(self, groups):
            return self.run([t for g in groups for t in g])

    register_backend("test-serial", Serial, overwrite=True)
    try:
        cfg = _cfg(dataset, "mean-image,ridge", "official", seeds=1, backend="test-serial")
        assert execute(build_tasks(cfg), ResultStore(tmp_path), cfg, progress=False)["computed"] == 2
        assert len(seen) == 2
        with pytest.raises(ConfigError, match="--backend 'nope'; allowed: local, ray"):
            build_tasks(cfg.replace(backend="nope"))
    finally:
        BACKENDS.pop("test-serial", None)


def test_registry_rejects_bad_names():
    for bad in ["", "a,b", "all"]:
        with pytest.raises(ConfigError):
            register_method(bad, lambda *a, **k: None)
    with pytest.raises(ConfigError, match="already registered"):
        register_method("ridge", lambda seed, d, n, fast=False: None)


# ------------------------------------------------------------- CLI, report
def test_cli_writes_results_stats_summary_and_report(dataset, tmp_path):
    from cortexflow.cli.main import cli

    out = tmp_path / "cli"
    args = ["benchmark", "--datasets", dataset, "--methods", "mean-image,ridge", "--split", "official,novel-stimulus",
            "--folds", "3", "--seeds", "2", "--out", str(out), "--reference", "ridge", "--no-progress"]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    assert "runs (0 resumed" in r.output
    df = pd.read_csv(out / "results.csv")
    for col in ["dataset", "method", "split", "fold", "seed", "image", "mse", "pearson", "ssim", "psnr", "two_way"]:
        assert col in df.columns
    assert set(df["split"]) == {"official", "novel-stimulus"} and set(df["seed"]) == {0, 1}
    # two_way is computed within the test set of each run
    store = ResultStore(out)
    plan = _plan(dataset, "mean-image,ridge", "official,novel-stimulus", 3, 2)
    ds = load_task_data(dataset, None)
    t = next(t for t in plan.tasks if t.method == "ridge" and t.split == "novel-stimulus" and t.fold == 1)
    pred, idx = store.load_predictions(t)
    rows = pd.DataFrame(store.load_record(t)["rows"])
    np.testing.assert_allclose(rows["two_way"], two_way_identification(true=ds.Y_train[idx], pred=pred))

    stats = pd.read_csv(out / "stats.csv")
    assert set(stats["method"]) == {"mean-image"} and set(stats["reference"]) == {"ridge"}
    assert {"wilcoxon_p", "t_p", "wilcoxon_p_holm", "dz", "ci_low", "ci_high"} <= set(stats.columns)
    summary = (out / "summary.md").read_text()
    assert "recognition of seen images" in summary and "novel-stimulus" in summary
    assert "± " in summary
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 3 and "<table>" in html
    assert (out / "figures" / "grid_toy.png").is_file()

    r2 = CliRunner().invoke(cli, args)
    assert r2.exit_code == 0 and "runs (" in r2.output and "0 computed" in r2.output


def test_summary_and_stats_without_reference(dataset, tmp_path):
    res = _run(dataset, "mean-image", "official", seeds=1, out=tmp_path)
    meta = json.loads((tmp_path / "benchmark.json").read_text())
    assert any("no paired statistics" in n for n in meta["notes"])
    assert res["computed"] == 1 and (tmp_path / "report.html").is_file()


@pytest.mark.slow
def test_worker_processes_give_the_same_results(dataset, tmp_path):
    a = _run(dataset, "mean-image,ridge,brain-diffuser-lite", "kfold", 3, 1, tmp_path / "a", fast=True,
             jobs=2, report=False)
    b = _run(dataset, "mean-image,ridge,brain-diffuser-lite", "kfold", 3, 1, tmp_path / "b", fast=True,
             jobs=1, report=False)
    assert a["computed"] == b["computed"] == 9
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "a" / "results.csv"), pd.read_csv(tmp_path / "b" / "results.csv"))


def test_methods_all_is_the_five_core_methods_and_skips_opt_in_ones():
    from cortexflow.benchmark.methods import METHODS, load_plugins, register_method, resolve_methods

    load_plugins()
    from cortexflow.benchmark.methods import list_methods
    assert resolve_methods("all") == [m for m in list_methods() if METHODS[m].in_all]
    assert resolve_methods("all")[:5] == ["mean-image", "ridge", "cccv1", "brain-diffuser-lite", "mindvis-lite"]
    assert {"mean-image", "ridge", "cccv1", "brain-diffuser-lite", "mindvis-lite"} <= set(resolve_methods("all"))
    register_method("opt-in-only", lambda seed, d, n, fast=False: None, in_all=False)
    try:
        assert "opt-in-only" not in resolve_methods("all")
        assert resolve_methods("opt-in-only") == ["opt-in-only"]
    finally:
        METHODS.pop("opt-in-only")


