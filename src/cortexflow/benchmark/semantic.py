"""Semantic scores of finished benchmark runs.

The ``cccv1-semantic`` benchmark method itself is registered with the other
built-in methods (:mod:`cortexflow.benchmark.builtin`).

The runner's per-image table holds the pixel metrics. :func:`score_benchmark`
adds the semantic ones afterwards, from the predictions the runner stored: for
every finished run it embeds the run's test stimuli and reconstructions,
centres them on the mean embedding of **that run's training rows**, and writes
``semantic_results.csv`` (``ID_COLUMNS`` + ``semantic_two_way``,
``semantic_cosine``), ``semantic_stats.csv`` (the benchmark's paired statistics
against the reference method) and ``semantic_summary.md``.
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
from cortexflow.benchmark.store import validate_record
from cortexflow.benchmark.tasks import ID_COLUMNS, Task, load_task_data
from cortexflow.data.splits import scored_slice, split_indices
from cortexflow.evaluation.metrics import two_way_identification
from cortexflow.evaluation.stats import paired_comparisons
from cortexflow.reporting.report import md_escape
from cortexflow.semantic.cache import embed_images
from cortexflow.semantic.encoders import DEFAULT_ENCODER, ImageEncoder, as_image_batch, load_image_encoder
from cortexflow.semantic.metrics import SEMANTIC_METRIC_NAMES, centred_cosine
from cortexflow.utils.io import atomic_write_text
from cortexflow.utils.progress import progress_bar

__all__ = ["METHOD_NAME", "score_benchmark"]

logger = logging.getLogger(__name__)


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
        ``{"paths": {...}, "runs": n, "results": DataFrame, "stats": DataFrame or None}``
    """
    out = Path(out)
    runs = sorted((out / "runs").glob("*.json"))
    if not runs:
        raise FileNotFoundError(f"{out / 'runs'} holds no finished benchmark run (*.json)")
    enc = load_image_encoder(encoder)
    enc.check_layers([layer])
    full: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
    rows: list[dict] = []
    n_runs = 0
    for path in progress_bar(runs, progress=progress, desc="semantic scores", unit="run"):
        try:
            rec = json.loads(path.read_text())
            validate_record(rec, path.stem)
            task = Task.from_dict(rec["task"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            logger.warning("invalid run record %s (%s); skipped", path.name, exc)
            continue
        if bool(task.fast) != bool(fast):
            continue
        npz = path.with_suffix(".npz")
        if not npz.is_file():
            logger.warning("run %s has no predictions file %s; skipped", task.label, npz.name)
            continue
        ds = load_task_data(task.dataset, task.data_dir)
        key = (task.dataset, task.data_dir)
        if key not in full:  # every stimulus of the dataset, embedded once (cached on disk)
            e_tr = embed_images(ds.Y_train, enc, layers=[layer], cache_dir=cache_dir)[layer]
            e_te = embed_images(ds.Y_test, enc, layers=[layer], cache_dir=cache_dir)[layer]
            full[key] = (e_tr, e_te)
        e_tr, e_te = full[key]
        with np.load(npz, allow_pickle=False) as z:
            pred, test_index = z["predictions"], z["test_index"]
        train_rows, _ = split_indices(ds, task.split, task.fold, task.n_folds, task.split_seed)
        center = e_tr[train_rows].mean(axis=0)  # training rows of this run only
        e_true = np.concatenate([e_tr, e_te])[scored_slice(ds, task.split)][test_index]
        e_pred = embed_images(as_image_batch(pred, name="predictions"), enc, layers=[layer], use_cache=False)[layer]
        fp, ft = e_pred - center, e_true - center
        tw = two_way_identification(true=ft, pred=fp)
        cos = centred_cosine(e_pred, e_true, center)
        if len(rec["rows"]) != len(pred):
            raise ValueError(f"{path}: {len(rec['rows'])} result rows but {len(pred)} predictions")
        for i, r in enumerate(rec["rows"]):
            rows.append({**{c: r[c] for c in ID_COLUMNS}, "semantic_two_way": float(tw[i]),
                         "semantic_cosine": float(cos[i])})
        n_runs += 1
    df = pd.DataFrame(rows, columns=list(ID_COLUMNS) + list(SEMANTIC_METRIC_NAMES))
    df = df.sort_values(["dataset", "split", "method", "seed", "fold", "image"], kind="stable").reset_index(drop=True)
    paths = {"semantic_results": str(out / "semantic_results.csv")}
    atomic_write_text(out / "semantic_results.csv", df.to_csv(index=False))
    stats = None
    if len(df) and reference in set(df["method"]) and df["method"].nunique() > 1:
        stats = paired_comparisons(df, reference=reference, metrics=SEMANTIC_METRIC_NAMES, unit=unit)
        atomic_write_text(out / "semantic_stats.csv", stats.to_csv(index=False))
        paths["semantic_stats"] = str(out / "semantic_stats.csv")
    atomic_write_text(out / "semantic_summary.md", _summary_md(df, stats, enc.name, layer, unit))
    paths["semantic_summary"] = str(out / "semantic_summary.md")
    return {"paths": paths, "runs": n_runs, "results": df, "stats": stats}


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
