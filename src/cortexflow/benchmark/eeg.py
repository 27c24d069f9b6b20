"""Evaluate EEG decoders on labelled epochs: stratified cross-validation next to a shuffled-label control.

Two protocols, both on :class:`~cortexflow.data.eeg.EEGEpochs` whose labels
index class images (the targets):

* :func:`cross_validate_eeg` and :func:`run_eeg_evaluation` (``cortexflow eeg
  evaluate``): stratified K-fold cross-validation (the ``stratified`` split
  of :mod:`cortexflow.data.splits`) of every front-end and model seed, each
  fit repeated with the training targets permuted (the shuffled-label
  control), plus the mean-template floor (every test trial predicted as the
  mean training target). Each fit is one benchmark
  :class:`~cortexflow.benchmark.tasks.Task` of kind ``"eeg-cv"``
  (:func:`plan_eeg_tasks`), run by the benchmark's executors and stored in
  its :class:`~cortexflow.benchmark.store.ResultStore` (verified records; a
  rerun into the same folder computes only what is missing), scored by the
  benchmark's score step (:func:`~cortexflow.benchmark.tasks.score_task`)
  plus the nearest-template class. :func:`summarize_eeg_cv` turns the stored
  per-trial rows into mean ± sd over seeds and paired tests (with
  permutation p-values) of the true labels against the control.
* :func:`simulated_identification` (``cortexflow eeg simulate``): one
  stratified hold-out split of simulated EEG, the pathway check of ``docs/eeg.md``.

Preprocessing (:class:`~cortexflow.data.eeg.EpochPreprocessor`: notch,
band-pass, resampling, fixed length, per-trial z-scoring) is fitted on the
training trials of each fold; so is the decoder's robust scaler, its early
stopping (an inner split of the training trials) and the mean template.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from cortexflow.benchmark.runner import run_tasks
from cortexflow.benchmark.store import ResultStore, check_output_dir
from cortexflow.benchmark.tasks import Task, TaskResult, score_task
from cortexflow.data.eeg import (
    DIGIT_CLASSES,
    EEGEpochs,
    EpochPreprocessor,
    load_eeg,
    preprocess_epochs,
    simulate_evoked_eeg,
)
from cortexflow.data.splits import split_indices
from cortexflow.data.stimuli import class_images, targets_for_labels
from cortexflow.evaluation.metrics import mse_per_image, two_way_identification
from cortexflow.evaluation.stats import holm_bonferroni, paired_test, sign_flip_pvalue
from cortexflow.exceptions import ChecksumError, ConfigError, DataValidationError
from cortexflow.registry.methods import get_method
from cortexflow.models.eeg_estimator import EEG_METHODS, EEGDecoder
from cortexflow.models.frontends import FRONTENDS
from cortexflow.reporting.report import write_csv
from cortexflow.training.config import get_config
from cortexflow.utils.io import atomic_write_json, atomic_write_text, file_lock, json_safe

__all__ = [
    "DEFAULT_PREPROCESS",
    "DEFAULT_SIMULATION",
    "EEG_TASK_KIND",
    "MEAN_TEMPLATE",
    "RESULT_COLUMNS",
    "cross_validate_eeg",
    "collect_eeg_results",
    "eeg_checksum",
    "plan_eeg_tasks",
    "run_eeg_task",
    "nearest_template",
    "sign_flip_pvalue",
    "simulated_identification",
    "summarize_eeg_cv",
    "format_summary_table",
    "run_eeg_evaluation",
]

logger = logging.getLogger(__name__)

#: Preprocessing of ``cortexflow eeg evaluate`` (arguments of :class:`EpochPreprocessor`).
DEFAULT_PREPROCESS: dict[str, Any] = {"l_freq": 1.0, "h_freq": 40.0, "notch": 50.0, "new_sfreq": 128.0,
                                      "crop_s": None, "normalize": True}

#: Simulation settings of the documented simulated runs (see ``simulate_evoked_eeg``).
DEFAULT_SIMULATION: dict[str, float] = {"evoked_uv": 40.0, "class_spread": 1.0}

#: Name of the mean-template floor in the results.
MEAN_TEMPLATE = "mean-template"

#: :attr:`~cortexflow.benchmark.tasks.Task.kind` of one EEG cross-validation fit
EEG_TASK_KIND = "eeg-cv"

#: Columns of ``results.csv`` (one row per test trial and fit)
RESULT_COLUMNS = ("frontend", "labels", "seed", "fold", "trial", "event_id", "label", "mse", "two_way", "decoded",
                  "correct")

#: Columns of ``fits.csv`` (one row per fit)
FIT_COLUMNS = ("frontend", "labels", "seed", "fold", "n_train", "n_test", "best_epoch", "stopped_epoch", "seconds")

#: ``Task.dataset`` of epochs given in memory (they run in the process that planned them)
IN_MEMORY = "<in-memory epochs>"

_METHOD_OF = {fe: name for name, fe in EEG_METHODS.items()}  # front-end -> registered method
_EEG_DATA: dict[str, tuple[EEGEpochs, np.ndarray]] = {}  # checksum -> (epochs, class images), this process
_FOLD_CACHE: dict[tuple, tuple] = {}  # the last fold's preprocessed trials, this process


def nearest_template(pred: np.ndarray, images: np.ndarray) -> np.ndarray:
    """Index of the class image most correlated with each prediction (the decoded class)."""
    p = np.asarray(pred, dtype=np.float64).reshape(len(pred), -1)
    q = np.asarray(images, dtype=np.float64).reshape(len(images), -1)
    p = (p - p.mean(1, keepdims=True)) / (p.std(1, keepdims=True) + 1e-12)
    q = (q - q.mean(1, keepdims=True)) / (q.std(1, keepdims=True) + 1e-12)
    return (p @ q.T).argmax(1)


def _check_cv_args(epochs: EEGEpochs, images: np.ndarray, frontends: Sequence[str], n_folds: int,
                   seeds: Sequence[int]) -> None:
    unknown = [f for f in frontends if f not in FRONTENDS]
    if unknown or not frontends:
        raise ConfigError(f"unknown EEG front-end(s) {unknown or '(none given)'}; allowed: {', '.join(FRONTENDS)}")
    if len(set(frontends)) != len(frontends):
        raise ConfigError(f"front-ends are listed twice: {list(frontends)}")
    if not seeds or any(int(s) < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise ConfigError(f"seeds must be distinct non-negative integers; got {list(seeds)}")
    if np.any(epochs.labels < 0) or np.any(epochs.labels >= len(images)):
        raise DataValidationError(
            f"labels must index the {len(images)} class images (0..{len(images) - 1}); got "
            f"{sorted(set(epochs.labels.tolist()))} (drop random trials, label -1, first)"
        )
    counts = np.bincount(epochs.labels)
    smallest = int(counts[counts > 0].min())
    if not 2 <= int(n_folds) <= smallest:
        raise ConfigError(
            f"--folds {n_folds}: stratified folds need 2 <= folds <= the smallest class's trial count ({smallest})"
        )


def _score(pred: np.ndarray, true: np.ndarray, labels: np.ndarray, images: np.ndarray) -> dict[str, np.ndarray]:
    decoded = nearest_template(pred, images)
    return {
        "mse": mse_per_image(true=true, pred=pred),
        "two_way": two_way_identification(true=true, pred=pred),
        "decoded": decoded,
        "correct": (decoded == labels).astype(float),
    }


def eeg_checksum(epochs: EEGEpochs, images: np.ndarray) -> str:
    """sha256 of what an EEG evaluation reads: the trials, labels, event ids, sampling rate and class images."""
    h = hashlib.sha256()
    for a in (epochs.data, epochs.labels, epochs.event_ids, np.float64(epochs.sfreq), images):
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def plan_eeg_tasks(
    epochs: EEGEpochs,
    images: np.ndarray,
    *,
    frontends: Sequence[str] = ("flatten", "shallow", "eegnet"),
    n_folds: int = 5,
    seeds: Sequence[int] = (0, 1, 2),
    split_seed: int = 0,
    control: bool = True,
    preprocess: dict | None = None,
    config: Any = "auto",
    config_overrides: dict | None = None,
    frontend_params: dict | None = None,
    device: str = "cpu",
    source: str | None = None,
    data_dir: str | os.PathLike | None = None,
    load_options: dict | None = None,
    name: str | None = None,
) -> list[Task]:
    """The benchmark tasks of an EEG cross-validation, checked before any work.

    Per fold of the ``stratified`` split: the mean-template floor (method
    ``"mean-template"``, seed 0, labels ``"none"``), then for each front-end
    (method ``cccv1-eeg-<front-end>``), seed and condition (option
    ``labels``: ``"true"``, or ``"shuffled"`` for the control) one fit.
    Everything that changes a result is in the task (and so in its store
    key): the data's checksum (:func:`eeg_checksum`), the preprocessing, the
    configuration and its overrides, the front-end parameters, the device.
    The epochs are also kept in this process, so the tasks run here without
    reading the recording again.

    Returns
    -------
    list of Task
        Of kind :data:`EEG_TASK_KIND`, in the order of the rows of ``results.csv``.
    """
    images = np.asarray(images, dtype=np.float32)
    frontends = list(frontends)
    seeds = [int(s) for s in seeds]
    _check_cv_args(epochs, images, frontends, n_folds, seeds)
    overrides = dict(config_overrides or {})
    get_config(config, n_train=epochs.n_epochs, **overrides)  # bad settings fail before any work
    split_indices(epochs, "stratified", 0, int(n_folds), int(split_seed))  # and so do bad folds
    checksum = eeg_checksum(epochs, images)
    _EEG_DATA[checksum] = (epochs, images)
    pre_kw = {**DEFAULT_PREPROCESS, **(preprocess or {})}
    common = {
        "config": _dumps(config.to_dict() if hasattr(config, "to_dict") else config),
        "config_overrides": _dumps(overrides),
        "device": str(device),
        "frontend_params": _dumps(frontend_params),
        "load": _dumps(dict(load_options or {})),
        "preprocess": _dumps(pre_kw),
    }
    name = name or str((epochs.metadata or {}).get("name") or (Path(source).name if source else "eeg"))
    data_dir = str(data_dir) if data_dir is not None else None

    def task(method: str, seed: int, fold: int, labels: str) -> Task:
        opts = {**common, "labels": labels}
        version = "1" if method == MEAN_TEMPLATE else get_method(method).version
        return Task(dataset=source or IN_MEMORY, dataset_name=name, checksum=checksum, method=method,
                    split="stratified", fold=fold, n_folds=int(n_folds), split_seed=int(split_seed), seed=seed,
                    options=tuple(sorted(opts.items())), method_version=version, data_dir=data_dir,
                    kind=EEG_TASK_KIND)

    conditions = ["true", "shuffled"] if control else ["true"]
    tasks = []
    for k in range(int(n_folds)):
        tasks.append(task(MEAN_TEMPLATE, 0, k, "none"))
        tasks.extend(task(_METHOD_OF[fe], seed, k, cond) for fe in frontends for seed in seeds for cond in conditions)
    return tasks


def _eeg_data(task: Task) -> tuple[EEGEpochs, np.ndarray]:
    """The epochs and class images of a task (kept per process; loaded from ``task.dataset`` when not here)."""
    if task.checksum in _EEG_DATA:
        return _EEG_DATA[task.checksum]
    if task.dataset == IN_MEMORY:
        raise DataValidationError(f"task {task.label}: its epochs were given in memory to another process; run "
                                  "it with jobs=1, or give the recording's source so that workers can load it")

    load = json.loads(dict(task.options)["load"])
    ep = load_eeg(task.dataset, task.data_dir, device=(load.get("headset") or "").upper() or None)
    images = np.asarray(class_images(ep.class_names, load.get("stimuli")), dtype=np.float32)
    got = eeg_checksum(ep, images)
    if got != task.checksum:
        raise ChecksumError(f"EEG data {task.dataset!r} has checksum {got[:12]}..., but task {task.label} was "
                            f"planned for {task.checksum[:12]}...")
    _EEG_DATA[got] = (ep, images)
    return ep, images


def _fold_data(task: Task, ep: EEGEpochs, preprocess: dict) -> tuple:
    """Rows and preprocessed trials of the task's fold (the preprocessor fitted on its training trials)."""
    key = (task.checksum, task.n_folds, task.split_seed, task.fold, _dumps(preprocess))
    if key not in _FOLD_CACHE:
        tr, te = split_indices(ep, "stratified", task.fold, task.n_folds, task.split_seed)
        prep = EpochPreprocessor(ep.sfreq, **preprocess).fit(ep.data[tr])
        _FOLD_CACHE.clear()  # one fold at a time: the tasks of a fold run one after another
        _FOLD_CACHE[key] = (tr, te, prep.sfreq_, prep.transform(ep.data[tr]), prep.transform(ep.data[te]))
    return _FOLD_CACHE[key]


def run_eeg_task(task: Task) -> TaskResult:
    """Run one EEG cross-validation fit (a task of kind :data:`EEG_TASK_KIND`) and score its test trials.

    The preprocessor is fitted on the fold's training trials; the decoder
    (or the mean-template floor) on their targets (permuted, seeded by seed
    and fold, for ``labels="shuffled"``). The rows are those of the
    benchmark's score step (:func:`~cortexflow.benchmark.tasks.score_task`;
    ``image`` is the trial, ``stimulus`` its class) plus the columns of
    ``results.csv`` (``frontend``, ``labels``, ``trial``, ``event_id``,
    ``label``, ``decoded``, ``correct``).
    """
    opts = dict(task.options)
    ep, images = _eeg_data(task)
    tr, te, sfreq, X_tr, X_te = _fold_data(task, ep, json.loads(opts["preprocess"]))
    y_tr, y_te = ep.labels[tr], ep.labels[te]
    true_te = targets_for_labels(y_te, images)
    info: dict[str, Any] = {"n_train": int(len(tr)), "n_test": int(len(te))}
    t0, c0 = time.perf_counter(), time.process_time()
    if task.method == MEAN_TEMPLATE:
        frontend = MEAN_TEMPLATE
        pred = np.broadcast_to(targets_for_labels(y_tr, images).mean(axis=0), true_te.shape)
        t1, c1 = time.perf_counter(), time.process_time()
    else:
        frontend = EEG_METHODS[task.method]
        y_fit = y_tr
        if opts["labels"] == "shuffled":
            y_fit = np.random.default_rng([task.seed, task.fold, 10_000]).permutation(y_tr)
        cfg = get_config(json.loads(opts["config"]), n_train=len(tr), **json.loads(opts["config_overrides"]))
        dec = EEGDecoder(frontend=frontend, frontend_params=json.loads(opts["frontend_params"]), sfreq=sfreq,
                         config=cfg, random_state=task.seed, device=opts["device"])
        dec.fit(X_tr, targets_for_labels(y_fit, images))
        t1, c1 = time.perf_counter(), time.process_time()
        pred = dec.predict(X_te)
        info.update(best_epoch=int(dec.train_result_.best_epoch), stopped_epoch=int(dec.train_result_.stopped_epoch))
    t2 = time.perf_counter()
    result = score_task(task, pred, true_te, te, y_te, t1 - t0, t2 - t1)
    result.fit_cpu_seconds = c1 - c0
    result.info = info
    scores = _score(pred, true_te, y_te, images)
    event_ids = ep.event_ids[te]
    for i, row in enumerate(result.rows):
        row.update(frontend=frontend, labels=opts["labels"], trial=int(te[i]), event_id=int(event_ids[i]),
                   label=int(y_te[i]), decoded=int(scores["decoded"][i]), correct=float(scores["correct"][i]))
        if not (row["mse"] == float(scores["mse"][i]) and row["two_way"] == float(scores["two_way"][i])):
            raise DataValidationError(f"task {task.label}: the score step and the EEG scores disagree at trial "
                                      f"{int(te[i])}")
    logger.info("fold %d %s seed %d %s labels: two-way %.3f in %.1f s", task.fold, frontend, task.seed,
                opts["labels"], float(np.mean(scores["two_way"])), t2 - t0)
    return result


def collect_eeg_results(tasks: Sequence[Task], store: ResultStore) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``results.csv`` and ``fits.csv`` of finished EEG tasks, read from the store (in the order of ``tasks``).

    Raises
    ------
    DataValidationError
        A task has no valid record in the store.
    """
    trial_rows: list[dict] = []
    fit_rows: list[dict] = []
    for t in tasks:
        if not store.has(t):
            raise DataValidationError(f"EEG task {t.label} has no valid record in {store.runs}")
        rec = store.load_record(t)
        trial_rows.extend(rec["rows"])
        if t.method != MEAN_TEMPLATE:
            row = rec["rows"][0]
            info = rec.get("report_info") or {}
            fit_rows.append({"frontend": row["frontend"], "labels": row["labels"], "seed": t.seed, "fold": t.fold,
                             "n_train": info.get("n_train"), "n_test": info.get("n_test"),
                             "best_epoch": info.get("best_epoch"), "stopped_epoch": info.get("stopped_epoch"),
                             "seconds": round(float(rec["fit_seconds"]) + float(rec["predict_seconds"]), 3)})
    trials = pd.DataFrame(trial_rows, columns=list(RESULT_COLUMNS))
    return trials, pd.DataFrame(fit_rows, columns=list(FIT_COLUMNS))


def cross_validate_eeg(
    epochs: EEGEpochs,
    images: np.ndarray,
    *,
    frontends: Sequence[str] = ("flatten", "shallow", "eegnet"),
    n_folds: int = 5,
    seeds: Sequence[int] = (0, 1, 2),
    split_seed: int = 0,
    control: bool = True,
    preprocess: dict | None = None,
    config: Any = "auto",
    config_overrides: dict | None = None,
    frontend_params: dict | None = None,
    device: str = "cpu",
    progress: bool | None = None,
    out: str | os.PathLike | None = None,
    source: str | None = None,
    data_dir: str | os.PathLike | None = None,
    load_options: dict | None = None,
    backend: str = "local",
    jobs: int = 1,
    threads: int | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Stratified K-fold cross-validation of EEG decoders, with shuffled-label control and mean-template floor.

    The folds (the ``stratified`` split of :mod:`cortexflow.data.splits`:
    ``StratifiedKFold(n_folds, shuffle=True, random_state=split_seed)``)
    are the same for every front-end, seed and condition, so every
    comparison is paired trial by trial. Each fit is one task of
    :func:`plan_eeg_tasks`, run through the benchmark's executors into a
    :class:`~cortexflow.benchmark.store.ResultStore` (``out``, or a
    temporary folder). For each fold: the preprocessor is
    fitted on the training trials; then for each front-end and seed an
    :class:`EEGDecoder` is trained on the true targets and, with
    ``control=True``, another on the training targets permuted (seeded by
    seed and fold); every test trial is scored against its own class image.

    Parameters
    ----------
    epochs : EEGEpochs
        Trials with labels ``0..len(images)-1``.
    images : ndarray (n_classes, 28, 28)
        Target image of each class, in [0, 1].
    frontends : sequence of str
        EEG front-ends (see :data:`cortexflow.models.frontends.FRONTENDS`).
    n_folds : int
        Stratified folds (at most the smallest class's trial count).
    seeds : sequence of int
        Model seeds (initialisation, dropout, inner split, label permutation).
    split_seed : int
        Seed of the fold assignment.
    control : bool
        Also train on permuted training targets.
    preprocess : dict, optional
        Overrides of :data:`DEFAULT_PREPROCESS`.
    config : "auto", preset name, dict or CCCV1Config
        Training configuration, resolved per fold with
        :func:`cortexflow.training.config.get_config` (``"auto"`` picks the
        preset for the fold's number of training trials).
    config_overrides : dict, optional
        Fields that replace the resolved configuration's (``{"patience": 10}``).
    frontend_params, device :
        Passed to :class:`EEGDecoder`.
    progress : bool, optional
        Progress bar over the fits.
    out : path-like, optional
        Result store folder (``out/runs``); finished fits found there are not
        recomputed. None: a temporary folder, removed afterwards.
    source, data_dir, load_options :
        How a worker process loads the epochs (``load_eeg(source, data_dir,
        device=load_options["headset"])``, class images from
        ``load_options["stimuli"]``); without ``source`` the tasks run in
        this process only (``jobs=1``).
    backend, jobs, threads :
        The executor (:func:`cortexflow.benchmark.executors.make_executor`);
        ``threads=None`` keeps torch's thread setting.

    Returns
    -------
    trials : DataFrame
        One row per test trial and fit: ``frontend`` (or ``"mean-template"``),
        ``labels`` (``"true"``, ``"shuffled"``, or ``"none"`` for the floor),
        ``seed``, ``fold``, ``trial`` (index into ``epochs``), ``event_id``,
        ``label``, ``mse``, ``two_way`` (within the fold's test trials),
        ``decoded`` (nearest class image) and ``correct``.
    fits : DataFrame
        One row per fit: ``frontend, labels, seed, fold, n_train, n_test,
        best_epoch, stopped_epoch, seconds``.
    """
    tasks = plan_eeg_tasks(epochs, images, frontends=frontends, n_folds=n_folds, seeds=seeds,
                           split_seed=split_seed, control=control, preprocess=preprocess, config=config,
                           config_overrides=config_overrides, frontend_params=frontend_params, device=device,
                           source=source, data_dir=data_dir, load_options=load_options)
    with contextlib.ExitStack() as stack:
        root = Path(out) if out is not None else Path(stack.enter_context(tempfile.TemporaryDirectory()))
        store = ResultStore(check_output_dir(root))
        counts = run_tasks(tasks, store, backend=backend, jobs=jobs, threads=threads, progress=progress)
        logger.info("eeg evaluate: %d fits, %d computed, %d found in %s", counts["total"], counts["computed"],
                    counts["done_before"], store.root)
        return collect_eeg_results(tasks, store)


def _mean_sd(values: np.ndarray) -> tuple[float, float]:
    values = np.asarray(values, dtype=float)
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


def summarize_eeg_cv(trials: pd.DataFrame, *, n_perm: int = 10_000, seed: int = 0) -> dict[str, Any]:
    """Aggregate :func:`cross_validate_eeg`'s trials: mean ± sd over seeds, and true labels vs the control.

    For each front-end and condition a seed's score is the mean over all
    trials (each trial is tested once per seed, in its fold); the table gives
    mean ± sd (ddof=1) over seeds. The paired comparison of true against
    shuffled labels averages each trial over seeds first, so each trial is one
    paired difference (n = number of trials), and reports the Wilcoxon and
    paired t-test p-values (:func:`cortexflow.evaluation.stats.paired_test`)
    and a sign-flip permutation p-value (:func:`sign_flip_pvalue`), also
    Holm-adjusted across the front-ends within each metric
    (``permutation_p_holm``).

    Returns
    -------
    dict
        ``rows``: one dict per (front-end, condition) with ``two_way_mean``,
        ``two_way_sd``, ``mse_mean``, ``mse_sd``, ``accuracy_mean``,
        ``accuracy_sd``, ``per_seed_two_way``, ``n_trials``, ``n_seeds``;
        ``tests``: one dict per front-end, metric and ``comparison``
        (``"true - shuffled"`` for every metric, ``"true - mean-template"``
        for MSE);
        ``chance``: ``two_way`` 0.5 and ``accuracy`` of the majority class.
    """
    rows, tests = [], []
    for (fe, cond), g in trials.groupby(["frontend", "labels"], sort=False):
        per_seed = g.groupby("seed")[["two_way", "mse", "correct"]].mean()
        tw, mse, acc = (_mean_sd(per_seed[c].to_numpy()) for c in ("two_way", "mse", "correct"))
        rows.append({"frontend": fe, "labels": cond, "two_way_mean": tw[0], "two_way_sd": tw[1],
                     "mse_mean": mse[0], "mse_sd": mse[1], "accuracy_mean": acc[0], "accuracy_sd": acc[1],
                     "per_seed_two_way": per_seed["two_way"].round(4).tolist(),
                     "n_trials": int(g["trial"].nunique()), "n_seeds": int(len(per_seed))})
    fronts = [fe for fe in trials["frontend"].unique() if fe != MEAN_TEMPLATE]
    for fe in fronts:
        sub = trials[trials["frontend"] == fe]
        if set(sub["labels"]) != {"true", "shuffled"}:
            continue
        per_trial = sub.groupby(["labels", "trial"])[["two_way", "mse", "correct"]].mean()
        for metric in ("two_way", "mse", "correct"):
            a = per_trial.loc["true", metric].sort_index()
            b = per_trial.loc["shuffled", metric].sort_index()
            res = paired_test(a.to_numpy(), b.to_numpy(), seed=seed)
            res["permutation_p"] = sign_flip_pvalue(a.to_numpy() - b.to_numpy(), n_perm=n_perm, seed=seed)
            tests.append({"frontend": fe, "metric": metric, "comparison": "true - shuffled", **res})
    floor = trials[trials["frontend"] == MEAN_TEMPLATE].groupby("trial")["mse"].mean().sort_index()
    for fe in fronts:
        sub = trials[(trials["frontend"] == fe) & (trials["labels"] == "true")]
        if len(floor) and len(sub):
            a = sub.groupby("trial")["mse"].mean().sort_index()
            res = paired_test(a.to_numpy(), floor.loc[a.index].to_numpy(), seed=seed)
            res["permutation_p"] = sign_flip_pvalue(a.to_numpy() - floor.loc[a.index].to_numpy(), n_perm=n_perm,
                                                    seed=seed)
            tests.append({"frontend": fe, "metric": "mse", "comparison": "true - mean-template", **res})
    for metric, comparison in ((m, c) for m in ("two_way", "mse", "correct")
                               for c in ("true - shuffled", "true - mean-template")):
        # Holm within each metric and comparison, across the front-ends
        family = [t for t in tests if t["metric"] == metric and t["comparison"] == comparison]
        for t, p in zip(family, holm_bonferroni([t["permutation_p"] for t in family])):
            t["permutation_p_holm"] = float(p)
    labels = trials.drop_duplicates("trial")["label"].to_numpy()
    majority = float(np.bincount(labels).max() / len(labels)) if len(labels) else float("nan")
    return {"rows": rows, "tests": tests, "chance": {"two_way": 0.5, "accuracy_majority_class": majority,
                                                    "accuracy_uniform": 1.0 / max(1, len(np.unique(labels)))}}


def format_summary_table(summary: dict[str, Any]) -> str:
    """The summary as a Markdown table (one row per front-end and condition) plus the paired tests."""
    lines = ["| front-end | training labels | two-way (mean ± sd over seeds) | per seed | MSE vs template "
             "(mean ± sd) | class accuracy (mean ± sd) |", "|---|---|---|---|---|---|"]
    for r in summary["rows"]:
        lines.append(
            f"| {r['frontend']} | {r['labels']} | {r['two_way_mean']:.3f} ± {r['two_way_sd']:.3f} | "
            f"{' / '.join(f'{v:.3f}' for v in r['per_seed_two_way'])} | {r['mse_mean']:.4f} ± {r['mse_sd']:.4f} | "
            f"{r['accuracy_mean']:.3f} ± {r['accuracy_sd']:.3f} |"
        )
    tests = [t for t in summary["tests"] if t["metric"] in ("two_way", "mse")]
    if tests:
        lines += ["", "| front-end | metric | comparison | difference (mean, 95 % CI) | n trials | Wilcoxon p | "
                  "t-test p | sign-flip permutation p | same, Holm across front-ends |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for t in tests:
            lines.append(
                f"| {t['frontend']} | {t['metric']} | {t['comparison']} | {t['mean_diff']:+.4f} [{t['ci_low']:+.4f}, {t['ci_high']:+.4f}] | "
                f"{t['n']} | {t['wilcoxon_p']:.3g} | {t['t_p']:.3g} | {t['permutation_p']:.3g} | "
                f"{t['permutation_p_holm']:.3g} |"
            )
    return "\n".join(lines) + "\n"


def run_eeg_evaluation(
    epochs: EEGEpochs,
    images: np.ndarray,
    out: str | os.PathLike,
    *,
    frontends: Sequence[str] = ("flatten", "shallow", "eegnet"),
    n_folds: int = 5,
    seeds: Sequence[int] = (0, 1, 2),
    split_seed: int = 0,
    control: bool = True,
    preprocess: dict | None = None,
    config: Any = "auto",
    config_overrides: dict | None = None,
    device: str = "cpu",
    progress: bool | None = None,
    extra: dict | None = None,
    source: str | None = None,
    data_dir: str | os.PathLike | None = None,
    load_options: dict | None = None,
    backend: str = "local",
    jobs: int = 1,
    threads: int | None = None,
) -> dict[str, Any]:
    """Run :func:`cross_validate_eeg` with its result store in ``out`` and write the tables there.

    ``out`` is checked (created, writable, nothing in the way) before any
    training, with the benchmark's :func:`~cortexflow.benchmark.store.check_output_dir`.
    Every fit is stored in ``out/runs`` as it finishes (the benchmark's
    record format); run again into the same folder, only the missing fits
    are computed. Files (each written atomically): ``results.csv`` (one row
    per test trial and fit) and ``fits.csv`` (one row per fit), both through
    :func:`cortexflow.reporting.report.write_csv`; ``summary.json``
    (settings, ``extra`` such as the data set's description and the command,
    :func:`summarize_eeg_cv`'s table and tests computed from the stored
    rows, the counts of computed and resumed fits) and ``summary.md`` (the tables).

    Returns
    -------
    dict
        The content of ``summary.json`` plus ``paths``.
    """
    out = check_output_dir(out)
    t0 = time.perf_counter()
    tasks = plan_eeg_tasks(epochs, images, frontends=frontends, n_folds=n_folds, seeds=seeds, split_seed=split_seed,
                           control=control, preprocess=preprocess, config=config, config_overrides=config_overrides,
                           device=device, source=source, data_dir=data_dir, load_options=load_options)
    store = ResultStore(out)
    counts = run_tasks(tasks, store, backend=backend, jobs=jobs, threads=threads, progress=progress)
    trials, fits = collect_eeg_results(tasks, store)
    summary = summarize_eeg_cv(trials)
    payload = {
        "settings": {"frontends": list(frontends), "n_folds": int(n_folds), "seeds": [int(s) for s in seeds],
                     "split_seed": int(split_seed), "split": "stratified k-fold", "control": bool(control),
                     "preprocess": {**DEFAULT_PREPROCESS, **(preprocess or {})},
                     "config": config.to_dict() if hasattr(config, "to_dict") else config,
                     "config_overrides": dict(config_overrides or {}), "device": device,
                     "n_epochs": epochs.n_epochs, "class_counts": epochs.class_counts()},
        **(extra or {}),
        **summary,
        "runs_total": counts["total"],
        "runs_computed": counts["computed"],
        "runs_resumed": counts["done_before"],
        "wall_seconds": round(time.perf_counter() - t0, 1),
        "fit_seconds_total": float(fits["seconds"].sum()) if len(fits) else 0.0,
    }
    paths = {"results": out / "results.csv", "fits": out / "fits.csv", "summary": out / "summary.json",
             "table": out / "summary.md"}
    with file_lock(out / "runs" / ".report.lock", what="EEG evaluation output folder"):  # as the benchmark's
        write_csv(paths["results"], trials)
        write_csv(paths["fits"], fits)
        atomic_write_json(paths["summary"], json_safe(payload))
        atomic_write_text(paths["table"], format_summary_table(summary))
    return {**payload, "paths": {k: str(v) for k, v in paths.items()}}


def simulated_identification(
    frontend: str = "eegnet",
    *,
    n_classes: int = 10,
    n_per_class: int = 40,
    seed: int = 0,
    shuffle_labels: bool = False,
    new_sfreq: float | None = 64.0,
    reject_uv: float = 150.0,
    test_fraction: float = 0.25,
    config: Any = "auto",
    frontend_params: dict | None = None,
    device: str = "cpu",
    simulation: dict | None = None,
) -> dict[str, Any]:
    """Train on simulated EEG and score two-way identification of held-out trials.

    Simulated EEG (:func:`cortexflow.data.eeg.simulate_evoked_eeg`) -> artefact
    rejection, notch, band-pass, average reference, baseline, resampling
    (:func:`cortexflow.data.eeg.preprocess_epochs`) -> stratified train/test
    split -> rendered digit images as targets -> :class:`EEGDecoder` -> two-way
    identification of the test trials' class images (chance 0.5). With
    ``shuffle_labels=True`` the training targets are permuted, which must
    leave the test score at chance.

    Parameters
    ----------
    frontend : str
        EEG front-end of the decoder.
    n_classes, n_per_class : int
        Digit classes ``0..n_classes-1`` and trials per class.
    seed : int
        Seeds the simulation, the split, the label shuffle and the decoder.
    shuffle_labels : bool
        Permute the training trials' targets (the chance-level control).
    new_sfreq : float or None
        Resampling rate after filtering (None keeps 128 Hz).
    reject_uv : float
        Peak-to-peak rejection threshold in microvolts.
    test_fraction : float
        Share of trials held out (stratified by class).
    config, frontend_params, device :
        Passed to :class:`EEGDecoder`.
    simulation : dict, optional
        Overrides of :data:`DEFAULT_SIMULATION` / ``simulate_evoked_eeg`` arguments.

    Returns
    -------
    dict
        ``two_way`` (mean over test trials), ``class_accuracy`` (nearest class
        image by correlation; chance 1/n_classes), counts, SNR, seconds and
        the settings.
    """
    t0 = time.perf_counter()
    sim = {**DEFAULT_SIMULATION, **(simulation or {})}
    names = DIGIT_CLASSES[:n_classes]
    ep = simulate_evoked_eeg(n_per_class=n_per_class, class_names=names, seed=seed, **sim)
    X, keep, rep = preprocess_epochs(
        ep.data, ep.sfreq, l_freq=1.0, h_freq=40.0, notch=50.0, reference="average", baseline="epoch",
        new_sfreq=new_sfreq, reject_ptp=reject_uv, ch_names=ep.ch_names,
    )
    labels = ep.labels[keep]
    tr, te = train_test_split(np.arange(len(X)), test_size=test_fraction, random_state=seed, stratify=labels)
    images = class_images(names)
    y_train = labels[tr]
    if shuffle_labels:
        y_train = np.random.default_rng(seed + 10_000).permutation(y_train)
    dec = EEGDecoder(frontend=frontend, frontend_params=frontend_params, sfreq=rep.sfreq, config=config,
                     random_state=seed, device=device)
    dec.fit(X[tr], targets_for_labels(y_train, images))
    pred = dec.predict(X[te])
    true = targets_for_labels(labels[te], images)
    return {
        "frontend": frontend,
        "seed": seed,
        "shuffle_labels": shuffle_labels,
        "two_way": float(np.mean(two_way_identification(true=true, pred=pred))),
        "class_accuracy": float(np.mean(nearest_template(pred, images) == labels[te])),
        "chance_two_way": 0.5,
        "chance_accuracy": 1.0 / n_classes,
        "n_train": int(len(tr)),
        "n_test": int(len(te)),
        "n_rejected": int(rep.rejection.n_rejected) if rep.rejection else 0,
        "snr_rms": float(ep.metadata["snr_rms"]),
        "sfreq": rep.sfreq,
        "config": dec.config_.to_dict(),
        "best_epoch": int(dec.train_result_.best_epoch),
        "stopped_epoch": int(dec.train_result_.stopped_epoch),
        "seconds": time.perf_counter() - t0,
        "simulation": {"n_classes": n_classes, "n_per_class": n_per_class, **sim},
    }
