"""Benchmark report: ``results.csv``, ``stats.csv``, ``summary.md`` and a self-contained ``report.html``.

Summary statistics: each test image's metric is first averaged over model
seeds (one value per image and run layout), then the mean and the standard
deviation (ddof=1) are taken over images; ``seed_sd`` is the standard
deviation over seeds of the per-seed mean, the part of the spread that comes
from training randomness.
"""

from __future__ import annotations

import base64
import html
import logging
import os
import re
from pathlib import Path
from typing import Any, Mapping

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from cortexflow.reporting.figures import reconstruction_grid, save_figure  # noqa: E402
from cortexflow.utils.io import atomic_write_text  # noqa: E402
from cortexflow.utils.text import plain_label, strip_controls

__all__ = ["summary_table", "metric_panel", "write_report", "md_escape", "safe_filename", "strip_controls",
           "csv_cell", "csv_safe", "write_csv", "SPLIT_MEANING",
           "METRIC_LABELS"]

logger = logging.getLogger(__name__)

METRICS = ("mse", "pearson", "ssim", "psnr", "two_way")
METRIC_LABELS = {
    "mse": "MSE (lower is better)",
    "pearson": "Pearson r",
    "ssim": "SSIM (Gaussian sigma 1.5, native size)",
    "psnr": "PSNR dB (capped at 100)",
    "two_way": "two-way identification (chance 0.5)",
}
SPLIT_MEANING = {
    "official": (
        "Train on the dataset's official training rows, score on its official test rows, once per seed. "
        "What it measures depends on the dataset: where the test images also appear among the training "
        "images (miyawaki: all 12 of them, as other trials), it measures recognition of seen images, "
        "not reconstruction of new ones."
    ),
    "kfold": (
        "K-fold cross-validation over the official training rows, the same seeded folds for every method "
        "and seed (the fold assignment does not depend on the model seed). Where stimuli repeat (miyawaki), "
        "a test image's stimulus is usually present in the training folds, so this too measures recognition "
        "of seen images."
    ),
    "novel-stimulus": (
        "Group K-fold by stimulus content over the official training rows: no test image, by content, was "
        "seen in training. It measures reconstruction of images never seen."
    ),
}


def summary_table(results: pd.DataFrame, metrics=METRICS, order: list[str] | None = None) -> pd.DataFrame:
    """Mean, sd over images (after averaging over seeds) and sd over seeds, per dataset, split and method.

    Methods appear in ``order`` (default: order of first appearance in ``results``).
    """
    rows = []
    for (ds, split, method), sub in results.groupby(["dataset", "split", "method"], sort=True):
        per_image = sub.groupby(["fold", "image"])[list(metrics)].mean()
        per_seed = sub.groupby("seed")[list(metrics)].mean()
        row: dict[str, Any] = {
            "dataset": ds, "split": split, "method": method,
            "runs": int(sub[["fold", "seed"]].drop_duplicates().shape[0]),
            "seeds": int(sub["seed"].nunique()),
            "images": int(len(per_image)),
        }
        for m in metrics:
            row[f"{m}_mean"] = float(per_image[m].mean())
            row[f"{m}_sd"] = float(per_image[m].std(ddof=1)) if len(per_image) > 1 else float("nan")
            row[f"{m}_seed_sd"] = float(per_seed[m].std(ddof=1)) if len(per_seed) > 1 else float("nan")
        rows.append(row)
    df = pd.DataFrame(rows)
    if len(df):
        order = list(order or pd.unique(results["method"]))
        order += [m for m in pd.unique(df["method"]) if m not in order]
        df["_o"] = df["method"].map({m: i for i, m in enumerate(order)})
        df = df.sort_values(["dataset", "split", "_o"], kind="stable").drop(columns="_o").reset_index(drop=True)
    return df


def _fmt(v: float, metric: str) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return "n/a"
    if metric == "psnr":
        return f"{v:.2f}"
    return f"{v:.4f}"


def _p(v: float) -> str:
    if v is None or np.isnan(v):
        return "n/a"
    return f"{v:.2g}" if v >= 1e-4 else f"{v:.1e}"


def _marks(stats: pd.DataFrame | None, ds: str, split: str) -> dict[tuple[str, str], str]:
    if stats is None or len(stats) == 0:
        return {}
    s = stats[(stats["dataset"] == ds) & (stats["split"] == split)]
    return {(r.method, r.metric): r.mark for r in s.itertuples()}


def metric_panel(summary: pd.DataFrame, ds: str, split: str, path: str | os.PathLike,
                 marks: Mapping[tuple[str, str], str] | None = None, metrics=METRICS,
                 reference: str | None = None) -> Path:
    """One bar chart per metric (mean with +-1 sd error bars over images) for one dataset and split."""
    sub = summary[(summary["dataset"] == ds) & (summary["split"] == split)]
    names = list(sub["method"])
    fig, axes = plt.subplots(1, len(metrics), figsize=(2.6 * len(metrics) + 0.5, 3.2), squeeze=False)
    x = np.arange(len(names))
    colors = ["#C44E52" if n == reference else "#4C72B0" for n in names]
    for ax, m in zip(axes[0], metrics):
        vals = sub[f"{m}_mean"].to_numpy()
        errs = np.nan_to_num(sub[f"{m}_sd"].to_numpy())
        ax.bar(x, vals, yerr=errs, capsize=3, color=colors)
        ax.set_xticks(x)
        ax.set_xticklabels([plain_label(n) for n in names], rotation=40, ha="right", fontsize=7)
        ax.set_title(METRIC_LABELS[m], fontsize=8)
        ax.tick_params(axis="y", labelsize=7)
        top = float(np.nanmax(vals + errs)) if len(vals) else 0.0
        bottom = min(0.0, float(np.nanmin(vals - errs))) if len(vals) else 0.0
        if top > 0:
            ax.set_ylim(bottom * 1.15, top * 1.15)
        if marks:
            for i, n in enumerate(names):
                mk = marks.get((n, m), "")
                if mk:
                    ax.text(i, vals[i] + errs[i] + 0.02 * abs(top), mk, ha="center", va="bottom", fontsize=7)
    fig.suptitle(plain_label(f"{ds}, {split} split: mean ± 1 sd over test images"
                             + (f"; marks: paired Wilcoxon vs {reference}, Holm-adjusted" if reference else "")),
                 fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>|~])")


def md_escape(text: Any) -> str:
    """Text shown literally in Markdown (also inside a table cell): special characters backslash-escaped.

    >>> print(md_escape("a|b *c*"))
    a\\|b \\*c\\*
    """
    return _MD_SPECIAL.sub(r"\\\1", strip_controls(text, keep_newlines=False))


#: First characters that make a spreadsheet program read a cell as a formula.
FORMULA_START = ("=", "+", "-", "@")


def csv_cell(value: Any) -> Any:
    """A CSV cell as spreadsheets should show it: no control characters, a formula start escaped with ``'``.

    Numbers are returned unchanged (a negative number is not a formula).

    >>> csv_cell("=cmd|' -c calc'!A0")
    "'=cmd|' -c calc'!A0"
    """
    if not isinstance(value, str):
        return value
    v = strip_controls(value, keep_newlines=False)
    return "'" + v if v.startswith(FORMULA_START) else v


def csv_safe(df: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``df`` whose text cells and column names went through :func:`csv_cell`."""
    out = df.copy()
    for col in out.columns:
        if out[col].dtype == object or pd.api.types.is_string_dtype(out[col]):
            out[col] = out[col].map(csv_cell)
    out.columns = [csv_cell(c) if isinstance(c, str) else c for c in out.columns]
    return out


def write_csv(path: str | os.PathLike, df: pd.DataFrame) -> Path:
    """Write ``df`` atomically as CSV, its cells made safe for spreadsheets (:func:`csv_safe`)."""
    return atomic_write_text(path, csv_safe(df).to_csv(index=False))


def safe_filename(name: Any) -> str:
    """A file-name part made of letters, digits, ``.``, ``_`` and ``-`` only.

    >>> safe_filename("d1/data set")
    'd1_data_set'
    """
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(name)).strip("._") or "unnamed"


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(md_escape(c) for c in header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(md_escape(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _summary_rows(summary: pd.DataFrame, stats: pd.DataFrame | None, ds: str, split: str, reference: str | None):
    marks = _marks(stats, ds, split)
    header = ["method", "runs", "images"] + [m for m in METRICS]
    rows = []
    for r in summary[(summary["dataset"] == ds) & (summary["split"] == split)].itertuples():
        cells = [r.method + (" (reference)" if r.method == reference else ""), str(r.runs), str(r.images)]
        for m in METRICS:
            mk = marks.get((r.method, m), "")
            cells.append(f"{_fmt(getattr(r, f'{m}_mean'), m)} ± {_fmt(getattr(r, f'{m}_sd'), m)}" + (f" {mk}" if mk else ""))
        rows.append(cells)
    return header, rows


def _stats_rows(stats: pd.DataFrame | None, ds: str, split: str):
    header = ["method", "metric", "n", "mean diff (method - ref) [95% CI]", "d_z", "Wilcoxon p (Holm)",
              "t-test p (Holm)", "better", "mark"]
    rows = []
    if stats is None:
        return header, rows
    s = stats[(stats["dataset"] == ds) & (stats["split"] == split)]
    for r in s.itertuples():
        rows.append([r.method, r.metric, str(r.n),
                     f"{r.mean_diff:+.4g} [{r.ci_low:+.4g}, {r.ci_high:+.4g}]",
                     "n/a" if np.isnan(r.dz) else f"{r.dz:+.2f}",
                     f"{_p(r.wilcoxon_p)} ({_p(r.wilcoxon_p_holm)})", f"{_p(r.t_p)} ({_p(r.t_p_holm)})",
                     r.better, r.mark or ""])
    return header, rows


def _png_b64(path: Path) -> str:
    return base64.b64encode(Path(path).read_bytes()).decode("ascii")


def _html_table(header: list[str], rows: list[list[str]]) -> str:
    h = "".join(f"<th>{html.escape(c)}</th>" for c in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{h}</tr></thead><tbody>{body}</tbody></table>"


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:0.6em 0 1.4em;font-size:0.85em}
th,td{border:1px solid #ccc;padding:3px 7px;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
img{max-width:100%;border:1px solid #eee;margin:0.3em 0}
.note{background:#fff8e1;border-left:4px solid #f0c000;padding:0.4em 0.8em}
code{background:#f4f4f4;padding:1px 4px}
"""


def write_report(
    out_dir: str | os.PathLike,
    results: pd.DataFrame,
    stats: pd.DataFrame | None,
    grids: Mapping[str, Mapping[str, Any]],
    meta: Mapping[str, Any],
) -> dict[str, str]:
    """Write ``stats.csv``, ``summary.csv``, ``summary.md``, ``figures/*.png`` and ``report.html``.

    Parameters
    ----------
    out_dir : path-like
    results : DataFrame
        Tidy per-image results.
    stats : DataFrame or None
        Output of :func:`cortexflow.evaluation.stats.paired_comparisons`.
    grids : mapping
        Per dataset: ``stimuli``, ``reconstructions`` ({method: images}) and ``caption``.
    meta : mapping
        Command, notes, seeds, folds, timings (from the runner).

    Returns
    -------
    dict of str to str
        Paths written.
    """
    out = Path(out_dir)
    fig_dir = out / "figures"
    paths: dict[str, str] = {}
    reference = meta.get("reference")
    summary = summary_table(results, order=list(meta.get("methods") or []))
    write_csv(out / "summary.csv", summary)
    paths["summary_csv"] = str(out / "summary.csv")
    stats_df = stats if stats is not None else pd.DataFrame()
    write_csv(out / "stats.csv", stats_df)
    paths["stats"] = str(out / "stats.csv")

    figures: list[tuple[str, Path]] = []
    for ds, g in grids.items():
        recon = dict(g["reconstructions"])
        n = len(g["stimuli"])
        p = reconstruction_grid(g["stimuli"], recon, fig_dir / f"grid_{safe_filename(ds)}.png", max_images=min(n, 12),
                                title=g["caption"])
        figures.append((f"Test stimuli (top row) and each method's reconstruction: {g['caption']}", p))
    pairs = summary[["dataset", "split"]].drop_duplicates().itertuples(index=False)
    pairs = list(pairs)
    for ds, split in pairs:
        p = metric_panel(summary, ds, split, fig_dir / f"metrics_{safe_filename(ds)}_{split}.png",
                         _marks(stats, ds, split),
                         reference=reference if stats is not None else None)
        figures.append((f"{ds}, {split} split: mean ± 1 sd over test images", p))
    paths["figures"] = str(fig_dir)

    # ------------------------------------------------------------ markdown
    md = ["# CortexFlow benchmark", ""]
    if meta.get("command"):
        fence = "`" * max(3, 1 + max((len(m) for m in re.findall(r"`+", str(meta["command"]))), default=0))
        md += ["Command:", "", fence, strip_controls(meta["command"], keep_newlines=False), fence, ""]
    md += [f"Seeds: {md_escape(meta.get('seeds'))}; folds: {md_escape(meta.get('folds'))}; split seed: "
           f"{md_escape(meta.get('split_seed'))}; runs: {md_escape(meta.get('runs_total'))} "
           f"({md_escape(meta.get('runs_resumed', 0))} resumed from earlier invocations).",
           ""]
    if meta.get("fast"):
        md += ["**Fast mode: tiny training settings; these numbers are a pipeline check, not results.**", ""]
    md += ["## What each split measures", ""]
    for split in sorted({s for _, s in pairs}, key=list(SPLIT_MEANING).index):
        md.append(f"- **{md_escape(split)}**: {md_escape(SPLIT_MEANING[split])}")
    for fact in meta.get("split_facts", []):
        md.append(f"- {md_escape(fact)}")
    md.append("")
    if meta.get("notes"):
        md += ["## Notes", ""] + [f"- {md_escape(n)}" for n in meta["notes"]] + [""]
    info = meta.get("method_info") or {}
    if info:
        md += ["## Method notes", "", "Facts each method reported about its runs (its `report_info_`).", ""]
        for m, lines in info.items():
            md += [f"- **{md_escape(m)}**: " + "; ".join(md_escape(x) for x in lines)]
        md.append("")
    md += ["## Results", "",
           "Mean ± sd over test images (each image first averaged over seeds). `runs` = (fold, seed) pairs. "
           f"Marks: paired Wilcoxon signed-rank against {md_escape(reference)}, Holm-adjusted within each dataset, split "
           "and metric (\\*\\*\\* p<0.001, \\*\\* p<0.01, \\* p<0.05, ns otherwise).", ""]
    for ds, split in pairs:
        h, r = _summary_rows(summary, stats, ds, split, reference)
        md += [f"### {md_escape(ds)}, {md_escape(split)}", "", _md_table(h, r), ""]
    if stats is not None and len(stats):
        md += ["## Paired comparisons", "",
               f"Every method against {md_escape(reference)} on the same images, folds and seeds; unit of analysis: "
               f"{meta.get('unit', 'image')} (seeds averaged per unit). Differences are method minus reference "
               "(for MSE negative favours the method). The CI is a seeded percentile bootstrap of the mean "
               "difference. Folds of a K-fold split share training rows and repeated trials of one stimulus are "
               "correlated, so the p-values are optimistic about new data.", ""]
        for ds, split in pairs:
            h, r = _stats_rows(stats, ds, split)
            if r:
                md += [f"### {md_escape(ds)}, {md_escape(split)}", "", _md_table(h, r), ""]
    fs = meta.get("fit_seconds_per_method") or {}
    if fs:
        def cpu(v):
            return "n/a" if v.get("cpu_mean") is None else f"{v['cpu_mean']:.1f}"

        load = meta.get("load_average")
        md += ["## Fit time", "",
               "Wall-clock seconds per fit, and CPU seconds of the fitting process (steadier on a shared machine)"
               + (f"; load average at the end: {load[0]:.1f}" if load else "") + ".", "",
               _md_table(["method", "runs", "mean fit s (wall)", "mean fit CPU s", "total fit s (wall)"],
                         [[m, str(v["n"]), f"{v['mean']:.1f}", cpu(v), f"{v['sum']:.0f}"] for m, v in fs.items()]),
               ""]
    atomic_write_text(out / "summary.md", strip_controls("\n".join(md) + "\n"))
    paths["summary"] = str(out / "summary.md")

    # ---------------------------------------------------------------- html
    body = ["<h1>CortexFlow benchmark</h1>"]
    if meta.get("command"):
        body.append(f"<p>Command: <code>{html.escape(str(meta['command']))}</code></p>")
    body.append(f"<p>Seeds: {html.escape(str(meta.get('seeds')))}; folds: {html.escape(str(meta.get('folds')))}; "
                f"runs: {meta.get('runs_total')}.</p>")
    if meta.get("fast"):
        body.append('<p class="note"><b>Fast mode</b>: tiny training settings; a pipeline check, not results.</p>')
    body.append("<h2>What each split measures</h2><ul>")
    for split in sorted({s for _, s in pairs}, key=list(SPLIT_MEANING).index):
        body.append(f"<li><b>{html.escape(split)}</b>: {html.escape(SPLIT_MEANING[split])}</li>")
    for fact in meta.get("split_facts", []):
        body.append(f"<li>{html.escape(fact)}</li>")
    body.append("</ul>")
    for n in meta.get("notes", []):
        body.append(f'<p class="note">{html.escape(n)}</p>')
    if info:
        body.append("<h2>Method notes</h2><ul>")
        for m, lines in info.items():
            body.append(f"<li><b>{html.escape(m)}</b>: {html.escape('; '.join(lines))}</li>")
        body.append("</ul>")
    body.append("<h2>Results (mean ± sd over test images)</h2>")
    body.append(f"<p>Marks: paired Wilcoxon signed-rank against <code>{html.escape(str(reference))}</code>, "
                "Holm-adjusted (*** p&lt;0.001, ** p&lt;0.01, * p&lt;0.05, ns otherwise).</p>")
    for ds, split in pairs:
        h, r = _summary_rows(summary, stats, ds, split, reference)
        body.append(f"<h3>{html.escape(ds)}, {html.escape(split)}</h3>" + _html_table(h, r))
    body.append("<h2>Figures</h2>")
    for caption, p in figures:
        body.append(f"<figure><img alt='{html.escape(caption)}' src='data:image/png;base64,{_png_b64(p)}'>"
                    f"<figcaption>{html.escape(caption)}</figcaption></figure>")
    if stats is not None and len(stats):
        body.append("<h2>Paired comparisons</h2>")
        body.append("<p>Differences are method minus reference on the same images, folds and seeds (seeds averaged "
                    "per image); 95% CI by seeded bootstrap; p-values Holm-adjusted within each dataset, split and "
                    "metric. K-fold folds share training rows and repeated trials are correlated: the p-values are "
                    "optimistic about new data.</p>")
        for ds, split in pairs:
            h, r = _stats_rows(stats, ds, split)
            if r:
                body.append(f"<h3>{html.escape(ds)}, {html.escape(split)}</h3>" + _html_table(h, r))
    if fs:
        body.append("<h2>Fit time</h2><p>Wall-clock and CPU seconds per fit of each method.</p>")
        body.append(_html_table(["method", "runs", "mean fit s (wall)", "mean fit CPU s", "total fit s (wall)"],
                                [[m, str(v["n"]), f"{v['mean']:.1f}",
                                  "n/a" if v.get("cpu_mean") is None else f"{v['cpu_mean']:.1f}", f"{v['sum']:.0f}"]
                                 for m, v in fs.items()]))
    doc = ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>CortexFlow benchmark</title>"
           f"<style>{_CSS}</style></head><body>" + "\n".join(body) + "</body></html>\n")
    atomic_write_text(out / "report.html", strip_controls(doc))
    paths["report"] = str(out / "report.html")
    return paths

