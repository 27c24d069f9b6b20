"""Benchmark runner: plan the tasks, run the unfinished ones, write the tables and the report.

:class:`BenchmarkConfig` holds everything a benchmark is asked to do and
checks it before any work starts. :func:`build_tasks` plans every (dataset,
method, split, fold, seed) :class:`~cortexflow.benchmark.tasks.Task`;
:func:`execute` hands the unfinished ones to an executor
(:mod:`cortexflow.benchmark.executors`) and stores each result as it arrives
(:mod:`cortexflow.benchmark.store`); :func:`run_benchmark` does both, then
writes ``results.csv``, ``stats.csv``, ``summary.md``, ``report.html`` and
``benchmark.json``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from cortexflow import __version__
from cortexflow.benchmark.executors import BACKENDS, make_executor
from cortexflow.benchmark.methods import REFERENCE_METHOD, check_options, get_method, resolve_methods
from cortexflow.benchmark.store import ResultStore, check_output_dir
from cortexflow.benchmark.tasks import DEFAULT_KIND, ID_COLUMNS, METRIC_COLUMNS, Task, load_task_data, stimulus_ids
from cortexflow.data.spec import no_official_split_message
from cortexflow.data.splits import SPLIT_KINDS, iter_splits, resolve_folds, scored_images, scored_slice
from cortexflow.evaluation.stats import paired_comparisons
from cortexflow.exceptions import ConfigError
from cortexflow.reporting.report import write_csv, write_report
from cortexflow.reporting.tracking import log_benchmark, make_tracker
from cortexflow.training.devices import AMP_MODES, set_deterministic
from cortexflow.utils.io import atomic_write_json, file_lock, removed_if_empty_on_error

__all__ = [
    "BenchmarkConfig",
    "BenchmarkPlan",
    "TRAIN_MODES",
    "UNITS",
    "build_tasks",
    "execute",
    "run_tasks",
    "collect_results",
    "grid_data",
    "split_facts",
    "run_benchmark",
    "parse_list",
]

logger = logging.getLogger(__name__)

TRAIN_MODES = ("batched", "sequential")
UNITS = ("image", "stimulus")


def parse_list(value: str | Iterable[str] | None) -> list[str]:
    """``"a,b"`` or an iterable -> list of stripped, non-empty strings."""
    if value is None:
        return []
    items = value.split(",") if isinstance(value, str) else list(value)
    return [str(s).strip() for s in items if str(s).strip()]


def _seed_list(seeds: int | Sequence[int]) -> list[int]:
    if isinstance(seeds, (int, np.integer)) and not isinstance(seeds, bool):
        if seeds < 1:
            raise ConfigError(f"--seeds {seeds} must be at least 1 (the number of model seeds 0..N-1)")
        return list(range(int(seeds)))
    out = [int(s) for s in seeds]
    if not out:
        raise ConfigError("no seed given")
    if any(s < 0 for s in out):
        raise ConfigError(f"seeds {out} must be >= 0")
    return out


@dataclass
class BenchmarkConfig:
    """What a benchmark is asked to do; :meth:`validate` checks it before any work.

    Attributes
    ----------
    datasets : str or list of str
        Comma list of registered names or .mat/.npz paths.
    methods : str or list of str
        ``"all"`` or a comma list of registered methods.
    splits : str or list of str
        ``official``, ``kfold``, ``novel-stimulus``, ``stratified`` (comma list; ``stratified`` needs
        the dataset's class labels).
    n_folds : int
        Folds of ``kfold``, ``stratified`` and ``novel-stimulus``.
    seeds : int or list of int
        Number of model seeds (0..seeds-1) or the seeds themselves.
    out : path-like
        Output folder (``runs/`` holds the per-task results; a rerun resumes).
    split_seed : int
        Seed of the fold assignment, the same for every method and model seed.
    fast : bool
        Tiny method settings (a pipeline check, not results).
    method_options : mapping
        ``{method: {option: value}}`` passed to the method factories (checked
        against the options each method accepts).
    data_dir : path-like, optional
        Dataset folder.
    backend : str
        ``"local"``, ``"ray"`` or a registered executor.
    backend_options : mapping
        Extra arguments of the executor (``{"address": "auto"}`` for Ray).
    jobs : int
        Worker processes of the local executor.
    threads : int or None
        Torch threads per worker (None: torch's default).
    train_mode : {"batched", "sequential"}
        ``batched`` trains the folds x seeds of a method that supports it
        (cccv1) together; others always train one by one.
    amp : {"off", "auto", "bf16", "fp16"}
        Mixed precision of batched training.
    deterministic : bool
        Deterministic algorithms during the benchmark (restored afterwards).
    reference : str
        Method every other method is compared with.
    unit : {"image", "stimulus"}
        Unit of the paired statistics.
    track : {"none", "mlflow"}
        Log parameters, metrics and figures (:mod:`cortexflow.reporting.tracking`).
    tracking_uri : str, optional
        MLflow tracking URI (default: a local store in ``out``).
    """

    datasets: str | Sequence[str]
    methods: str | Sequence[str] = "all"
    splits: str | Sequence[str] = "official"
    n_folds: int = 10
    seeds: int | Sequence[int] = 3
    out: str | os.PathLike = "benchmark"
    split_seed: int = 0
    fast: bool = False
    method_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    data_dir: str | os.PathLike | None = None
    backend: str = "local"
    backend_options: Mapping[str, Any] = field(default_factory=dict)
    jobs: int = 1
    threads: int | None = 1
    train_mode: str = "batched"
    amp: str = "off"
    deterministic: bool = False
    reference: str = REFERENCE_METHOD
    unit: str = "image"
    track: str | None = "none"
    tracking_uri: str | None = None

    def replace(self, **changes: Any) -> "BenchmarkConfig":
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    def validate(self) -> None:
        """Check every setting (types, ranges, names); raise :class:`ConfigError` naming the bad value."""
        def integer(name: str, value: Any, low: int) -> None:
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
                raise ConfigError(f"{name} {value!r} must be an integer >= {low}")

        integer("--folds", self.n_folds, 2)
        integer("--split-seed", self.split_seed, 0)
        integer("--jobs", self.jobs, 1)
        if self.threads is not None:
            integer("--threads", self.threads, 0)
        _seed_list(self.seeds)
        if not parse_list(self.datasets):
            raise ConfigError("no dataset given")
        splits = parse_list(self.splits)
        bad = [s for s in splits if s not in SPLIT_KINDS]
        if bad or not splits:
            raise ConfigError(f"unknown split(s) {bad or splits}; allowed: {', '.join(SPLIT_KINDS)}")
        if self.train_mode not in TRAIN_MODES:
            raise ConfigError(f"train_mode={self.train_mode!r}; allowed: {', '.join(TRAIN_MODES)}")
        if self.amp not in AMP_MODES:
            raise ConfigError(f"amp={self.amp!r}; allowed: {', '.join(AMP_MODES)}")
        if self.amp != "off" and self.train_mode != "batched":
            raise ConfigError(f"amp={self.amp!r} applies to batched training only; use train_mode='batched' or amp='off'")
        if self.unit not in UNITS:
            raise ConfigError(f"unit={self.unit!r}; allowed: {', '.join(UNITS)}")
        if self.backend not in BACKENDS:
            raise ConfigError(f"--backend {self.backend!r}; allowed: {', '.join(BACKENDS)}")
        if self.backend_options.get("address") and self.backend != "ray":
            raise ConfigError("--address only applies to --backend ray")
        meth = resolve_methods(self.methods)
        get_method(self.reference)  # an unknown reference is an error, with a suggestion
        unknown = set(self.method_options) - set(meth)
        if unknown:
            raise ConfigError(f"options given for method(s) {sorted(unknown)} that are not benchmarked "
                              f"({', '.join(meth)})")
        for m, opts in self.method_options.items():
            check_options(m, dict(opts))
            try:
                json.dumps(dict(opts), sort_keys=True)
            except TypeError as exc:
                raise ConfigError(f"options of method {m!r} must be JSON-serialisable: {exc}") from exc


@dataclass
class BenchmarkPlan:
    """Tasks of a benchmark and the notes (for example capped folds) made while planning."""

    tasks: list[Task]
    notes: list[str] = field(default_factory=list)
    datasets: dict[str, str] = field(default_factory=dict)  # display name -> how to load
    folds: dict[tuple[str, str], int] = field(default_factory=dict)  # (dataset, split) -> folds used
    data_dir: str | None = None


def _options_tuple(options: Mapping[str, Any] | None) -> tuple:
    return tuple(sorted((str(k), v) for k, v in (options or {}).items()))


def _train_settings(methods: Sequence[str], train_mode: str, amp: str) -> dict[str, tuple]:
    """Per method, the ``Task.train`` settings of ``--train-mode`` and ``--amp``."""
    out = {}
    for m in methods:
        spec = get_method(m)
        if train_mode == "batched" and spec.supports_batched and spec.fit_predict_many is not None:
            out[m] = (("mode", "batched"),) + ((("amp", amp),) if amp != "off" else ())
        else:
            out[m] = ()
    return out


def _refuse_repeats(entries: Sequence[str]) -> None:
    """Raise :class:`ConfigError` when one dataset (name or file) is listed twice; nothing is loaded."""
    seen = set()
    for e in entries:
        key = os.path.realpath(e) if os.path.exists(e) else e
        if key in seen:
            raise ConfigError(f"dataset {e!r} is listed twice in --datasets; list each dataset once")
        seen.add(key)


def _unique_names(entries: Sequence[str], names: Sequence[str]) -> list[str]:
    """Display names of the datasets, unique: a name shared by different files gets its folder as a prefix."""
    out = list(names)
    for name in set(names):
        idx = [i for i, n in enumerate(names) if n == name]
        if len(idx) < 2:
            continue
        for depth in range(1, 64):
            cand = ["/".join(Path(os.path.abspath(entries[i])).parent.parts[-depth:] + (name,)) for i in idx]
            if len(set(cand)) == len(cand):
                break
        for i, c in zip(idx, cand):
            out[i] = c
    if len(set(out)) < len(out):
        raise ConfigError(f"datasets {list(entries)} give the same names {out}; rename the files")
    return out


def build_tasks(config: BenchmarkConfig) -> BenchmarkPlan:
    """Plan every (dataset, method, split, fold, seed) task of a (validated) configuration.

    ``kfold`` uses the same seeded folds (``split_seed``) for every method and
    model seed. ``novel-stimulus`` groups the training rows by stimulus
    content; when fewer unique stimuli exist than ``n_folds``, the number of
    folds is capped at the number of stimuli and a note says so.
    """
    config.validate()
    entries = parse_list(config.datasets)
    meth = resolve_methods(config.methods)
    seed_list = _seed_list(config.seeds)
    data_dir = str(config.data_dir) if config.data_dir is not None else None
    train_of = _train_settings(meth, config.train_mode, config.amp)
    plan = BenchmarkPlan(tasks=[], data_dir=data_dir)
    _refuse_repeats(entries)  # before any file is loaded or downloaded
    loaded = [load_task_data(d, data_dir) for d in entries]
    names = _unique_names(entries, [ds.name for ds in loaded])
    for d, ds, name in zip(entries, loaded, names):
        if ds.metadata.get("format_tests_only"):
            plan.notes.append(f"{name}: this dataset is for format and pipeline tests only; its numbers are no quality claim")
        plan.datasets[name] = d
        for split in parse_list(config.splits):
            if split == "official" and len(ds.Y_test) == 0:  # a spec without a split column
                raise ConfigError(no_official_split_message(name))
            k, notes = resolve_folds(ds.Y_train, split, config.n_folds, name)
            if split == "kfold" and ds.metadata.get("groups_train") is not None:  # grouped folds: checked now
                next(iter_splits(ds, split, k, int(config.split_seed)))
                notes.append(f"{name}: kfold keeps the runs/sessions of its group column apart (group K-fold)")
            plan.notes.extend(notes)
            plan.folds[(name, split)] = k or 1
            for seed in seed_list:
                for fold in range(k or 1):
                    for m in meth:
                        plan.tasks.append(Task(
                            dataset=d, dataset_name=name, checksum=ds.checksum, method=m, split=split,
                            fold=fold, n_folds=k, split_seed=int(config.split_seed), seed=int(seed),
                            fast=bool(config.fast), options=_options_tuple(config.method_options.get(m)),
                            method_version=get_method(m).version, train=train_of[m], data_dir=data_dir))
    return plan


def split_facts(plan: BenchmarkPlan, split_seed: int) -> list[str]:
    """One sentence per (dataset, split): how many test rows show a stimulus present in their training rows."""
    facts = []
    for (name, split), k in plan.folds.items():
        ds = load_task_data(plan.datasets[name], plan.data_dir)
        ids = stimulus_ids(ds)
        stim_tr, stim_scored = ids[: len(ds.Y_train)], ids[scored_slice(ds, split)]
        seen = total = 0
        for s in iter_splits(ds, split, k, split_seed):
            seen += int(np.isin(stim_scored[s.test], stim_tr[s.train]).sum())
            total += len(s.test)
        facts.append(f"{name}, {split}: {seen} of {total} test rows show a stimulus that also appears in the "
                     f"rows the method was trained on")
    return facts


# ------------------------------------------------------------------- run
def _batched(task: Task) -> bool:
    if task.kind != DEFAULT_KIND:
        return False
    spec = get_method(task.method)
    return spec.supports_batched and spec.fit_predict_many is not None and ("mode", "batched") in task.train


def _groups(tasks: Sequence[Task]) -> list[list[Task]]:
    groups: dict[tuple, list[Task]] = {}
    for t in tasks:
        groups.setdefault(t.group_key, []).append(t)
    return list(groups.values())


def execute(plan: BenchmarkPlan, store: ResultStore, config: BenchmarkConfig,
            progress: bool | None = True) -> dict[str, int]:
    """Run the plan's unfinished tasks and store each result as it arrives (:func:`run_tasks`).

    Returns
    -------
    dict
        ``{"total": ..., "done_before": ..., "computed": ...}``
    """
    return run_tasks(plan.tasks, store, backend=config.backend, jobs=config.jobs, threads=config.threads,
                     backend_options=config.backend_options, progress=progress)


def run_tasks(tasks: Sequence[Task], store: ResultStore, *, backend: str = "local", jobs: int = 1,
              threads: int | None = 1, backend_options: Mapping[str, Any] | None = None,
              progress: bool | None = True) -> dict[str, int]:
    """Run the unfinished ``tasks`` with an executor and store each result as it arrives.

    The one execution path of every experiment (``cortexflow benchmark``,
    ``cortexflow eeg evaluate``): finished tasks (valid records in
    ``store``) are skipped; tasks of methods with a batched hook (in
    ``batched`` train mode) go to the executor as groups (all folds x seeds
    of one dataset, split and options), the others one by one. Every
    unfinished task is locked first; tasks that another process writing into
    the same folder holds are waited for, not recomputed. After Ctrl-C or an
    error the results stored so far are kept.

    Returns
    -------
    dict
        ``{"total": ..., "done_before": ..., "computed": ...}``
    """
    pending = [t for t in tasks if not store.has(t)]
    done_before = len(tasks) - len(pending)
    if done_before:
        logger.info("%d of %d runs already finished in %s; resuming", done_before, len(tasks), store.root)
    computed = 0
    try:
        with make_executor(backend, jobs=jobs, threads=threads, progress=progress,
                           **dict(backend_options or {})) as executor:
            todo, elsewhere = store.claim(pending)
            while todo:
                groups = _groups([t for t in todo if _batched(t)])
                single = [t for t in todo if not _batched(t)]
                with contextlib.closing(executor.run_all(groups, single)) as results:
                    for res in results:
                        store.save(res)
                        computed += 1
                todo = store.wait_for(elsewhere) if elsewhere else []
                elsewhere = []
    finally:
        store.release_all()
    return {"total": len(tasks), "done_before": done_before, "computed": computed}


def collect_results(plan: BenchmarkPlan, store: ResultStore) -> pd.DataFrame:
    """The tidy per-image table of every finished task of the plan."""
    rows: list[dict] = []
    for t in plan.tasks:
        if store.has(t):
            rows.extend(store.load_record(t)["rows"])
    cols = list(ID_COLUMNS) + list(METRIC_COLUMNS)
    df = pd.DataFrame(rows, columns=cols)
    return df.sort_values(["dataset", "split", "method", "seed", "fold", "image"], kind="stable").reset_index(drop=True)


def grid_data(plan: BenchmarkPlan, store: ResultStore, methods: Sequence[str]) -> dict[str, dict]:
    """Per dataset: test stimuli and each method's reconstructions for the figure grid.

    Uses the official split, seed 0 (or the smallest seed run) when it was run;
    otherwise fold 0 of the first split run, and the caption says so.
    """
    out: dict[str, dict] = {}
    by_ds: dict[str, list[Task]] = {}
    for t in plan.tasks:
        by_ds.setdefault(t.dataset_name, []).append(t)
    for name, tasks in by_ds.items():
        finished = [t for t in tasks if store.has(t)]
        if not finished:
            continue
        splits = [s for s in SPLIT_KINDS if any(t.split == s for t in finished)]
        split = "official" if "official" in splits else splits[0]
        cand = [t for t in finished if t.split == split and t.fold == 0]
        seed = min(t.seed for t in cand)
        chosen = {t.method: t for t in cand if t.seed == seed}
        first = next(iter(chosen.values()))
        ds = load_task_data(first.dataset, first.data_dir)
        recon = {}
        test_index = None
        for m in methods:
            if m in chosen:
                pred, idx = store.load_predictions(chosen[m])
                recon[m] = pred
                test_index = idx
        if test_index is None:
            continue
        where = "official test split" if split == "official" else f"{split} split, fold 0"
        out[name] = {"stimuli": scored_images(ds, split)[test_index], "reconstructions": recon,
                     "caption": f"{name}: {where}, seed {seed}", "split": split, "seed": seed}
    return out


def _method_info(plan: BenchmarkPlan, store: ResultStore) -> dict[str, list[str]]:
    """Per method, one line per data set summarising the ``report_info_`` facts of its runs.

    A fact with one value over the runs is shown once (``key: value``); a
    number that varies is shown as its range, anything else as its distinct values.
    """
    facts: dict[str, dict[str, dict[str, list]]] = {}
    runs: dict[tuple[str, str], int] = {}
    for t in plan.tasks:
        if not store.has(t):
            continue
        info = store.load_record(t).get("report_info") or {}
        if not isinstance(info, dict) or not info:
            continue
        runs[t.method, t.dataset_name] = runs.get((t.method, t.dataset_name), 0) + 1
        per_key = facts.setdefault(t.method, {}).setdefault(t.dataset_name, {})
        for key, value in info.items():
            values = per_key.setdefault(key, [])
            if value not in values:
                values.append(value)
    out: dict[str, list[str]] = {}
    for method, by_dataset in facts.items():
        for dataset, per_key in by_dataset.items():
            parts = []
            for key in sorted(per_key):
                values = per_key[key]
                numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
                if len(values) == 1:
                    parts.append(f"{key}: {values[0]}")
                elif numeric:
                    parts.append(f"{key}: {min(values):.4g} to {max(values):.4g}")
                else:
                    parts.append(f"{key}: " + " / ".join(str(v) for v in values))
            n = runs[method, dataset]
            out.setdefault(method, []).append(f"{dataset} ({n} run{'s' if n != 1 else ''}): " + ", ".join(parts))
    return out


@contextlib.contextmanager
def _deterministic(enabled: bool):
    """Deterministic algorithms for the benchmark (and its workers), restored afterwards."""
    if not enabled:
        yield
        return
    before = torch.are_deterministic_algorithms_enabled()
    cudnn = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    env = {k: os.environ.get(k) for k in ("CORTEXFLOW_DETERMINISTIC", "CUBLAS_WORKSPACE_CONFIG")}
    set_deterministic(True)
    os.environ["CORTEXFLOW_DETERMINISTIC"] = "1"  # forwarded to worker processes
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn
        for k, v in env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def run_benchmark(config: BenchmarkConfig, *, progress: bool | None = True, report: bool = True,
                  command: str | None = None) -> dict[str, Any]:
    """Plan, run (resuming), and write ``results.csv``, ``stats.csv``, ``summary.md`` and ``report.html``.

    Parameters
    ----------
    config : BenchmarkConfig
        What to run; checked (with the output folder's writability) before any work.
    progress : bool or None
        Progress bars.
    report : bool
        Write the statistics and the report.
    command : str, optional
        The command line, recorded in the report.

    Returns
    -------
    dict
        ``paths`` written, run counts (``total``, ``done_before``, ``computed``),
        ``wall_seconds`` and planning ``notes``.

    Examples
    --------
    >>> cfg = BenchmarkConfig("vangerven", "mean-image,ridge", "kfold", n_folds=3, seeds=1, out="bench")
    >>> cfg.validate()
    """
    t0 = time.perf_counter()
    config.validate()
    with removed_if_empty_on_error(Path(config.out) / "runs"):  # a refused benchmark leaves no empty OUT/runs/
        out = check_output_dir(config.out)
        tracker = make_tracker(config.track, out, config.tracking_uri)  # checks the choice before any work
        with _deterministic(config.deterministic):
            plan = build_tasks(config)
            store = ResultStore(out)
            counts = execute(plan, store, config, progress=progress)
    # benchmarks sharing a folder share its runs (per-run locks); the tables and the report have one writer at a time
    with file_lock(out / "runs" / ".report.lock", what="benchmark output folder"):
        return _write_outputs(config, plan, store, counts, out, tracker, t0, report, command)


def _write_outputs(config, plan, store, counts, out, tracker, t0, report, command) -> dict[str, Any]:
    """results.csv, the report and benchmark.json of a finished :func:`run_benchmark`."""
    wall = time.perf_counter() - t0
    results = collect_results(plan, store)
    paths: dict[str, str] = {}
    write_csv(out / "results.csv", results)
    paths["results"] = str(out / "results.csv")
    fit_seconds: dict[str, list[float]] = {}
    fit_cpu: dict[str, list[float]] = {}
    for t in plan.tasks:
        rec = store.load_record(t)
        fit_seconds.setdefault(t.method, []).append(float(rec.get("fit_seconds", 0.0)))
        cpu = rec.get("fit_cpu_seconds")
        fit_cpu.setdefault(t.method, []).append(float("nan") if cpu is None else float(cpu))
    meth = resolve_methods(config.methods)
    meta = {
        "command": command,
        "cortexflow_version": __version__,
        "datasets": plan.datasets,
        "methods": meth,
        "splits": parse_list(config.splits),
        "folds": {f"{d}/{s}": k for (d, s), k in plan.folds.items()},
        "seeds": _seed_list(config.seeds),
        "split_seed": config.split_seed,
        "fast": config.fast,
        "notes": plan.notes,
        "split_facts": split_facts(plan, config.split_seed),
        "method_info": _method_info(plan, store),
        "runs_total": counts["total"],
        "runs_resumed": counts["done_before"],
        "runs_computed": counts["computed"],
        "wall_seconds_this_invocation": wall,
        "fit_seconds_per_method": {m: {"sum": float(np.sum(v)), "mean": float(np.mean(v)), "n": len(v),
                                       "cpu_mean": (float(np.nanmean(fit_cpu[m]))
                                                    if np.isfinite(fit_cpu[m]).any() else None)}
                                   for m, v in fit_seconds.items()},
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "backend": config.backend,
        "backend_options": dict(config.backend_options),
        "train_mode": config.train_mode,
        "amp": config.amp,
        "deterministic": config.deterministic,
        "jobs": config.jobs,
        "threads": config.threads,
        "reference": config.reference,
        "unit": config.unit,
    }
    if report:
        stats = (paired_comparisons(results, reference=config.reference, unit=config.unit)
                 if config.reference in meth else None)
        if stats is None:
            meta["notes"] = meta["notes"] + [f"reference method {config.reference!r} was not benchmarked: "
                                             "no paired statistics"]
        paths.update(write_report(out, results, stats, grid_data(plan, store, meth), meta))
    meta["wall_seconds_total"] = time.perf_counter() - t0
    atomic_write_json(out / "benchmark.json", meta)
    paths["benchmark"] = str(out / "benchmark.json")
    if tracker.enabled:
        paths["tracking"] = log_benchmark(tracker, meta, results, out)
    return {"paths": paths, **counts, "wall_seconds": meta["wall_seconds_total"], "notes": plan.notes}
