"""Mean and spread over seeds of a benchmark's per-run test means.

Usage: python benchmarks/seed_spread.py OUT/results.csv [--split official] [--methods cccv1,...]

For each dataset and method, every run's test images are averaged first (one number per
(fold, seed) run); the table gives the mean and the standard deviation of those run means
over seeds (and folds, for kfold), as a Markdown table.
"""

from __future__ import annotations

import argparse

import pandas as pd

METRICS = ["mse", "pearson", "ssim", "two_way"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results")
    ap.add_argument("--split", default="official")
    ap.add_argument("--methods", default=None)
    args = ap.parse_args()
    df = pd.read_csv(args.results)
    df = df[df["split"] == args.split]
    if args.methods:
        keep = args.methods.split(",")
        df = df[df["method"].isin(keep)]
    runs = df.groupby(["dataset", "method", "fold", "seed"])[METRICS].mean().reset_index()
    print(f"| dataset | method | runs | " + " | ".join(METRICS) + " |")
    print("|---|---|---|" + "---|" * len(METRICS))
    for (d, m), g in runs.groupby(["dataset", "method"], sort=True):
        cells = [f"{g[k].mean():.4f} ± {g[k].std(ddof=1):.4f}" for k in METRICS]
        print(f"| {d} | {m} | {len(g)} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
