"""Compare ``ridge-prior`` with its class-conditioned variants on vangerven (issue 19, item 2).

Usage::

    export CORTEXFLOW_CACHE=/work/cache_quality      # one prior cache for every run
    # the choice: 10-fold CV of the 90 official training rows (fixed folds, split seed 0), 3 seeds
    python benchmarks/class_decoding_research.py --out runs/class_cv --split kfold --seeds 3
    # once the configuration is fixed by the CV numbers: the official split, 5 seeds
    python benchmarks/class_decoding_research.py --out runs/class_official --split official --seeds 5 \\
        --methods ridge-prior,ridge-prior-class

It runs ``cortexflow benchmark --datasets vangerven --split SPLIT --folds 10
--seeds N --reference ridge-prior --methods ...`` (resuming from ``--out``),
then prints one Markdown row per method: MSE, Pearson r, strict SSIM
(CortexFlow's), two-way identification, and the SSIM under scikit-image's
default settings and at 256 x 256, each as mean +/- sd over the seeds (each
seed's value is the mean over its scored images: the 90 out-of-fold images
of the k-fold split, or the 10 official test images). Then the paired
statistics of ``stats.csv`` against ``ridge-prior`` (Wilcoxon signed-rank
over images, seeds averaged per image, Holm-adjusted across methods and
metrics by the benchmark).

The k-fold split uses only the official training rows; the official test
rows are scored only by ``--split official``.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from cortexflow.data.loading import load_dataset
from cortexflow.evaluation.metrics import evaluate_reconstructions

DEFAULT_METHODS = "ridge-prior,ridge-prior-class,ridge-prior-class-shrink"
COLUMNS = ("mse", "pearson", "ssim", "two_way", "ssim_skimage", "ssim_256")
logger = logging.getLogger("class_decoding_research")


def run_benchmark(args: argparse.Namespace) -> None:
    """``cortexflow benchmark`` with the research settings (a rerun recomputes nothing that finished)."""
    cmd = [sys.executable, "-c", "from cortexflow.cli.main import main; main()", "benchmark",
           "--datasets", "vangerven", "--methods", args.methods, "--split", args.split, "--folds", str(args.folds),
           "--seeds", str(args.seeds), "--split-seed", "0", "--reference", "ridge-prior", "--out", str(args.out)]
    if args.data_dir:
        cmd += ["--data-dir", args.data_dir]
    logger.info("running %s", " ".join(cmd[3:]))
    subprocess.run(cmd, check=True)


def per_seed_scores(out: Path, split: str, data_dir: str | None) -> dict[str, dict[int, dict[str, float]]]:
    """method -> seed -> metric -> mean over that seed's scored images (the extra SSIMs from the stored predictions)."""
    ds = load_dataset("vangerven", data_dir)
    truth = ds.Y_test if split == "official" else ds.Y_train
    pooled: dict = defaultdict(lambda: defaultdict(lambda: ([], [])))
    for rec_path in sorted((out / "runs").glob("*.json")):
        rec = json.loads(rec_path.read_text())
        task = rec.get("task", {})
        if task.get("split") != split or task.get("dataset_name", task.get("dataset")) not in ("vangerven",):
            continue
        with np.load(rec_path.with_suffix(".npz")) as z:
            pred, idx = z["predictions"], z["test_index"]
        preds, idxs = pooled[task["method"]][int(task["seed"])]
        preds.append(pred)
        idxs.append(idx)
    out_scores: dict = {}
    for method, seeds in pooled.items():
        out_scores[method] = {}
        for seed, (preds, idxs) in seeds.items():
            P, I = np.concatenate(preds), np.concatenate(idxs)
            s = evaluate_reconstructions(true=truth[I], pred=np.clip(P, 0, 1), metrics=list(COLUMNS))
            out_scores[method][seed] = {m: float(np.mean(s[m])) for m in COLUMNS}
            out_scores[method][seed]["n_images"] = len(I)
    return out_scores


def print_table(scores: dict, methods: list[str]) -> None:
    print("| method | seeds | images/seed | " + " | ".join(COLUMNS) + " |")
    print("|---" * (len(COLUMNS) + 3) + "|")
    for m in methods:
        if m not in scores:
            continue
        seeds = scores[m]
        cells = []
        for c in COLUMNS:
            v = np.array([seeds[s][c] for s in sorted(seeds)])
            cells.append(f"{v.mean():.4f} +/- {v.std(ddof=1) if len(v) > 1 else 0.0:.4f}")
        n = sorted({seeds[s]["n_images"] for s in seeds})
        print(f"| {m} | {len(seeds)} | {'/'.join(map(str, n))} | " + " | ".join(cells) + " |")


def print_stats(out: Path) -> None:
    path = out / "stats.csv"
    if not path.exists():
        print("(no stats.csv)")
        return
    with path.open() as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        print("(stats.csv is empty)")
        return
    keys = list(rows[0])
    print("\n| " + " | ".join(keys) + " |")
    print("|---" * len(keys) + "|")
    for r in rows:
        print("| " + " | ".join(r[k] for k in keys) + " |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--methods", default=DEFAULT_METHODS)
    ap.add_argument("--split", default="kfold", choices=("kfold", "official"))
    ap.add_argument("--folds", type=int, default=10)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--no-run", action="store_true", help="only summarise what --out holds")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not args.no_run:
        run_benchmark(args)
    scores = per_seed_scores(args.out, args.split, args.data_dir)
    print_table(scores, args.methods.split(","))
    print_stats(args.out)


if __name__ == "__main__":
    main()
