"""Semantic scores of finished benchmark runs.

The ``cccv1-semantic`` benchmark method itself is registered with the other
built-in methods (:mod:`cortexflow.benchmark.builtin`).

The runner's per-image table holds the pixel metrics. :func:`score_benchmark`
adds the semantic ones afterwards, from the predictions the runner stored in
its :class:`~cortexflow.benchmark.store.ResultStore` (every record and its
predictions file verified as the runner verifies them): for every finished run
:func:`semantic_scores` embeds the run's test stimuli and reconstructions,
centres them on the mean embedding of **that run's training rows**, and the
per-image scores are stored beside the run's record
(:meth:`~cortexflow.benchmark.store.ResultStore.save_scores`, one folder per
encoder and layer), so scoring again computes only the runs that are new or
changed. It writes ``semantic_results.csv`` (``ID_COLUMNS`` +
``semantic_two_way``, ``semantic_cosine``; through
:func:`cortexflow.reporting.report.write_csv`), ``semantic_stats.csv`` (the
benchmark's paired statistics against the reference method) and
``semantic_summary.md``.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cortexflow.semantic.decoder import SEMANTIC_METHOD as METHOD_NAME
from cortexflow.benchmark.store import ResultStore, record_key, validate_record
from cortexflow.benchmark.tasks import DEFAULT_KIND, ID_COLUMNS, Task, load_task_data
from cortexflow.data.splits import scored_slice, split_indices
from cortexflow.evaluation.metrics import two_way_identification
from cortexflow.evaluation.stats import paired_comparisons
from cortexflow.reporting.report import md_escape, write_csv
from cortexflow.semantic.cache import embed_images
from cortexflow.semantic.encoders import DEFAULT_ENCODER, ImageEncoder, as_image_batch, load_image_encoder
from cortexflow.semantic.metrics import SEMANTIC_METRIC_NAMES, centred_cosine
from cortexflow.utils.io import atomic_write_text
from cortexflow.utils.progress import progress_bar

__all__ = ["METHOD_NAME", "score_benchmark", "semantic_scores", "scorer_name"]

logger = logging.getLogger(__name__)


def scorer_name(encoder: str, layer: str) -> str:
    """Name under which the semantic scores of one encoder and layer are stored (``semantic:<encoder>:<layer>``)."""
    return f"semantic:{encoder}:{layer}"


def semantic_scores(task: Task, rows: list[dict], pred: np.ndarray, test_index: np.ndarray, enc: ImageEncoder,
                    layer: str, embedded: tuple[np.ndarray, np.ndarray]) -> list[dict]:
    """The semantic per-image metrics of one finished task (its ``rows`` and stored predictions).

    ``embedded`` holds the embeddings of the dataset's training and test
    stimuli; the centre is the mean embedding of this task's training rows.

    Returns
    -------
    list of dict
        One per row: the :data:`~cortexflow.benchmark.tasks.ID_COLUMNS` and
        ``semantic_two_way``, ``semantic_cosine``.
    """
    ds = load_task_data(task.dataset, task.data_dir)
    e_tr, e_te = embedded
    train_rows, _ = split_indices(ds, task.split, task.fold, task.n_folds, task.split_seed)
    center = e_tr[train_rows].mean(axis=0)  # training rows of this run only
    e_true = np.concatenate([e_tr, e_te])[scored_slice(ds, task.split)][test_index]
    e_pred = embed_images(as_image_batch(pred, name="predictions"), enc, layers=[layer], use_cache=False)[layer]
    fp, ft = e_pred - center, e_true - center
    tw = two_way_identification(true=ft, pred=fp)
    cos = centred_cosine(e_pred, e_true, center)
    return [{**{c: r[c] for c in ID_COLUMNS}, "semantic_two_way": float(tw[i]), "semantic_cosine": float(cos[i])}
            for i, r in enumerate(rows)]


def score_benchmark(
    out: str | os.PathLike,
    *,
    encoder: str | ImageEncoder = DEFAULT_ENCODER,
    layer: str = "final",
    cache_dir: str | os.PathLike | None = None,
    reference: str = "cccv1",
    unit: str = "image",
    fast: bool = False,
    progress: bool | None = None,
) -> dict[str, Any]:
    """Semantic metrics of every finished run in a benchmark folder, with paired statistics.

    Runs whose record or predictions do not verify are skipped with a
    warning (the runner recomputes them); runs of other task kinds (the EEG
    cross-validation's) are not image-dataset runs and are skipped. Scores
    stored by an earlier call for the same encoder and layer (and the same
    record) are read back, not computed again.

    Parameters
    ----------
    out : path-like
        The benchmark's output folder (holding ``runs/``).
    encoder, layer :
        Feature space of the metrics.
    cache_dir : path-like, optional
        Embedding cache root.
    reference : str
        Method compared against (skipped when absent).
    unit : {"image", "stimulus"}
        Unit of the paired statistics.
    fast : bool
        Score the runs made with ``fast=True`` instead of the full ones.

    Returns
    -------
    dict
        ``{"paths": {...}, "runs": n, "computed": n, "resumed": n, "results": DataFrame,
        "stats": DataFrame or None}``
    """
    out = Path(out)
    runs = sorted((out / "runs").glob("*.json"))
    if not runs:
        raise FileNotFoundError(f"{out / 'runs'} holds no finished benchmark run (*.json)")
    enc = load_image_encoder(encoder)
    enc.check_layers([layer])
    store = ResultStore(out)
    scorer = scorer_name(enc.name, layer)
    full: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
    rows: list[dict] = []
    n_runs = computed = 0
    for path in progress_bar(runs, progress=progress, desc="semantic scores", unit="run"):
        try:
            rec = json.loads(path.read_text())
            validate_record(rec, path.stem)
            task = Task.from_dict(rec["task"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            logger.warning("invalid run record %s (%s); skipped", path.name, exc)
            continue
        if task.kind != DEFAULT_KIND or bool(task.fast) != bool(fast):
            continue
        if record_key(task) != path.stem or not store.has(task):  # has(): the predictions file verifies too
            logger.warning("run %s (%s) does not verify; skipped", task.label, path.name)
            continue
        got = store.load_scores(task, scorer, SEMANTIC_METRIC_NAMES)
        if got is None:
            key = (task.dataset, task.data_dir)
            if key not in full:  # every stimulus of the dataset, embedded once (cached on disk)
                ds = load_task_data(task.dataset, task.data_dir)
                full[key] = (embed_images(ds.Y_train, enc, layers=[layer], cache_dir=cache_dir)[layer],
                             embed_images(ds.Y_test, enc, layers=[layer], cache_dir=cache_dir)[layer])
            pred, test_index = store.load_predictions(task)
            got = semantic_scores(task, rec["rows"], pred, test_index, enc, layer, full[key])
            store.save_scores(task, scorer, got)
            computed += 1
        rows.extend(got)
        n_runs += 1
    df = pd.DataFrame(rows, columns=list(ID_COLUMNS) + list(SEMANTIC_METRIC_NAMES))
    df = df.sort_values(["dataset", "split", "method", "seed", "fold", "image"], kind="stable").reset_index(drop=True)
    paths = {"semantic_results": str(out / "semantic_results.csv")}
    write_csv(out / "semantic_results.csv", df)
    stats = None
    if len(df) and reference in set(df["method"]) and df["method"].nunique() > 1:
        stats = paired_comparisons(df, reference=reference, metrics=SEMANTIC_METRIC_NAMES, unit=unit)
        write_csv(out / "semantic_stats.csv", stats)
        paths["semantic_stats"] = str(out / "semantic_stats.csv")
    atomic_write_text(out / "semantic_summary.md", _summary_md(df, stats, enc.name, layer, unit))
    paths["semantic_summary"] = str(out / "semantic_summary.md")
    return {"paths": paths, "runs": n_runs, "computed": computed, "resumed": n_runs - computed, "results": df,
            "stats": stats}


def _summary_md(df: pd.DataFrame, stats: pd.DataFrame | None, encoder: str, layer: str, unit: str) -> str:
    lines = [f"# Semantic metrics ({encoder}, layer {layer})", "",
             "Per run: mean over its test images; then mean ± sd over model seeds (kfold: folds pooled per seed).",
             "`semantic_cosine` is centred on the mean embedding of each run's training stimuli.", "",
             "| dataset | split | method | seeds | semantic_two_way | semantic_cosine |",
             "|---|---|---|---|---|---|"]
    for (d, s, m), sub in df.groupby(["dataset", "split", "method"], sort=True):
        per_seed = sub.groupby("seed")[list(SEMANTIC_METRIC_NAMES)].mean()
        cells = []
        for metric in SEMANTIC_METRIC_NAMES:
            v = per_seed[metric].to_numpy()
            sd = float(np.std(v, ddof=1)) if len(v) > 1 else float("nan")
            cells.append(f"{v.mean():.4f} ± {sd:.4f}" if len(v) > 1 else f"{v.mean():.4f}")
        lines.append(f"| {md_escape(d)} | {s} | {md_escape(m)} | {len(per_seed)} | {cells[0]} | {cells[1]} |")
    if stats is not None and len(stats):
        lines += ["", f"Paired against `{stats['reference'].iloc[0]}` (unit: {unit}; Wilcoxon, Holm-adjusted):", "",
                  "| dataset | split | metric | method | n | mean diff | 95% CI | d_z | p (Holm) | |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for _, r in stats.iterrows():
            lines.append(f"| {md_escape(r['dataset'])} | {r['split']} | {r['metric']} | {md_escape(r['method'])} | {int(r['n'])} | "
                         f"{r['mean_diff']:+.4f} | [{r['ci_low']:+.4f}, {r['ci_high']:+.4f}] | {r['dz']:.2f} | "
                         f"{r['wilcoxon_p_holm']:.3g} | {md_escape(r['mark'])} |")
    return "\n".join(lines) + "\n"
