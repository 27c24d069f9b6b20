"""Time one fit of ``cccv1-prior`` or ``ridge-prior`` on vangerven's 90 official training rows.

Usage::

    python benchmarks/bench_prior_fit.py --method cccv1-prior --threads 2 --repeats 2

The prior is read from the cache (trained first, outside the timing, when it
is missing). Prints one JSON line per fit: wall and CPU seconds of ``fit``
and the peak RSS of the process. Run it on an idle machine.
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import torch

from cortexflow import load_dataset
from cortexflow.methods.build import scored_stimuli, with_prior
from cortexflow.priors.cccv1_prior import CCCV1PriorDecoder
from cortexflow.priors.ridge_prior import RidgePriorDecoder

PRIOR_16 = {"embed_dim": 16, "epochs": 8}


def make(method: str, seed: int, stimuli):
    """The estimator, its prior resolved (trained or read from the cache) and guarded against ``stimuli``."""
    if method == "cccv1-prior":
        return with_prior(CCCV1PriorDecoder(dataset="vangerven", prior_config=dict(PRIOR_16), random_state=seed), stimuli)
    if method == "ridge-prior":
        return with_prior(RidgePriorDecoder(dataset="vangerven", random_state=seed), stimuli)
    raise SystemExit(f"--method {method!r}: allowed cccv1-prior, ridge-prior")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--method", default="cccv1-prior")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    ds = load_dataset("vangerven")
    stim = scored_stimuli(ds)
    make(args.method, 0, stim).fit(ds.X_train[:20], ds.Y_train[:20])  # warm-up: prior (and corpus) into the cache
    for r in range(args.repeats):
        est = make(args.method, 0, stim)
        t, c = time.perf_counter(), time.process_time()
        est.fit(ds.X_train, ds.Y_train)
        print(json.dumps({"method": args.method, "threads": args.threads, "repeat": r,
                          "wall_s": round(time.perf_counter() - t, 1), "cpu_s": round(time.process_time() - c, 1),
                          "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024}), flush=True)


if __name__ == "__main__":
    main()
