"""Evaluate EEG decoders on labelled epochs: stratified cross-validation next to a shuffled-label control.

Two protocols, both on :class:`~cortexflow.data.eeg.EEGEpochs` whose labels
index class images (the targets):

* :func:`cross_validate_eeg` (``cortexflow eeg evaluate``): stratified K-fold
  cross-validation of every front-end and model seed, each fit repeated with
  the training targets permuted (the shuffled-label control), plus the
  mean-template floor (every test trial predicted as the mean training
  target). Per-trial two-way identification, MSE and nearest-template class
  accuracy; :func:`summarize_eeg_cv` turns them into mean ± sd over seeds
  and paired tests of the true labels against the control.
* :func:`simulated_identification` (``cortexflow eeg simulate``): one
  stratified hold-out split of simulated EEG, the pathway check of ``docs/eeg.md``.

Preprocessing (:class:`~cortexflow.data.eeg.EpochPreprocessor`: notch,
band-pass, resampling, fixed length, per-trial z-scoring) is fitted on the
training trials of each fold; so is the decoder's robust scaler, its early
stopping (an inner split of the training trials) and the mean template.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedKFold, train_test_split

from cortexflow.data.eeg import DIGIT_CLASSES, EEGEpochs, EpochPreprocessor, preprocess_epochs, simulate_evoked_eeg
from cortexflow.data.stimuli import class_images, targets_for_labels
from cortexflow.evaluation.metrics import mse_per_image, two_way_identification
from cortexflow.evaluation.stats import holm_bonferroni, paired_test
from cortexflow.exceptions import ConfigError, DataValidationError
from cortexflow.models.eeg_estimator import EEGDecoder
from cortexflow.models.frontends import FRONTENDS
from cortexflow.training.config import get_config
from cortexflow.utils.io import atomic_write_json, atomic_write_text
from cortexflow.utils.progress import progress_bar

__all__ = [
    "DEFAULT_PREPROCESS",
    "DEFAULT_SIMULATION",
    "cross_validate_eeg",
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


def nearest_template(pred: np.ndarray, images: np.ndarray) -> np.ndarray:
    """Index of the class image most correlated with each prediction (the decoded class)."""
    p = np.asarray(pred, dtype=np.float64).reshape(len(pred), -1)
    q = np.asarray(images, dtype=np.float64).reshape(len(images), -1)
    p = (p - p.mean(1, keepdims=True)) / (p.std(1, keepdims=True) + 1e-12)
    q = (q - q.mean(1, keepdims=True)) / (q.std(1, keepdims=True) + 1e-12)
    return (p @ q.T).argmax(1)


def sign_flip_pvalue(diff: Sequence[float], *, n_perm: int = 10_000, seed: int = 0) -> float:
    """Two-sided sign-flip permutation p-value of the mean of paired differences.

    Each permutation flips the sign of every difference at random (the null:
    the two conditions are exchangeable within a pair); ``p = (1 + #{|mean*|
    >= |mean|}) / (1 + n_perm)``. NaN for no differences; 1.0 when all are 0.
    """
    d = np.asarray(diff, dtype=np.float64)
    if d.size == 0:
        return float("nan")
    obs = abs(d.mean())
    if obs == 0:
        return 1.0
    rng = np.random.default_rng(seed)
    hits = 0
    for start in range(0, n_perm, 1000):
        k = min(1000, n_perm - start)
        signs = rng.choice((-1.0, 1.0), size=(k, d.size))
        hits += int((np.abs((signs * d).mean(axis=1)) >= obs - 1e-15).sum())
    return (1 + hits) / (1 + n_perm)


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
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Stratified K-fold cross-validation of EEG decoders, with shuffled-label control and mean-template floor.

    The folds (``StratifiedKFold(n_folds, shuffle=True, random_state=split_seed)``)
    are the same for every front-end, seed and condition, so every
    comparison is paired trial by trial. For each fold: the preprocessor is
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
    images = np.asarray(images, dtype=np.float32)
    frontends = list(frontends)
    seeds = [int(s) for s in seeds]
    _check_cv_args(epochs, images, frontends, n_folds, seeds)
    overrides = dict(config_overrides or {})
    get_config(config, n_train=epochs.n_epochs, **overrides)  # bad settings fail before any work
    pre_kw = {**DEFAULT_PREPROCESS, **(preprocess or {})}
    folds = list(StratifiedKFold(int(n_folds), shuffle=True, random_state=split_seed).split(
        np.zeros(epochs.n_epochs), epochs.labels))
    conditions = ["true", "shuffled"] if control else ["true"]
    n_fits = len(folds) * len(frontends) * len(seeds) * len(conditions)
    trial_rows: list[pd.DataFrame] = []
    fit_rows: list[dict] = []
    bar = progress_bar(total=n_fits, desc="eeg evaluate", unit="fit", progress=progress)
    try:
        for k, (tr, te) in enumerate(folds):
            cfg = get_config(config, n_train=len(tr), **overrides)
            prep = EpochPreprocessor(epochs.sfreq, **pre_kw).fit(epochs.data[tr])
            X_tr, X_te = prep.transform(epochs.data[tr]), prep.transform(epochs.data[te])
            y_tr, y_te = epochs.labels[tr], epochs.labels[te]
            true_te = targets_for_labels(y_te, images)
            base = {"fold": k, "trial": te, "event_id": epochs.event_ids[te], "label": y_te}
            floor = np.broadcast_to(targets_for_labels(y_tr, images).mean(axis=0), true_te.shape)
            trial_rows.append(pd.DataFrame({"frontend": MEAN_TEMPLATE, "labels": "none", "seed": 0, **base,
                                            **_score(floor, true_te, y_te, images)}))
            for fe in frontends:
                for seed in seeds:
                    for cond in conditions:
                        y_fit = y_tr
                        if cond == "shuffled":
                            y_fit = np.random.default_rng([seed, k, 10_000]).permutation(y_tr)
                        t0 = time.perf_counter()
                        dec = EEGDecoder(frontend=fe, frontend_params=frontend_params, sfreq=prep.sfreq_,
                                         config=cfg, random_state=seed, device=device)
                        dec.fit(X_tr, targets_for_labels(y_fit, images))
                        pred = dec.predict(X_te)
                        seconds = time.perf_counter() - t0
                        trial_rows.append(pd.DataFrame({"frontend": fe, "labels": cond, "seed": seed, **base,
                                                        **_score(pred, true_te, y_te, images)}))
                        fit_rows.append({"frontend": fe, "labels": cond, "seed": seed, "fold": k,
                                         "n_train": len(tr), "n_test": len(te),
                                         "best_epoch": int(dec.train_result_.best_epoch),
                                         "stopped_epoch": int(dec.train_result_.stopped_epoch),
                                         "seconds": round(seconds, 3)})
                        logger.info("fold %d %s seed %d %s labels: two-way %.3f in %.1f s", k, fe, seed, cond,
                                    float(trial_rows[-1]["two_way"].mean()), seconds)
                        bar.update(1)
    finally:
        bar.close()
    return pd.concat(trial_rows, ignore_index=True), pd.DataFrame(fit_rows)


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


def _json_safe(obj: Any) -> Any:
    """``obj`` with NaN/Inf floats replaced by None (strict JSON has no NaN)."""
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return float(obj) if np.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def _check_writable(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".write-test-"):
            pass  # a unique name: nothing of the user's is touched
    except OSError as exc:
        raise ConfigError(f"--out {out}: cannot write there ({exc.strerror or exc})") from None


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
) -> dict[str, Any]:
    """Run :func:`cross_validate_eeg` and write its results into ``out``.

    Files (each written atomically): ``results.csv`` (one row per test trial
    and fit), ``fits.csv`` (one row per fit), ``summary.json`` (settings,
    ``extra`` such as the data set's description and the command,
    :func:`summarize_eeg_cv`'s table and tests) and ``summary.md`` (the
    tables). ``out`` is checked for writability before any training.

    Returns
    -------
    dict
        The content of ``summary.json`` plus ``paths``.
    """
    out = Path(out)
    _check_writable(out)
    t0 = time.perf_counter()
    trials, fits = cross_validate_eeg(
        epochs, images, frontends=frontends, n_folds=n_folds, seeds=seeds, split_seed=split_seed, control=control,
        preprocess=preprocess, config=config, config_overrides=config_overrides, device=device, progress=progress,
    )
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
        "wall_seconds": round(time.perf_counter() - t0, 1),
        "fit_seconds_total": float(fits["seconds"].sum()) if len(fits) else 0.0,
    }
    paths = {"results": out / "results.csv", "fits": out / "fits.csv", "summary": out / "summary.json",
             "table": out / "summary.md"}
    atomic_write_text(paths["results"], trials.to_csv(index=False))
    atomic_write_text(paths["fits"], fits.to_csv(index=False))
    atomic_write_json(paths["summary"], _json_safe(payload))
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
