"""Optional experiment tracking with MLflow (``cortexflow benchmark ... --track mlflow``).

MLflow is an optional extra (``pip install 'cortexflow[tracking]'``) and is
imported only when tracking is switched on.

Where runs go
-------------
* no ``--tracking-uri``: a local store inside the benchmark's output folder,
  ``sqlite:///<out>/mlflow.db`` with artifacts (figures, tables, report) under
  ``<out>/mlruns``. MLflow 3 keeps its old plain-folder ``./mlruns`` tracking
  store only in maintenance mode (it refuses it unless
  ``MLFLOW_ALLOW_FILE_STORE=true``), so the local default is MLflow's own
  current default, a SQLite file; see it with
  ``mlflow ui --backend-store-uri sqlite:///<out>/mlflow.db``.
* ``--tracking-uri http://host:5000``: a tracking server.
* ``--tracking-uri file:///path/mlruns`` (or a plain folder path): the legacy
  folder store, opted into explicitly.
* any other URI MLflow understands (``sqlite:///...``, ``databricks``, ...).

What is logged
--------------
One MLflow run per benchmark invocation: its parameters (datasets, methods,
split, folds, seeds, train mode, backend, ...), summary metrics (mean and
standard deviation of every metric per dataset and method, named
``<dataset>.<method>.<metric>_mean``), and the report's files (``summary.md``,
``report.html``, CSV tables and PNG figures) as artifacts. Optionally one
nested child run per finished (dataset, method, split, fold, seed) task.
"""

from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path
from typing import Any, Iterable, Mapping

from cortexflow.exceptions import ConfigError

__all__ = ["TRACKERS", "NullTracker", "MlflowTracker", "make_tracker", "default_tracking_uri", "flatten_params",
           "log_benchmark"]

logger = logging.getLogger(__name__)

TRACKERS = ("none", "mlflow")
_ARTIFACT_SUFFIXES = {".png", ".svg", ".pdf", ".html", ".md", ".csv", ".json", ".txt"}
_MAX_PARAM_LEN = 6000  # MLflow's limit on a parameter value


def default_tracking_uri(out_dir: str | os.PathLike) -> str:
    """The local store used when no tracking URI is given: ``sqlite:///<out>/mlflow.db``."""
    return "sqlite:///" + str((Path(out_dir) / "mlflow.db").resolve())


def flatten_params(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested dicts to ``a.b`` keys; lists joined by commas; values as strings (truncated to MLflow's limit)."""
    out: dict[str, str] = {}
    for k, v in params.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten_params(v, key + "."))
            continue
        if isinstance(v, (list, tuple, set)):
            v = ",".join(str(x) for x in v)
        out[key] = str(v)[:_MAX_PARAM_LEN]
    return out


def _finite_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    out = {}
    for k, v in metrics.items():
        try:
            f = float(v)
        except (TypeError, ValueError):
            continue
        if math.isfinite(f):
            out[str(k)] = f
    return out


class NullTracker:
    """The tracker used without ``--track``: every call does nothing."""

    enabled = False
    run_id: str | None = None

    def __enter__(self) -> "NullTracker":
        return self

    def __exit__(self, *exc) -> None:
        self.end("FAILED" if exc[0] is not None else "FINISHED")

    def start(self) -> "NullTracker":
        return self

    def log_params(self, params: Mapping[str, Any]) -> None:
        pass

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        pass

    def log_task(self, name: str, params: Mapping[str, Any], metrics: Mapping[str, Any]) -> None:
        pass

    def log_summary(self, table, group_cols: Iterable[str] = ("dataset", "method"),
                    metrics: Iterable[str] = ("mse", "pearson", "ssim", "two_way")) -> None:
        pass

    def log_artifacts(self, paths: Iterable[str | os.PathLike] | str | os.PathLike,
                      artifact_path: str | None = None) -> int:
        return 0

    def end(self, status: str = "FINISHED") -> None:
        pass


class MlflowTracker(NullTracker):
    """Log one benchmark invocation to MLflow.

    Parameters
    ----------
    out_dir : path
        The benchmark's output folder (holds the default local store).
    tracking_uri : str, optional
        Where to log (see the module docstring); the local store when None.
    experiment : str
        MLflow experiment name.
    run_name : str, optional
        Name of the MLflow run.
    log_tasks : bool
        Also write one nested run per finished task.
    """

    enabled = True

    def __init__(self, out_dir: str | os.PathLike, tracking_uri: str | None = None,
                 experiment: str = "cortexflow-benchmark", run_name: str | None = None, log_tasks: bool = False):
        self.out_dir = Path(out_dir)
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.run_name = run_name
        self.log_tasks = log_tasks
        self.run_id = None
        self._mlflow = None
        self._client = None
        self._experiment_id = None

    # ------------------------------------------------------------------ setup
    def _resolve_uri(self) -> tuple[str, str | None]:
        """(tracking URI, artifact location for a new experiment or None)."""
        uri = self.tracking_uri
        if not uri:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            return default_tracking_uri(self.out_dir), (self.out_dir / "mlruns").resolve().as_uri()
        if "://" not in uri and not uri.startswith(("sqlite:", "databricks")):
            uri = Path(uri).expanduser().resolve().as_uri()  # a plain folder: the legacy folder store
        if uri.startswith("file:"):
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # asked for explicitly
        return uri, None

    def start(self) -> "MlflowTracker":
        """Import MLflow, select the store and experiment, and open the run."""
        if self.run_id is not None:
            return self
        try:
            import mlflow
            from mlflow.tracking import MlflowClient
        except ImportError as exc:
            raise ConfigError(
                "--track mlflow needs MLflow, an optional extra: pip install 'cortexflow[tracking]' "
                f"(import failed: {exc})"
            ) from exc
        uri, artifact_location = self._resolve_uri()
        mlflow.set_tracking_uri(uri)
        client = MlflowClient(tracking_uri=uri)
        exp = client.get_experiment_by_name(self.experiment)
        if exp is None:
            exp_id = client.create_experiment(self.experiment, artifact_location=artifact_location)
        else:
            exp_id = exp.experiment_id
        run = client.create_run(exp_id, run_name=self.run_name, tags={"cortexflow.kind": "benchmark"})
        self._mlflow, self._client, self._experiment_id = mlflow, client, exp_id
        self.run_id = run.info.run_id
        self.uri = uri
        logger.info("MLflow run %s in experiment %r at %s", self.run_id, self.experiment, uri)
        return self

    def __enter__(self) -> "MlflowTracker":
        return self.start()

    # ---------------------------------------------------------------- logging
    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log parameters (nested dicts are flattened)."""
        from mlflow.entities import Param

        flat = flatten_params(params)
        if flat:
            self._client.log_batch(self.run_id, params=[Param(k, v) for k, v in flat.items()])

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Log finite numeric metrics; others are skipped."""
        from mlflow.entities import Metric  # optional extra

        clean = _finite_metrics(metrics)
        ts = int(time.time() * 1000)
        if clean:
            self._client.log_batch(self.run_id, metrics=[Metric(k, v, ts, step or 0) for k, v in clean.items()])

    def log_task(self, name: str, params: Mapping[str, Any], metrics: Mapping[str, Any]) -> None:
        """A nested run for one finished task (only when ``log_tasks``)."""
        if not self.log_tasks:
            return
        from mlflow.entities import Metric, Param  # optional extra
        from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

        child = self._client.create_run(self._experiment_id, run_name=name, tags={MLFLOW_PARENT_RUN_ID: self.run_id})
        ts = int(time.time() * 1000)
        self._client.log_batch(
            child.info.run_id,
            params=[Param(k, v) for k, v in flatten_params(params).items()],
            metrics=[Metric(k, v, ts, 0) for k, v in _finite_metrics(metrics).items()],
        )
        self._client.set_terminated(child.info.run_id)

    def log_summary(self, table, group_cols: Iterable[str] = ("dataset", "method"),
                    metrics: Iterable[str] = ("mse", "pearson", "ssim", "two_way")) -> None:
        """Mean and standard deviation of each metric per group of a tidy results table.

        Parameters
        ----------
        table : pandas.DataFrame
            One row per image per run (``results.csv``).
        """
        group_cols = [c for c in group_cols if c in table.columns]
        metrics = [m for m in metrics if m in table.columns]
        if not metrics:
            return
        out: dict[str, float] = {}
        groups = table.groupby(group_cols) if group_cols else [((), table)]
        for key, df in groups:
            key = key if isinstance(key, tuple) else (key,)
            prefix = ".".join(str(k) for k in key)
            for m in metrics:
                vals = df[m].astype(float)
                out[f"{prefix}.{m}_mean" if prefix else f"{m}_mean"] = float(vals.mean())
                out[f"{prefix}.{m}_sd" if prefix else f"{m}_sd"] = float(vals.std(ddof=1)) if len(vals) > 1 else 0.0
        self.log_metrics(out)

    def log_artifacts(self, paths: Iterable[str | os.PathLike] | str | os.PathLike,
                      artifact_path: str | None = None) -> int:
        """Log files (figures, tables, the report); folders are searched for known file types.

        Returns
        -------
        int
            Number of files logged.
        """
        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        n = 0
        for p in map(Path, paths):
            if p.is_dir():
                for f in sorted(p.rglob("*")):
                    if f.is_file() and f.suffix.lower() in _ARTIFACT_SUFFIXES and "mlruns" not in f.parts:
                        rel = f.parent.relative_to(p).as_posix()
                        sub = "/".join(x for x in (artifact_path, rel if rel != "." else None) if x)
                        self._client.log_artifact(self.run_id, str(f), artifact_path=sub or None)
                        n += 1
            elif p.is_file():
                self._client.log_artifact(self.run_id, str(p), artifact_path=artifact_path)
                n += 1
            else:
                logger.warning("tracking: %s does not exist; not logged", p)
        return n

    def end(self, status: str = "FINISHED") -> None:
        """Close the run (``FINISHED``, ``FAILED`` or ``KILLED``)."""
        if self.run_id is not None and self._client is not None:
            self._client.set_terminated(self.run_id, status=status)


def make_tracker(kind: str | None, out_dir: str | os.PathLike, tracking_uri: str | None = None,
                 **kwargs) -> NullTracker:
    """The tracker for ``--track KIND``: ``"none"`` (or None) or ``"mlflow"``.

    Raises
    ------
    ConfigError
        Unknown kind, or a tracking URI given without ``--track mlflow``.
    """
    kind = kind or "none"
    if kind not in TRACKERS:
        raise ConfigError(f"--track {kind!r}; allowed: {', '.join(TRACKERS)}")
    if kind == "none":
        if tracking_uri:
            raise ConfigError("--tracking-uri given without --track mlflow")
        return NullTracker()
    return MlflowTracker(out_dir, tracking_uri=tracking_uri, **kwargs)


#: benchmark.json entries logged as MLflow parameters
_BENCH_PARAMS = ("command", "datasets", "methods", "splits", "folds", "seeds", "split_seed", "fast", "backend",
                 "backend_options", "train_mode", "amp", "deterministic", "jobs", "threads", "reference", "unit")


def log_benchmark(tracker: NullTracker, meta: Mapping[str, Any], results, out_dir: str | os.PathLike) -> str:
    """Log one finished benchmark: parameters, summary metrics, and the report's files.

    Parameters
    ----------
    tracker : NullTracker or MlflowTracker
        From :func:`make_tracker` (started here when needed, and ended).
    meta : mapping
        The benchmark's ``benchmark.json`` content.
    results : pandas.DataFrame
        The tidy per-image table (``results.csv``).
    out_dir : path
        The benchmark's folder; its figures, tables and report are logged.

    Returns
    -------
    str
        ``"<tracking uri>#<run id>"`` ("" when tracking is off).
    """
    if not tracker.enabled:
        return ""
    tracker.start()
    try:
        tracker.log_params({k: meta[k] for k in _BENCH_PARAMS if k in meta})
        if len(results):
            split_col = "split" if "split" in results.columns else None
            tracker.log_summary(results, group_cols=[c for c in ("dataset", split_col, "method") if c])
        wall = meta.get("wall_seconds_total", meta.get("wall_seconds_this_invocation", 0))
        tracker.log_metrics({"runs_total": meta.get("runs_total", 0), "runs_computed": meta.get("runs_computed", 0),
                             "wall_seconds": wall})
        out = Path(out_dir)
        files = [p for p in sorted(out.iterdir()) if p.is_file() and p.suffix.lower() in _ARTIFACT_SUFFIXES
                 and p.name != "mlflow.db"]
        n = tracker.log_artifacts(files)
        for sub in sorted(p for p in out.iterdir() if p.is_dir() and p.name not in {"runs", "mlruns"}):
            n += tracker.log_artifacts(sub, artifact_path=sub.name)
        logger.info("tracking: logged %d file(s) to run %s", n, tracker.run_id)
    except BaseException:
        tracker.end("FAILED")
        raise
    tracker.end("FINISHED")
    return f"{getattr(tracker, 'uri', '')}#{tracker.run_id}"
