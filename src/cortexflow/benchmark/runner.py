"""Benchmark protocol: tasks, a pure ``run_task``, backends and a resumable results store.

One *task* is one (dataset, method, split, fold, seed). :func:`run_task` is a
pure function of its :class:`Task` (it loads the dataset, checks its checksum,
fits the method on the task's training rows and scores its test rows), so any
backend can execute it: the built-in ``"local"`` backend runs tasks in this
process or in a pool of processes; other backends (a cluster) can be added
with :func:`register_backend`.

Each finished task is written at once, atomically, to
``OUT/runs/<key>.json`` (per-image metric rows, timings, the task) and
``OUT/runs/<key>.npz`` (predictions and test-row indices). The key is a hash
of everything that determines the result (method name, version and options,
dataset checksum, split kind, number of folds, split seed, fold, seed, the
``fast`` flag and :data:`PROTOCOL_VERSION`), so a benchmark run again resumes:
it recomputes nothing that finished, and nothing whose inputs did not change.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import logging
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd

from cortexflow.benchmark.methods import REFERENCE_METHOD, get_method, make_estimator, resolve_methods
from cortexflow.data.splits import SPLIT_KINDS, kfold_splits, novel_stimulus_splits, stimulus_groups
from cortexflow.evaluation.metrics import evaluate_reconstructions
from cortexflow.exceptions import ChecksumError, ConfigError, DataValidationError
from cortexflow.utils.io import atomic_write_json, atomic_write_with
from cortexflow.utils.progress import progress_bar

__all__ = [
    "PROTOCOL_VERSION",
    "METRIC_COLUMNS",
    "ID_COLUMNS",
    "Task",
    "TaskResult",
    "BenchmarkPlan",
    "ResultStore",
    "run_task",
    "score_task",
    "build_tasks",
    "run_benchmark",
    "register_backend",
    "BACKENDS",
    "parse_list",
]

logger = logging.getLogger(__name__)

#: bump when a change of the protocol (splits, metrics, row layout) changes results
PROTOCOL_VERSION = "1"
METRIC_COLUMNS = ("mse", "pearson", "ssim", "psnr", "two_way")
ID_COLUMNS = ("dataset", "method", "split", "fold", "seed", "image", "stimulus")


@dataclass(frozen=True)
class Task:
    """One (dataset, method, split, fold, seed) run; everything :func:`run_task` needs.

    Attributes
    ----------
    dataset : str
        Registered dataset name or path of a .mat/.npz file (how to load it).
    dataset_name : str
        Name shown in results.
    checksum : str
        sha256 of the dataset; :func:`run_task` refuses other data.
    method : str
        Registered method name.
    split : {"official", "kfold", "novel-stimulus"}
    fold : int
        Fold index (0 for the official split).
    n_folds : int
        Number of folds of the split (0 for the official split).
    split_seed : int
        Seed of the fold assignment (fixed for every method and model seed).
    seed : int
        Model seed.
    fast : bool
        Tiny method settings (tests, smoke runs).
    options : tuple of (str, value)
        Method options (sorted, JSON-serialisable).
    method_version : str
        Version of the method's code (part of the key).
    train : tuple of (str, value)
        Training-engine settings that change results (``("mode", "batched")``,
        ``("amp", "bf16")``); empty for the sequential trainer. Part of the key
        when not empty.
    data_dir : str, optional
        Data folder; not part of the key.
    """

    dataset: str
    dataset_name: str
    checksum: str
    method: str
    split: str
    fold: int
    n_folds: int
    split_seed: int
    seed: int
    fast: bool = False
    options: tuple = ()
    method_version: str = "1"
    train: tuple = ()  # issue 7: batched training / AMP settings (part of the key when set)
    data_dir: str | None = None

    def key_payload(self) -> dict[str, Any]:
        """Everything that determines the result of this task."""
        return {
            "protocol": PROTOCOL_VERSION,
            "method": self.method,
            "method_version": self.method_version,
            "options": [list(kv) for kv in self.options],
            "fast": self.fast,
            "dataset_checksum": self.checksum,
            "split": self.split,
            "n_folds": self.n_folds,
            "split_seed": self.split_seed,
            "fold": self.fold,
            "seed": self.seed,
        } | ({"train": [list(kv) for kv in self.train]} if self.train else {})

    @property
    def key(self) -> str:
        """Hex digest naming this task's files in the results store."""
        blob = json.dumps(self.key_payload(), sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:24]

    @property
    def label(self) -> str:
        return f"{self.dataset_name}/{self.method}/{self.split}/fold{self.fold}/seed{self.seed}"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["options"] = [list(kv) for kv in self.options]
        d["train"] = [list(kv) for kv in self.train]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Task":
        d = dict(d)
        d["options"] = tuple(tuple(kv) for kv in d.get("options", ()))
        d["train"] = tuple(tuple(kv) for kv in d.get("train", ()))
        return cls(**d)


@dataclass
class TaskResult:
    """What :func:`run_task` returns.

    Attributes
    ----------
    task : Task
    rows : list of dict
        One row per test image: the :data:`ID_COLUMNS` and :data:`METRIC_COLUMNS`.
    predictions : ndarray, shape (n_test, 28, 28)
    test_index : ndarray of int
        Rows of the test images (in the official test set for the official
        split, in the official training set otherwise).
    fit_seconds, predict_seconds : float
        Wall-clock seconds.
    fit_cpu_seconds : float
        CPU seconds of this process during ``fit`` (NaN when not measured);
        on a shared, busy machine a steadier measure of cost than wall time.
    """

    task: Task
    rows: list[dict]
    predictions: np.ndarray
    test_index: np.ndarray
    fit_seconds: float = 0.0
    predict_seconds: float = 0.0
    fit_cpu_seconds: float = float("nan")


# ----------------------------------------------------------------- data
@functools.lru_cache(maxsize=8)
def _load(dataset: str, data_dir: str | None):
    from cortexflow.data.loading import load_dataset

    return load_dataset(dataset, data_dir)


def _stimulus_ids(ds) -> tuple[np.ndarray, np.ndarray]:
    ids = stimulus_groups(np.concatenate([ds.Y_train, ds.Y_test], axis=0))
    return ids[: len(ds.Y_train)], ids[len(ds.Y_train):]


def split_rows(ds, split: str, fold: int, n_folds: int, split_seed: int):
    """Training and test rows of one fold.

    Returns
    -------
    X_train, Y_train, X_test, Y_test, test_index, test_stimulus : ndarray
    """
    stim_tr, stim_te = _stimulus_ids(ds)
    if split == "official":
        idx = np.arange(len(ds.X_test))
        return ds.X_train, ds.Y_train, ds.X_test, ds.Y_test, idx, stim_te
    if split == "kfold":
        folds = list(kfold_splits(len(ds.X_train), n_folds, split_seed))
    elif split == "novel-stimulus":
        folds = list(novel_stimulus_splits(ds.Y_train, n_folds, split_seed))
    else:
        raise ConfigError(f"unknown split {split!r}; allowed: {', '.join(SPLIT_KINDS)}")
    if not 0 <= fold < len(folds):
        raise ConfigError(f"fold {fold} does not exist; the {split} split has {len(folds)} folds")
    s = folds[fold]
    return (ds.X_train[s.train], ds.Y_train[s.train], ds.X_train[s.test], ds.Y_train[s.test],
            np.asarray(s.test), stim_tr[s.test])


def split_facts(plan: "BenchmarkPlan", split_seed: int) -> list[str]:
    """One sentence per (dataset, split): how many test rows show a stimulus present in their training rows."""
    facts = []
    for (name, split), k in plan.folds.items():
        ds = _load(plan.datasets[name], plan.data_dir)
        stim_tr, stim_te = _stimulus_ids(ds)
        if split == "official":
            seen, total = int(np.isin(stim_te, stim_tr).sum()), len(stim_te)
        else:
            folds = (kfold_splits(len(stim_tr), k, split_seed) if split == "kfold"
                     else novel_stimulus_splits(ds.Y_train, k, split_seed))
            seen = total = 0
            for s in folds:
                seen += int(np.isin(stim_tr[s.test], stim_tr[s.train]).sum())
                total += len(s.test)
        facts.append(f"{name}, {split}: {seen} of {total} test rows show a stimulus that also appears in the "
                     f"rows the method was trained on")
    return facts


def run_task(task: Task) -> TaskResult:
    """Fit the task's method on its training rows and score its test rows.

    A pure function of ``task`` (besides reading the dataset file): it can run
    in any process or on any machine that can load the dataset.

    Raises
    ------
    ChecksumError
        The dataset found does not have the task's checksum.
    """
    ds = _load(task.dataset, task.data_dir)
    if ds.checksum != task.checksum:
        raise ChecksumError(
            f"dataset {task.dataset!r} has checksum {ds.checksum[:12]}..., but task {task.label} "
            f"was planned for {task.checksum[:12]}..."
        )
    X_tr, Y_tr, X_te, Y_te, test_index, stim = split_rows(ds, task.split, task.fold, task.n_folds, task.split_seed)
    est = make_estimator(task.method, task.seed, task.dataset_name, len(X_tr), fast=task.fast, **dict(task.options))
    t0, c0 = time.perf_counter(), time.process_time()
    est.fit(X_tr, Y_tr)
    t1, c1 = time.perf_counter(), time.process_time()
    pred = np.asarray(est.predict(X_te), dtype=np.float32)
    t2 = time.perf_counter()
    result = score_task(task, pred, Y_te, test_index, stim, t1 - t0, t2 - t1)
    result.fit_cpu_seconds = c1 - c0
    return result


def score_task(task: Task, pred, Y_te: np.ndarray, test_index: np.ndarray, stim: np.ndarray,
               fit_seconds: float = 0.0, predict_seconds: float = 0.0) -> TaskResult:
    """Check and score one task's predictions of its test rows (shared by ``run_task`` and batched hooks)."""
    pred = np.asarray(pred, dtype=np.float32)
    if pred.shape != Y_te.shape:
        raise DataValidationError(f"method {task.method!r} predicted shape {pred.shape}; expected {Y_te.shape}")
    if not np.all(np.isfinite(pred)):
        raise DataValidationError(f"method {task.method!r} predicted non-finite values in task {task.label}")
    pred = np.clip(pred, 0.0, 1.0)
    scores = evaluate_reconstructions(true=Y_te, pred=pred, metrics=list(METRIC_COLUMNS))
    rows = []
    for i in range(len(pred)):
        row = {"dataset": task.dataset_name, "method": task.method, "split": task.split, "fold": task.fold,
               "seed": task.seed, "image": int(test_index[i]), "stimulus": int(stim[i])}
        row.update({m: float(scores[m][i]) for m in METRIC_COLUMNS})
        rows.append(row)
    return TaskResult(task, rows, pred, np.asarray(test_index, dtype=np.int64), fit_seconds, predict_seconds)


# ---------------------------------------------------------------- store
class ResultStore:
    """Per-task results under ``root/runs``, written atomically as tasks finish."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.runs = self.root / "runs"

    def json_path(self, task: Task) -> Path:
        return self.runs / f"{task.key}.json"

    def npz_path(self, task: Task) -> Path:
        return self.runs / f"{task.key}.npz"

    def has(self, task: Task) -> bool:
        """Whether the task finished (its JSON is present, readable and of this key)."""
        p = self.json_path(task)
        if not p.is_file() or not self.npz_path(task).is_file():
            return False
        try:
            return json.loads(p.read_text()).get("key") == task.key
        except (json.JSONDecodeError, UnicodeDecodeError, OSError):
            logger.warning("unreadable result file %s; the task will be recomputed", p)
            return False

    def save(self, result: TaskResult) -> Path:
        """Write predictions (npz), then the rows (json, the marker of a finished task)."""
        task = result.task

        def write_npz(fh):
            buf = io.BytesIO()
            np.savez_compressed(buf, predictions=result.predictions.astype(np.float32), test_index=result.test_index)
            fh.write(buf.getvalue())

        atomic_write_with(self.npz_path(task), write_npz)
        import cortexflow

        payload = {
            "key": task.key,
            "task": task.to_dict(),
            "key_payload": task.key_payload(),
            "rows": result.rows,
            "fit_seconds": result.fit_seconds,
            "predict_seconds": result.predict_seconds,
            "fit_cpu_seconds": None if np.isnan(result.fit_cpu_seconds) else result.fit_cpu_seconds,
            "cortexflow_version": cortexflow.__version__,
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        return atomic_write_json(self.json_path(task), payload)

    def load_record(self, task: Task) -> dict:
        return json.loads(self.json_path(task).read_text())

    def load_predictions(self, task: Task) -> tuple[np.ndarray, np.ndarray]:
        with np.load(self.npz_path(task), allow_pickle=False) as z:
            return z["predictions"], z["test_index"]


# -------------------------------------------------------------- backends
Executor = Callable[..., Iterator[TaskResult]]
BACKENDS: dict[str, Executor] = {}


def register_backend(name: str, executor: Executor, *, overwrite: bool = False) -> None:
    """Register ``executor(tasks, *, jobs, threads, progress) -> iterator of TaskResult``.

    The executor must yield one :class:`TaskResult` per task as each finishes
    (in any order); the runner stores each at once.
    """
    if name in BACKENDS and not overwrite:
        raise ConfigError(f"backend {name!r} is already registered")
    BACKENDS[name] = executor


def _set_threads(threads: int | None) -> None:
    """Limit torch and BLAS/OpenMP threads of this process (worker initialiser)."""
    if threads:
        import torch
        from threadpoolctl import threadpool_limits

        torch.set_num_threads(int(threads))
        threadpool_limits(int(threads))


def _local_executor(tasks: Sequence[Task], *, jobs: int = 1, threads: int | None = 1,
                    progress: bool | None = True) -> Iterator[TaskResult]:
    """Run tasks here, one after another, or in ``jobs`` worker processes."""
    if jobs > 1:
        yield from _local_run_all({}, tasks, jobs=jobs, threads=threads, progress=progress)
        return
    import contextlib

    import torch
    from threadpoolctl import threadpool_limits

    bar = progress_bar(total=len(tasks), progress=progress, desc="benchmark", unit="run", leave=True)
    old = torch.get_num_threads()
    limits = threadpool_limits(int(threads)) if threads else contextlib.nullcontext()
    if threads:
        torch.set_num_threads(int(threads))
    try:
        with limits:
            for t in tasks:
                bar.set_postfix_str(t.label)
                res = run_task(t)
                bar.update(1)
                yield res
    finally:
        torch.set_num_threads(old)
        bar.close()


def _local_run_batched(hook: Callable[..., Iterable], tasks: Sequence[Task], *, jobs: int = 1,
                       threads: int | None = 1, progress: bool | None = True) -> Iterator[tuple[Task, TaskResult]]:
    """Batched groups on the local backend: in this process, or split over ``jobs`` worker processes.

    With ``jobs > 1`` the groups are split as in :func:`_local_run_all`.
    """
    if jobs <= 1:
        yield from hook(tasks, progress=progress)
        return
    for res in _local_run_all({hook: list(tasks)}, [], jobs=jobs, threads=threads, progress=progress):
        yield res.task, res


def _split_groups(tasks: Sequence[Task], jobs: int) -> list[list[Task]]:
    """Each (dataset, split, options) group dealt round-robin into ``jobs`` parts (non-empty parts only)."""
    from cortexflow.benchmark.backends import group_batched_tasks

    return [part for group in group_batched_tasks(tasks) for part in (group[i::jobs] for i in range(jobs)) if part]


def _local_run_all(batched: Mapping[Callable[..., Iterable], Sequence[Task]], rest: Sequence[Task], *, jobs: int,
                   threads: int | None = 1, progress: bool | None = True) -> Iterator[TaskResult]:
    """Batched groups and one-by-one tasks in one pool of ``jobs`` worker processes.

    Each batched group (all folds x seeds of a method on one dataset and split)
    is dealt round-robin into ``jobs`` parts that train as separate stacks; a
    member's result does not depend on which members share its stack
    (``tests/test_batched.py``), so splitting changes the timing, not the
    numbers. The parts are submitted first (they are the longest), the other
    tasks after them, and every worker takes the next job as soon as it is
    free: no core waits for the batched phase to end.
    """
    import multiprocessing as mp

    from cortexflow.benchmark.backends import _run_group

    parts = [(hook, part) for hook, tasks in batched.items() for part in _split_groups(tasks, jobs)]
    total = sum(len(p) for _, p in parts) + len(rest)
    bar = progress_bar(total=total, progress=progress, desc="benchmark", unit="run", leave=True)
    try:
        ctx = mp.get_context("spawn")
        with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, initializer=_set_threads,
                                 initargs=(threads,)) as pool:
            futures = [pool.submit(_run_group, part) for part in parts] + [pool.submit(run_task, t) for t in rest]
            for fut in as_completed(futures):
                out = fut.result()
                for res in (out if isinstance(out, list) else [out]):
                    res = res[1] if isinstance(res, tuple) else res
                    bar.set_postfix_str(res.task.label)
                    bar.update(1)
                    yield res
    finally:
        bar.close()


_local_executor.run_batched = _local_run_batched  # type: ignore[attr-defined]
_local_executor.run_all = _local_run_all  # type: ignore[attr-defined]
register_backend("local", _local_executor)


# ------------------------------------------------------------------ plan
@dataclass
class BenchmarkPlan:
    """Tasks of a benchmark and the notes (for example capped folds) made while planning."""

    tasks: list[Task]
    notes: list[str] = field(default_factory=list)
    datasets: dict[str, str] = field(default_factory=dict)  # display name -> how to load
    folds: dict[tuple[str, str], int] = field(default_factory=dict)  # (dataset, split) -> folds used
    data_dir: str | None = None


def parse_list(value: str | Iterable[str] | None) -> list[str]:
    """``"a,b"`` or an iterable -> list of stripped, non-empty strings."""
    if value is None:
        return []
    items = value.split(",") if isinstance(value, str) else list(value)
    return [str(s).strip() for s in items if str(s).strip()]


def _seeds(seeds: int | Sequence[int]) -> list[int]:
    if isinstance(seeds, (int, np.integer)):
        if seeds < 1:
            raise ConfigError(f"seeds={seeds} must be at least 1")
        return list(range(int(seeds)))
    out = [int(s) for s in seeds]
    if not out:
        raise ConfigError("no seed given")
    return out


def _options_tuple(options: Mapping[str, Any] | None) -> tuple:
    if not options:
        return ()
    try:
        json.dumps(dict(options), sort_keys=True)
    except TypeError as exc:
        raise ConfigError(f"method options must be JSON-serialisable: {exc}") from exc
    return tuple(sorted((str(k), v) for k, v in options.items()))


def _train_settings(methods: Sequence[str], train_mode: str, amp: str) -> dict[str, tuple]:
    """Per method, the ``Task.train`` settings of ``--train-mode`` and ``--amp`` (issue 7)."""
    from cortexflow.training.devices import AMP_MODES

    if train_mode not in ("batched", "sequential"):
        raise ConfigError(f"train_mode={train_mode!r}; allowed: batched, sequential")
    if amp not in AMP_MODES:
        raise ConfigError(f"amp={amp!r}; allowed: {', '.join(AMP_MODES)}")
    if amp != "off" and train_mode != "batched":
        raise ConfigError(f"amp={amp!r} applies to batched training only; use train_mode='batched' or amp='off'")
    out = {}
    for m in methods:
        spec = get_method(m)
        if train_mode == "batched" and spec.supports_batched and spec.fit_predict_many is not None:
            out[m] = (("mode", "batched"),) + ((("amp", amp),) if amp != "off" else ())
        else:
            out[m] = ()
    return out


def build_tasks(
    datasets: str | Iterable[str],
    methods: str | Iterable[str] = "all",
    splits: str | Iterable[str] = "official",
    n_folds: int = 10,
    seeds: int | Sequence[int] = 3,
    *,
    split_seed: int = 0,
    fast: bool = False,
    method_options: Mapping[str, Mapping[str, Any]] | None = None,
    data_dir: str | os.PathLike | None = None,
    train_mode: str = "batched",
    amp: str = "off",
) -> BenchmarkPlan:
    """Plan every (dataset, method, split, fold, seed) task.

    ``kfold`` uses the same seeded folds (``split_seed``) for every method and
    model seed. ``novel-stimulus`` groups the training rows by stimulus
    content; when fewer unique stimuli exist than ``n_folds``, the number of
    folds is capped at the number of stimuli and a note says so.
    """
    ds_list = parse_list(datasets)
    if not ds_list:
        raise ConfigError("no dataset given")
    meth = resolve_methods(methods)
    split_list = parse_list(splits)
    bad = [s for s in split_list if s not in SPLIT_KINDS]
    if bad or not split_list:
        raise ConfigError(f"unknown split(s) {bad or split_list}; allowed: {', '.join(SPLIT_KINDS)}")
    seed_list = _seeds(seeds)
    method_options = dict(method_options or {})
    unknown = set(method_options) - set(meth)
    if unknown:
        raise ConfigError(f"options given for method(s) {sorted(unknown)} that are not benchmarked ({', '.join(meth)})")
    data_dir_s = str(data_dir) if data_dir is not None else None
    train_of = _train_settings(meth, train_mode, amp)  # issue 7
    plan = BenchmarkPlan(tasks=[], data_dir=data_dir_s)
    for d in ds_list:
        ds = _load(d, data_dir_s)
        if ds.metadata.get("format_tests_only"):
            plan.notes.append(f"{ds.name}: this dataset is for format and pipeline tests only; its numbers are no quality claim")
        plan.datasets[ds.name] = d
        n_train = len(ds.X_train)
        for split in split_list:
            if split == "official":
                fold_ids, k = [0], 0
            elif split == "kfold":
                if not 2 <= n_folds <= n_train:
                    raise ConfigError(f"--folds {n_folds} must lie between 2 and the {n_train} training rows of {ds.name}")
                fold_ids, k = list(range(n_folds)), n_folds
            else:
                n_groups = len(np.unique(stimulus_groups(ds.Y_train)))
                if n_groups < 2:
                    raise ConfigError(f"{ds.name}: novel-stimulus needs at least 2 unique training stimuli; found {n_groups}")
                k = n_folds
                if n_groups == n_train:
                    plan.notes.append(f"{ds.name}: every training stimulus is unique, so novel-stimulus measures "
                                      "the same thing as kfold (generalisation to unseen images)")
                if n_folds > n_groups:
                    k = n_groups
                    plan.notes.append(
                        f"{ds.name}: novel-stimulus asked for {n_folds} folds but its training rows hold only "
                        f"{n_groups} unique stimuli; using {n_groups} folds (leave-one-stimulus-out)")
                    logger.warning(plan.notes[-1])
                if k < 2:
                    raise ConfigError(f"--folds {n_folds} must be at least 2")
                fold_ids = list(range(k))
            plan.folds[(ds.name, split)] = k or 1
            for seed in seed_list:
                for fold in fold_ids:
                    for m in meth:
                        spec = get_method(m)
                        plan.tasks.append(Task(
                            dataset=d, dataset_name=ds.name, checksum=ds.checksum, method=m, split=split,
                            fold=fold, n_folds=k, split_seed=int(split_seed), seed=int(seed), fast=bool(fast),
                            options=_options_tuple(method_options.get(m)), method_version=spec.version,
                            train=train_of[m], data_dir=data_dir_s))
    return plan


# ------------------------------------------------------------------- run
def execute(plan: BenchmarkPlan, store: ResultStore, *, backend: str = "local", jobs: int = 1,
            threads: int | None = 1, progress: bool | None = True,
            backend_options: Mapping[str, Any] | None = None) -> dict[str, int]:
    """Run the plan's unfinished tasks and store each result as it arrives.

    Methods registered with ``supports_batched`` get all their unfinished
    tasks at once through their ``fit_predict_many`` hook; the rest go to
    the backend.

    Returns
    -------
    dict
        ``{"total": ..., "done_before": ..., "computed": ...}``
    """
    if backend not in BACKENDS:
        raise ConfigError(f"unknown backend {backend!r}; available: {', '.join(BACKENDS)}")
    if jobs < 1:
        raise ConfigError(f"jobs={jobs} must be at least 1")
    pending = [t for t in plan.tasks if not store.has(t)]
    done_before = len(plan.tasks) - len(pending)
    if done_before:
        logger.info("%d of %d runs already finished in %s; resuming", done_before, len(plan.tasks), store.root)
    computed = 0
    batched: dict[str, list[Task]] = {}
    rest: list[Task] = []
    for t in pending:
        spec = get_method(t.method)
        if spec.supports_batched and spec.fit_predict_many is not None and ("mode", "batched") in t.train:
            batched.setdefault(t.method, []).append(t)
        else:
            rest.append(t)
    executor = BACKENDS[backend]
    backend_options = dict(backend_options or {})
    run_all = getattr(executor, "run_all", None)  # the local backend: one pool for batched parts and tasks
    if run_all is not None and jobs > 1:
        hooks = {get_method(name).fit_predict_many: tasks for name, tasks in batched.items()}
        for res in run_all(hooks, rest, jobs=jobs, threads=threads, progress=progress, **backend_options):
            store.save(res)
            computed += 1
        return {"total": len(plan.tasks), "done_before": done_before, "computed": computed}
    for name, tasks in batched.items():
        hook = get_method(name).fit_predict_many
        run_batched = getattr(executor, "run_batched", None)  # issue 7: a cluster backend runs the groups
        items = (run_batched(hook, tasks, jobs=jobs, threads=threads, progress=progress, **backend_options)
                 if run_batched is not None else hook(tasks, progress=progress))
        for item in items:
            res = item[1] if isinstance(item, tuple) else item
            store.save(res)
            computed += 1
    for res in executor(rest, jobs=jobs, threads=threads, progress=progress, **backend_options):
        store.save(res)
        computed += 1
    return {"total": len(plan.tasks), "done_before": done_before, "computed": computed}


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
        ds = _load(chosen[next(iter(chosen))].dataset, chosen[next(iter(chosen))].data_dir)
        recon = {}
        test_index = None
        for m in methods:
            if m in chosen:
                pred, idx = store.load_predictions(chosen[m])
                recon[m] = pred
                test_index = idx
        if test_index is None:
            continue
        stimuli = ds.Y_test[test_index] if split == "official" else ds.Y_train[test_index]
        where = "official test split" if split == "official" else f"{split} split, fold 0"
        out[name] = {"stimuli": stimuli, "reconstructions": recon, "caption": f"{name}: {where}, seed {seed}",
                     "split": split, "seed": seed}
    return out


def run_benchmark(
    datasets: str | Iterable[str],
    methods: str | Iterable[str] = "all",
    splits: str | Iterable[str] = "official",
    n_folds: int = 10,
    seeds: int | Sequence[int] = 3,
    out: str | os.PathLike = "benchmark",
    *,
    split_seed: int = 0,
    fast: bool = False,
    method_options: Mapping[str, Mapping[str, Any]] | None = None,
    data_dir: str | os.PathLike | None = None,
    backend: str = "local",
    jobs: int = 1,
    threads: int | None = 1,
    progress: bool | None = True,
    report: bool = True,
    reference: str = REFERENCE_METHOD,
    unit: str = "image",
    command: str | None = None,
    train_mode: str = "batched",
    amp: str = "off",
    deterministic: bool = False,
    backend_options: Mapping[str, Any] | None = None,
    track: str | None = None,
    tracking_uri: str | None = None,
) -> dict[str, Any]:
    """Plan, run (resuming), and write ``results.csv``, ``stats.csv``, ``summary.md`` and ``report.html``.

    Parameters
    ----------
    datasets, methods, splits : str or iterable
        Comma lists (``methods="all"`` for every registered method).
    n_folds : int
        Folds of ``kfold`` and ``novel-stimulus``.
    seeds : int or sequence of int
        Number of model seeds (0..seeds-1) or the seeds themselves.
    out : path-like
        Output folder (``runs/`` holds the per-task results).
    split_seed : int
        Seed of the fold assignment, the same for every method and model seed.
    fast : bool
        Tiny method settings (tests, smoke runs).
    method_options : mapping, optional
        ``{method: {option: value}}`` passed to the method factories.
    data_dir : path-like, optional
        Dataset folder.
    backend : str
        ``"local"`` (or a registered backend).
    jobs : int
        Worker processes of the local backend.
    threads : int or None
        Torch threads per worker (1 by default; None leaves torch's default).
    progress : bool
        Progress bar over runs.
    report : bool
        Write the statistics and the report.
    reference : str
        Method every other method is compared with.
    unit : {"image", "stimulus"}
        Unit of the paired statistics (see :mod:`cortexflow.evaluation.stats`).
    command : str, optional
        The command line, recorded in the report.
    train_mode : {"batched", "sequential"}
        ``batched`` trains the folds x seeds of a method that supports it
        (cccv1) together (:mod:`cortexflow.training.batched`); others always
        train one by one.
    amp : {"off", "auto", "bf16", "fp16"}
        Mixed precision of batched training (see :mod:`cortexflow.training.devices`).
    deterministic : bool
        ``torch.use_deterministic_algorithms(True)`` (and ``CUBLAS_WORKSPACE_CONFIG``).
    backend_options : mapping, optional
        Extra arguments of the backend (``{"address": "auto"}`` for Ray).
    track : {"none", "mlflow"}, optional
        Log parameters, metrics and the report's figures (:mod:`cortexflow.tracking`).
    tracking_uri : str, optional
        MLflow tracking URI (default: a local store in ``out``).

    Returns
    -------
    dict
        Paths written, run counts and wall time.
    """
    t0 = time.perf_counter()
    # ---- issue 7: tracking, devices, backends
    from cortexflow.tracking import make_tracker

    tracker = make_tracker(track, out, tracking_uri)  # checks the choice before any work
    if deterministic:
        from cortexflow.training.devices import set_deterministic

        set_deterministic(True)
        os.environ["CORTEXFLOW_DETERMINISTIC"] = "1"  # forwarded to worker processes
    # ---- end issue 7
    plan = build_tasks(datasets, methods, splits, n_folds, seeds, split_seed=split_seed, fast=fast,
                       method_options=method_options, data_dir=data_dir, train_mode=train_mode, amp=amp)
    store = ResultStore(out)
    counts = execute(plan, store, backend=backend, jobs=jobs, threads=threads, progress=progress,
                     backend_options=backend_options)
    wall = time.perf_counter() - t0
    results = collect_results(plan, store)
    out = Path(out)
    paths: dict[str, str] = {}
    from cortexflow.utils.io import atomic_write_text

    atomic_write_text(out / "results.csv", results.to_csv(index=False))
    paths["results"] = str(out / "results.csv")
    fit_seconds: dict[str, list[float]] = {}
    fit_cpu: dict[str, list[float]] = {}
    for t in plan.tasks:
        rec = store.load_record(t)
        fit_seconds.setdefault(t.method, []).append(float(rec.get("fit_seconds", 0.0)))
        cpu = rec.get("fit_cpu_seconds")
        fit_cpu.setdefault(t.method, []).append(float("nan") if cpu is None else float(cpu))
    meta = {
        "command": command,
        "datasets": plan.datasets,
        "methods": resolve_methods(methods),
        "splits": parse_list(splits),
        "folds": {f"{d}/{s}": k for (d, s), k in plan.folds.items()},
        "seeds": _seeds(seeds),
        "split_seed": split_seed,
        "fast": fast,
        "notes": plan.notes,
        "split_facts": split_facts(plan, split_seed),
        "runs_total": counts["total"],
        "runs_resumed": counts["done_before"],
        "runs_computed": counts["computed"],
        "wall_seconds_this_invocation": wall,
        "fit_seconds_per_method": {m: {"sum": float(np.sum(v)), "mean": float(np.mean(v)), "n": len(v),
                                       "cpu_mean": (float(np.nanmean(fit_cpu[m]))
                                                    if np.isfinite(fit_cpu[m]).any() else None)}
                                   for m, v in fit_seconds.items()},
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "backend": backend,
        "backend_options": dict(backend_options or {}),
        "train_mode": train_mode,
        "amp": amp,
        "deterministic": deterministic,
        "jobs": jobs,
        "threads": threads,
        "reference": reference,
        "unit": unit,
    }
    if report:
        from cortexflow.evaluation.stats import paired_comparisons
        from cortexflow.reporting.report import write_report

        meth = resolve_methods(methods)
        stats = paired_comparisons(results, reference=reference, unit=unit) if reference in meth else None
        if stats is None:
            meta["notes"] = meta["notes"] + [f"reference method {reference!r} was not benchmarked: no paired statistics"]
        paths.update(write_report(out, results, stats, grid_data(plan, store, meth), meta))
    meta["wall_seconds_total"] = time.perf_counter() - t0
    atomic_write_json(out / "benchmark.json", meta)
    paths["benchmark"] = str(out / "benchmark.json")
    if tracker.enabled:  # issue 7
        from cortexflow.tracking import log_benchmark

        paths["tracking"] = log_benchmark(tracker, meta, results, out)
    return {"paths": paths, **counts, "wall_seconds": meta["wall_seconds_total"], "notes": plan.notes}
