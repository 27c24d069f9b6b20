"""The Ray backend on a local 2-CPU Ray instance: tasks, a retried failure, results in a store.

Skipped when Ray is not installed (``pip install 'cortexflow[ray]'``).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cortexflow.benchmark.executors import LocalExecutor, RayExecutor, TaskFailure, make_executor
from cortexflow.exceptions import ConfigError
from cortexflow.utils.io import atomic_write_json


def _store_writer(folder: Path):
    """A minimal resumable store: one JSON file per finished item, written atomically by the driver."""

    def on_result(item, result):
        atomic_write_json(folder / f"{item['key']}.json", result)

    return on_result


def _map(executor: RayExecutor, fn, items, on_result):
    """``fn`` over ``items`` on Ray; ``on_result(item, result)`` as each finishes; results in item order."""
    out = {}
    for item, res in executor.imap(fn, items):
        on_result(item, res)
        out[id(item)] = res
    return [out.get(id(it)) for it in items]


def test_executor_choices():
    with make_executor("local", jobs=2, threads=1) as ex:
        assert isinstance(ex, LocalExecutor) and ex.describe() == {"backend": "local", "jobs": 2, "threads": 1}
    with pytest.raises(ConfigError, match="allowed: local, ray"):
        make_executor("dask")
    with pytest.raises(ConfigError, match="--address only applies"):
        make_executor("local", address="auto")
    with pytest.raises(ConfigError, match="jobs=0"):
        make_executor("local", jobs=0)


def test_missing_ray_names_the_extra(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("No module named 'ray'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(ConfigError, match=r"cortexflow\[ray\]"):
        make_executor("ray")


@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray")
    backend = RayExecutor(num_cpus=2, max_retries=2, init_kwargs={"log_to_driver": False})
    backend.ensure_started()
    yield backend
    backend.close()
    assert not ray.is_initialized()


def test_ray_runs_tasks_retries_a_failure_and_fills_the_store(ray_local, tmp_path):
    flag_dir = tmp_path / "flags"
    flag_dir.mkdir()
    store = tmp_path / "store"
    store.mkdir()

    def task(item):  # defined here so that Ray pickles it by value
        import os
        from pathlib import Path

        flag = Path(item["flags"]) / item["key"]
        if item.get("fail_once") and not flag.exists():
            flag.write_text("attempt 1 failed")
            raise RuntimeError(f"transient failure of {item['key']}")
        return {"key": item["key"], "value": item["x"] * 10, "pid": os.getpid(),
                "threads": os.environ.get("CORTEXFLOW_NUM_THREADS")}

    items = [{"key": f"run{i}", "x": i, "flags": str(flag_dir), "fail_once": i == 2} for i in range(4)]
    seen = []
    results = _map(ray_local, task, items, lambda it, res: (seen.append(it["key"]), _store_writer(store)(it, res)))
    assert [r["value"] for r in results] == [0, 10, 20, 30]
    assert sorted(seen) == [f"run{i}" for i in range(4)]
    assert (flag_dir / "run2").read_text() == "attempt 1 failed"  # it did fail once, then was retried
    stored = {p.stem: json.loads(p.read_text()) for p in store.glob("*.json")}
    assert sorted(stored) == [f"run{i}" for i in range(4)] and stored["run2"]["value"] == 20
    assert all(r["threads"] == "1" for r in results)  # one CPU per task, one torch thread


def test_ray_reports_a_task_that_keeps_failing(ray_local, tmp_path):
    def task(item):
        if item["x"] == 1:
            raise ValueError("always broken")
        return item["x"]

    got = {}
    with pytest.raises(TaskFailure, match="1 benchmark task"):
        _map(RayExecutor(max_retries=1), task, [{"x": 0}, {"x": 1}, {"x": 2}], lambda it, r: got.update({it["x"]: r}))
    assert got == {0: 0, 2: 2}  # the others still reached the store


@pytest.mark.parametrize(
    "methods, batched",
    [("mean-image,ridge", False), pytest.param("mean-image,cccv1", True, marks=pytest.mark.slow)],
)
def test_benchmark_on_ray_fills_the_store_and_resumes(ray_local, tmp_path, data_dir, methods, batched):
    """`--backend ray`: per-task Ray tasks (and, in the slow variant, a batched cccv1 group), then a resume."""
    from cortexflow.benchmark.runner import BenchmarkConfig, run_benchmark

    out = tmp_path / "bench"
    cfg = BenchmarkConfig("vangerven", methods=methods, splits="kfold", n_folds=2, seeds=1, out=out, fast=True,
                          data_dir=data_dir, backend="ray")
    res = run_benchmark(cfg, progress=False, report=False)
    assert (res["total"], res["done_before"], res["computed"]) == (4, 0, 4)
    records = [json.loads(p.read_text()) for p in (out / "runs").glob("*.json")]
    assert len(records) == 4
    assert {r["task"]["method"] for r in records} == set(methods.split(","))
    if batched:
        assert all(r["task"]["train"] == [["mode", "batched"]] for r in records if r["task"]["method"] == "cccv1")
    assert json.loads((out / "benchmark.json").read_text())["backend"] == "ray"
    again = run_benchmark(cfg, progress=False, report=False)
    assert (again["done_before"], again["computed"]) == (4, 0)


def test_address_needs_the_ray_backend(tmp_path):
    from click.testing import CliRunner

    from cortexflow.cli.main import cli

    res = CliRunner().invoke(cli, ["benchmark", "--datasets", "vangerven", "--out", str(tmp_path), "--address", "auto"])
    assert res.exit_code != 0 and "--address only applies to --backend ray" in res.output
