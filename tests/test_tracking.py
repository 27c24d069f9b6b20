"""Optional MLflow tracking (skipped when MLflow is not installed)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cortexflow.exceptions import ConfigError
from cortexflow.reporting.tracking import NullTracker, default_tracking_uri, flatten_params, make_tracker


def test_null_tracker_and_choices(tmp_path):
    t = make_tracker("none", tmp_path)
    assert isinstance(t, NullTracker) and not t.enabled
    with t:
        t.log_params({"a": 1})
        t.log_metrics({"m": 1.0})
        assert t.log_artifacts(tmp_path) == 0
    with pytest.raises(ConfigError, match="allowed: none, mlflow"):
        make_tracker("wandb", tmp_path)
    with pytest.raises(ConfigError, match="without --track mlflow"):
        make_tracker("none", tmp_path, tracking_uri="http://localhost:5000")


def test_flatten_params():
    flat = flatten_params({"a": {"b": 1, "c": [1, 2]}, "d": "x" * 7000})
    assert flat["a.b"] == "1" and flat["a.c"] == "1,2" and len(flat["d"]) == 6000
    assert default_tracking_uri(tmp := "/tmp/out").startswith("sqlite:///") and tmp in default_tracking_uri(tmp)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_mlflow_logs_params_metrics_and_figures(tmp_path):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    out = tmp_path / "bench"
    (out / "figures").mkdir(parents=True)
    (out / "figures" / "grid.png").write_bytes(b"\x89PNG fake image bytes")
    (out / "summary.md").write_text("# summary\n")
    table = pd.DataFrame({
        "dataset": ["vangerven"] * 4, "method": ["cccv1", "cccv1", "ridge", "ridge"],
        "mse": [0.1, 0.2, 0.3, np.nan], "pearson": [0.5, 0.7, 0.1, 0.2],
    })
    with make_tracker("mlflow", out, run_name="unit", log_tasks=True) as tr:
        tr.log_params({"datasets": ["vangerven"], "split": "kfold", "config": {"epochs": 3}})
        tr.log_task("vangerven/cccv1/kfold/0/0", {"fold": 0}, {"mse": 0.1, "bad": float("nan")})
        tr.log_summary(table)
        assert tr.log_artifacts(out) == 2
        run_id = tr.run_id
    assert (out / "mlflow.db").is_file() and (out / "mlruns").is_dir()
    client = MlflowClient(tracking_uri=default_tracking_uri(out))
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["split"] == "kfold" and run.data.params["config.epochs"] == "3"
    assert run.data.params["datasets"] == "vangerven"
    assert run.data.metrics["vangerven.cccv1.mse_mean"] == pytest.approx(0.15)
    assert run.data.metrics["vangerven.ridge.mse_mean"] == pytest.approx(0.3)  # NaN skipped by pandas
    arts = {a.path for a in client.list_artifacts(run_id)} | {a.path for a in client.list_artifacts(run_id, "figures")}
    assert {"summary.md", "figures/grid.png"} <= arts
    children = client.search_runs([run.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{run_id}'")
    assert len(children) == 1 and children[0].data.metrics == {"mse": 0.1}


def test_mlflow_plain_folder_uri_uses_file_store(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    store = tmp_path / "store"
    with make_tracker("mlflow", tmp_path / "out", tracking_uri=str(store)) as tr:
        tr.log_metrics({"x": 2.0})
    assert any(store.iterdir())
