#!/usr/bin/env python
"""Fit time of a 5-member ``cccv1-prior`` ensemble: members trained together (batched) vs one after another.

One fit of

    CCCV1PriorDecoder(dataset="vangerven", n_members=5, prior_config={"embed_dim": 32, "epochs": 8},
                      random_state=0, batched=ARM)

on vangerven's official training rows (90), on one torch thread, for each arm
(``batched=True`` and ``batched=False``), ``--repeats`` times with the arms
alternated (sequential, batched, batched, sequential, ...). The prior comes
from the cache (a first, untimed fit trains it there when it is missing, a
few minutes). It prints, and writes to ``--out`` (JSON), each arm's wall
seconds of ``fit``, the process CPU seconds of ``fit`` (less sensitive to other
jobs on a shared machine than wall time) and the estimator's ``fit_seconds_``
(``fit`` minus the prior lookup), mean ± sd, the ratios sequential / batched, the largest
difference between the two arms' test-set predictions, and the load average
before and after each run (on a machine shared with other jobs the times
swing: say which machine and load a number comes from).

Example::

    CORTEXFLOW_DATA=../shared/datasets python benchmarks/bench_prior_batched.py --out runs/bench_prior_batched.json
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from cortexflow.data.loading import load_dataset
from cortexflow.methods.build import scored_stimuli, with_prior
from cortexflow.priors.cccv1_prior import CCCV1PriorDecoder
from cortexflow.utils.io import atomic_write_json

PRIOR_CONFIG = {"embed_dim": 32, "epochs": 8}
ARMS = {"sequential": False, "batched": True}


def _load() -> list[float]:
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else []


def _estimator(batched: bool, n_members: int, stimuli: np.ndarray) -> CCCV1PriorDecoder:
    """The estimator with its prior resolved (trained, or read from the cache) and guarded against ``stimuli``."""
    return with_prior(CCCV1PriorDecoder(dataset="vangerven", n_members=n_members, prior_config=dict(PRIOR_CONFIG),
                                        random_state=0, device="cpu", batched=batched), stimuli)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=2, help="fits per arm (default 2)")
    ap.add_argument("--members", type=int, default=5, help="ensemble size (default 5)")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    ap.add_argument("--out", type=Path, default=Path("bench_prior_batched.json"), help="JSON output file")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    ds = load_dataset("vangerven", os.environ.get("CORTEXFLOW_DATA"))
    X, Y, Xt = ds.X_train, ds.Y_train, ds.X_test
    t0 = time.perf_counter()
    stim = scored_stimuli(ds)
    warm = _estimator(False, 1, stim).set_params(config={"epochs": 1}).fit(X, Y)  # trains the prior when not cached
    print(f"untimed warm-up fit (prior from cache: {warm.prior_.info.get('from_cache')}): "
          f"{time.perf_counter() - t0:.1f} s")
    order = [arm for r in range(args.repeats) for arm in (("sequential", "batched") if r % 2 == 0
                                                           else ("batched", "sequential"))]
    runs, preds = [], {}
    for arm in order:
        before = _load()
        t, c = time.perf_counter(), time.process_time()
        est = _estimator(ARMS[arm], args.members, stim).fit(X, Y)
        wall, cpu = time.perf_counter() - t, time.process_time() - c
        preds.setdefault(arm, est.predict(Xt))
        runs.append({"arm": arm, "wall_s": round(wall, 3), "cpu_s": round(cpu, 3),
                     "fit_seconds": round(est.fit_seconds_, 3), "epochs": [len(h) for h in est.histories_], "load_before": before, "load_after": _load()})
        print(f"{arm:10s} fit {wall:6.2f} s wall, {cpu:6.2f} s CPU (fit_seconds_ {est.fit_seconds_:6.2f} s), epochs "
              f"{runs[-1]['epochs']}, load {before[0]:.2f} -> {runs[-1]['load_after'][0]:.2f}")
    summary = {}
    for arm in ARMS:
        w = np.array([r["wall_s"] for r in runs if r["arm"] == arm])
        c = np.array([r["cpu_s"] for r in runs if r["arm"] == arm])
        f = np.array([r["fit_seconds"] for r in runs if r["arm"] == arm])
        summary[arm] = {"wall_mean_s": float(w.mean()), "wall_sd_s": float(w.std(ddof=1)) if len(w) > 1 else 0.0,
                        "cpu_mean_s": float(c.mean()), "cpu_sd_s": float(c.std(ddof=1)) if len(c) > 1 else 0.0,
                        "fit_seconds_mean": float(f.mean())}
    ratio = summary["sequential"]["wall_mean_s"] / summary["batched"]["wall_mean_s"]
    ratio_cpu = summary["sequential"]["cpu_mean_s"] / summary["batched"]["cpu_mean_s"]
    diff = float(np.max(np.abs(preds["batched"].astype(np.float64) - preds["sequential"])))
    for arm, s in summary.items():
        print(f"{arm:10s} wall {s['wall_mean_s']:.2f} ± {s['wall_sd_s']:.2f} s, CPU {s['cpu_mean_s']:.2f} ± "
              f"{s['cpu_sd_s']:.2f} s over {args.repeats} fits")
    print(f"sequential / batched: wall {ratio:.2f}x, CPU {ratio_cpu:.2f}x; test predictions max |diff| {diff:.3g}")
    atomic_write_json(args.out, {
        "estimator": {"dataset": "vangerven", "split": "official", "n_train": int(len(X)), "n_members": args.members,
                      "prior_config": PRIOR_CONFIG, "random_state": 0},
        "threads": args.threads, "repeats": args.repeats, "runs": runs, "summary": summary,
        "ratio_sequential_over_batched": ratio, "cpu_ratio_sequential_over_batched": ratio_cpu,
        "max_abs_pred_diff": diff,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__},
    })
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
