"""Benchmark tasks: what one run is, how it runs, and how it is scored.

One *task* is one (dataset, method, split, fold, seed). :func:`run_task` is a
pure function of its :class:`Task` (it loads the dataset, checks its checksum,
fits the method on the task's training rows and scores its test rows), so any
executor (:mod:`cortexflow.benchmark.executors`) can run it in any process.
:func:`run_group` runs a list of tasks through their method's batched hook;
both return :class:`TaskResult` objects, which the result store
(:mod:`cortexflow.benchmark.store`) writes.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from cortexflow.methods.build import make_estimator, scored_stimuli
from cortexflow.registry.methods import get_method
from cortexflow.data.loading import load_dataset
from cortexflow.data.splits import scored_slice, split_data, stimulus_groups
from cortexflow.evaluation.metrics import evaluate_reconstructions
from cortexflow.exceptions import ChecksumError, DataValidationError

__all__ = [
    "PROTOCOL_VERSION",
    "METRIC_COLUMNS",
    "ID_COLUMNS",
    "Task",
    "TaskResult",
    "load_task_data",
    "check_checksum",
    "task_rows",
    "stimulus_ids",
    "all_stimuli",
    "run_task",
    "TASK_KINDS",
    "register_task_kind",
    "run_group",
    "score_task",
    "report_info",
]

logger = logging.getLogger(__name__)

#: the kind of task of ``cortexflow benchmark`` (see :attr:`Task.kind`)
DEFAULT_KIND = "reconstruction"

#: other task kinds: name -> "module:function" running one task (imported on first use, in any process)
TASK_KINDS: dict[str, str] = {"eeg-cv": "cortexflow.benchmark.eeg:run_eeg_task"}

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
        Name shown in results (unique within one benchmark).
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
    kind : str
        What :func:`run_task` runs: ``"reconstruction"`` (a method fitted on
        a dataset's rows) or a kind registered with :func:`register_task_kind`
        (``"eeg-cv"``: :mod:`cortexflow.benchmark.eeg`). Part of the key when
        not ``"reconstruction"``.
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
    train: tuple = ()
    data_dir: str | None = None
    kind: str = "reconstruction"

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
        } | ({"train": [list(kv) for kv in self.train]} if self.train else {}) | (
            {"kind": self.kind} if self.kind != DEFAULT_KIND else {})

    @property
    def key(self) -> str:
        """Hex digest naming this task's files in the results store."""
        blob = json.dumps(self.key_payload(), sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:24]

    @property
    def label(self) -> str:
        """Human-readable name of the task (logs, progress bars)."""
        return f"{self.dataset_name}/{self.method}/{self.split}/fold{self.fold}/seed{self.seed}"

    @property
    def group_key(self) -> tuple:
        """Tasks with equal group keys can train together in one batched stack (all folds and seeds)."""
        return (self.dataset, self.dataset_name, self.checksum, self.method, self.split, self.n_folds,
                self.split_seed, self.fast, self.options, self.train, self.data_dir)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (inverse of :meth:`from_dict`)."""
        d = asdict(self)
        d["options"] = [list(kv) for kv in self.options]
        d["train"] = [list(kv) for kv in self.train]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Task":
        """The task of a stored record's ``"task"`` entry."""
        d = dict(d)
        d["options"] = tuple(tuple(kv) for kv in d.get("options", ()))
        d["train"] = tuple(tuple(kv) for kv in d.get("train", ()))
        return cls(**d)


@dataclass
class TaskResult:
    """The result of one task, whatever executor ran it.

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
    info : dict
        The fitted estimator's ``report_info_`` (JSON-serialisable facts shown
        in the report, e.g. which prior corpus it used); empty when it has none.
    """

    task: Task
    rows: list[dict]
    predictions: np.ndarray
    test_index: np.ndarray
    fit_seconds: float = 0.0
    predict_seconds: float = 0.0
    fit_cpu_seconds: float = float("nan")
    info: dict = field(default_factory=dict)


# ----------------------------------------------------------------- data
@functools.lru_cache(maxsize=8)
def load_task_data(dataset: str, data_dir: str | None):
    """The dataset of a task (cached per process: every task of a benchmark loads it once)."""
    return load_dataset(dataset, data_dir)


def check_checksum(task: Task, ds) -> None:
    """Raise :class:`ChecksumError` when ``ds`` is not the data the task was planned for."""
    if ds.checksum != task.checksum:
        raise ChecksumError(
            f"dataset {task.dataset!r} has checksum {ds.checksum[:12]}..., but task {task.label} "
            f"was planned for {task.checksum[:12]}..."
        )


def stimulus_ids(ds) -> np.ndarray:
    """Stimulus id of every row, training rows then test rows (identical images share an id)."""
    return stimulus_groups(np.concatenate([ds.Y_train, ds.Y_test], axis=0))


def task_rows(ds, task: Task):
    """Training and test rows of one task.

    Returns
    -------
    X_train, Y_train, X_test, Y_test, test_index, test_stimulus : ndarray
    """
    X_tr, Y_tr, X_te, Y_te, test_index = split_data(ds, task.split, task.fold, task.n_folds, task.split_seed)
    stim = stimulus_ids(ds)[scored_slice(ds, task.split)][test_index]
    return X_tr, Y_tr, X_te, Y_te, test_index, stim


def all_stimuli(ds) -> np.ndarray:
    """Every stimulus of a dataset (training then test rows), float32 in [0, 1]: the guard set."""
    return scored_stimuli(ds)


def build_estimator(task: Task, ds, n_train: int):
    """The unfitted estimator of a task, built by :func:`cortexflow.methods.build.make_estimator`.

    Methods that need the guard set get every stimulus of the data set (all
    rows any split of it scores); prior-backed methods get their fitted prior.
    """
    return make_estimator(task.method, task.seed, task.dataset_name, n_train, fast=task.fast,
                          stimuli=all_stimuli(ds), data_dir=task.data_dir, **dict(task.options))


def report_info(estimator: Any, task: Task) -> dict:
    """The fitted estimator's ``report_info_`` dict, checked to be JSON-serialisable ({} when absent)."""
    info = getattr(estimator, "report_info_", None)
    if info is None:
        return {}
    if not isinstance(info, Mapping):
        raise DataValidationError(f"method {task.method!r}: report_info_ must be a dict; got {type(info).__name__}")
    try:
        return json.loads(json.dumps(dict(info), allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise DataValidationError(f"method {task.method!r}: report_info_ is not JSON-serialisable: {exc}") from exc


def register_task_kind(name: str, target: str) -> None:
    """Register a task kind: ``target`` is ``"module:function"``, a function of one :class:`Task` -> :class:`TaskResult`.

    The module is imported where the task runs (a worker process imports it
    itself), so the function must be importable by name.
    """
    if not isinstance(target, str) or ":" not in target:
        raise ValueError(f"task kind {name!r}: target {target!r} must be 'module:function'")
    TASK_KINDS[str(name)] = target


def _kind_runner(kind: str):
    try:
        module, _, func = TASK_KINDS[kind].partition(":")
    except KeyError:
        raise DataValidationError(f"unknown task kind {kind!r}; allowed: {', '.join([DEFAULT_KIND, *TASK_KINDS])}") from None
    return getattr(importlib.import_module(module), func)


def run_task(task: Task) -> TaskResult:
    """Fit the task's method on its training rows and score its test rows.

    Tasks of another :attr:`Task.kind` go to the function registered for it.

    A pure function of ``task`` (besides reading the dataset file): it can run
    in any process or on any machine that can load the dataset.

    Raises
    ------
    ChecksumError
        The dataset found does not have the task's checksum.
    """
    if task.kind != DEFAULT_KIND:
        return _kind_runner(task.kind)(task)
    ds = load_task_data(task.dataset, task.data_dir)
    check_checksum(task, ds)
    X_tr, Y_tr, X_te, Y_te, test_index, stim = task_rows(ds, task)
    est = build_estimator(task, ds, len(X_tr))
    t0, c0 = time.perf_counter(), time.process_time()
    est.fit(X_tr, Y_tr)
    t1, c1 = time.perf_counter(), time.process_time()
    pred = np.asarray(est.predict(X_te), dtype=np.float32)
    t2 = time.perf_counter()
    result = score_task(task, pred, Y_te, test_index, stim, t1 - t0, t2 - t1)
    result.fit_cpu_seconds = c1 - c0
    result.info = report_info(est, task)
    return result


def run_group(tasks: Sequence[Task], progress: bool | None = False) -> list[TaskResult]:
    """Run tasks of one method together through its batched ``fit_predict_many`` hook."""
    if not tasks:
        return []
    hook = get_method(tasks[0].method).fit_predict_many
    if hook is None:
        return [run_task(t) for t in tasks]
    return list(hook(list(tasks), progress=progress))


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
