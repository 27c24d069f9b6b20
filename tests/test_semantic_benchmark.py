"""cccv1-semantic in the benchmark, and semantic scores of a finished benchmark folder."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cortexflow.benchmark.methods import get_method, list_methods, make_estimator
from cortexflow.semantic import CCCV1SemanticDecoder


def _dataset_file(tmp_path, n_train=24, n_test=6, seed=0):
    """A small .npz dataset whose signals carry the class of each image (two bar positions)."""
    rng = np.random.default_rng(seed)
    n = n_train + n_test
    cls = np.arange(n) % 2
    Y = rng.uniform(0, 0.2, size=(n, 28, 28)).astype(np.float32)
    for i, c in enumerate(cls):
        Y[i, (2 + 16 * c):(10 + 16 * c), 4:24] = 0.9
    X = (rng.normal(size=(n, 30)) + 2.0 * cls[:, None]).astype(np.float32)
    path = tmp_path / "toy.npz"
    np.savez(path, fmriTrn=X[:n_train], stimTrn=Y[:n_train].reshape(n_train, -1), fmriTest=X[n_train:],
             stimTest=Y[n_train:].reshape(n_test, -1), labelTrn=cls[:n_train] + 1, labelTest=cls[n_train:] + 1)
    return path


def test_cccv1_semantic_is_a_registered_benchmark_method():
    assert "cccv1-semantic" in list_methods()  # a built-in method (cortexflow.benchmark.builtin)
    spec = get_method("cccv1-semantic")
    assert spec.version and "InfoNCE" in spec.description
    est = make_estimator("cccv1-semantic", 3, "vangerven", 90, encoder="pixels",
                         loss_weights={"semantic_infonce": 0.1, "semantic_cosine": 0.0})
    assert isinstance(est, CCCV1SemanticDecoder)
    assert est.random_state == 3 and est.encoder == "pixels"
    assert est.config.pattern == "vangerven" and est.config.loss_weights["semantic_infonce"] == 0.1
    fast = make_estimator("cccv1-semantic", 0, "vangerven", 90, fast=True)
    assert fast.config.epochs == 2 and fast.head_dim == 64 and fast.config.hidden_dim == 64


def test_benchmark_runs_cccv1_semantic_and_scores_semantic_metrics(tmp_path, monkeypatch):
    from cortexflow.benchmark.runner import BenchmarkConfig, run_benchmark
    from cortexflow.benchmark.semantic import score_benchmark

    monkeypatch.setenv("CORTEXFLOW_CACHE", str(tmp_path / "cache"))
    data = _dataset_file(tmp_path)
    out = tmp_path / "bench"
    res = run_benchmark(BenchmarkConfig(str(data), methods="cccv1,cccv1-semantic", splits="official,kfold", n_folds=2,
                                        seeds=1, out=out, fast=True,
                                        method_options={"cccv1-semantic": {"encoder": "pixels"}}),
                        report=False, progress=False)
    assert res["computed"] == 6  # 2 methods x (official + 2 folds)
    scored = score_benchmark(out, encoder="pixels", fast=True, progress=False)
    df = pd.read_csv(scored["paths"]["semantic_results"])
    assert scored["runs"] == 6
    assert set(df["method"]) == {"cccv1", "cccv1-semantic"}
    assert len(df) == 2 * (6 + 24)  # official: 6 test images; kfold: every training row tested once
    assert df["semantic_two_way"].between(0, 1).all() and df["semantic_cosine"].between(-1, 1).all()
    stats = pd.read_csv(scored["paths"]["semantic_stats"])
    assert set(stats["metric"]) == {"semantic_two_way", "semantic_cosine"}
    assert set(stats["method"]) == {"cccv1-semantic"}
    assert "semantic_two_way" in (out / "semantic_summary.md").read_text()
    # the official-split values are those of SemanticMetrics with the full training set as centre
    from cortexflow.benchmark.runner import build_tasks
    from cortexflow.benchmark.store import ResultStore
    from cortexflow.data import load_dataset
    from cortexflow.semantic import SemanticMetrics

    plan = build_tasks(BenchmarkConfig(str(data), "cccv1", "official", seeds=1, fast=True))
    pred, _ = ResultStore(out).load_predictions(plan.tasks[0])
    ds = load_dataset(str(data))
    want = SemanticMetrics(ds.Y_train, "pixels")(pred, ds.Y_test)
    got = df[(df["method"] == "cccv1") & (df["split"] == "official")].sort_values("image")
    np.testing.assert_allclose(got["semantic_cosine"], want["semantic_cosine"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got["semantic_two_way"], want["semantic_two_way"])
    # the scores live in the benchmark's store, beside each record: scoring again computes nothing
    assert scored["computed"] == 6 and len(list((out / "runs" / "scores").rglob("*.json"))) == 6
    text = (out / "semantic_results.csv").read_text()
    again = score_benchmark(out, encoder="pixels", fast=True, progress=False)
    assert (again["runs"], again["computed"], again["resumed"]) == (6, 0, 6)
    assert (out / "semantic_results.csv").read_text() == text
    victim = ResultStore(out).scores_path(plan.tasks[0], "semantic:pixels:final")
    victim.write_text(victim.read_text().replace('"semantic_cosine": ', '"semantic_cosine": 1', 1))  # edited
    third = score_benchmark(out, encoder="pixels", fast=True, progress=False)
    assert third["computed"] == 1 and (out / "semantic_results.csv").read_text() == text


def test_score_benchmark_without_runs_says_so(tmp_path):
    from cortexflow.benchmark.semantic import score_benchmark

    with pytest.raises(FileNotFoundError, match="no finished benchmark run"):
        score_benchmark(tmp_path, encoder="pixels")


def test_semantic_cli_embed_and_score(tmp_path, monkeypatch):
    import json

    from click.testing import CliRunner

    from cortexflow.benchmark.runner import BenchmarkConfig, run_benchmark
    from cortexflow.cli.main import cli

    monkeypatch.setenv("CORTEXFLOW_CACHE", str(tmp_path / "cache"))
    data = _dataset_file(tmp_path)
    runner = CliRunner()
    r = runner.invoke(cli, ["semantic", "encoders"])
    assert r.exit_code == 0 and "efficientnet-lite0  (default)" in r.output
    r = runner.invoke(cli, ["semantic", "embed", "--dataset", str(data), "--encoder", "pixels"])
    assert r.exit_code == 0, r.output
    info = json.loads(r.output)
    assert info["train"]["n"] == 24 and info["train"]["dim"] == 784
    assert info["train"]["cache"].startswith(str(tmp_path / "cache"))
    out = tmp_path / "bench"
    run_benchmark(BenchmarkConfig(str(data), methods="cccv1,cccv1-semantic", seeds=1, out=out, fast=True,
                                  method_options={"cccv1-semantic": {"encoder": "pixels"}}), report=False, progress=False)
    r = runner.invoke(cli, ["semantic", "score", str(out), "--encoder", "pixels", "--fast", "--no-progress"])
    assert r.exit_code == 0, r.output
    assert "scored 2 runs" in r.output and (out / "semantic_stats.csv").is_file()
