"""Cost of embedding stimuli with a pretrained image encoder, and of a cache hit.

Usage::

    python benchmarks/bench_embedding.py [--encoder efficientnet-lite0] [--dataset vangerven]
                                         [--repeats 3] [--out results.json]

Embeds the dataset's 100 stimuli (vangerven: 90 train + 10 test) into a fresh
temporary cache (a miss: encoder forward passes plus an atomic write), then
again (a hit: one .npz read), and times ``repeats`` more uncached passes. Prints
seconds per 100 images; the machine's load average is printed too, because
timings on a shared CPU vary with what else runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time

import numpy as np
import torch

from cortexflow.data import load_dataset
from cortexflow.semantic import clear_encoder_memo, embed_images, load_image_encoder


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--encoder", default="efficientnet-lite0")
    ap.add_argument("--dataset", default="vangerven")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--repeats", type=int, default=3, help="uncached passes timed after the first miss")
    ap.add_argument("--out", default=None, help="write the numbers as JSON here")
    args = ap.parse_args(argv)

    ds = load_dataset(args.dataset, args.data_dir)
    images = np.concatenate([ds.Y_train, ds.Y_test])
    n = len(images)
    clear_encoder_memo()
    t0 = time.perf_counter()
    enc = load_image_encoder(args.encoder)
    load_s = time.perf_counter() - t0
    enc.encode(images[:2])  # warm-up (thread pools, allocator)

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        first = embed_images(images, enc, cache_dir=tmp)["final"]
        miss_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        second = embed_images(images, enc, cache_dir=tmp)["final"]
        hit_s = time.perf_counter() - t0
    assert np.array_equal(first, second)
    passes = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        enc.encode(images)
        passes.append(time.perf_counter() - t0)

    per100 = lambda s: s * 100.0 / n  # noqa: E731
    res = {
        "encoder": enc.name,
        "dim": enc.dim,
        "dataset": args.dataset,
        "n_images": n,
        "load_seconds": round(load_s, 3),
        "first_run_miss_seconds_per_100": round(per100(miss_s), 3),
        "uncached_seconds_per_100": [round(per100(s), 3) for s in passes],
        "uncached_seconds_per_100_median": round(per100(statistics.median(passes)), 3) if passes else None,
        "cache_hit_seconds_per_100": round(per100(hit_s), 5),
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__,
    }
    print(json.dumps(res, indent=2))
    if args.out:
        from cortexflow.utils.io import atomic_write_json

        atomic_write_json(args.out, res)
    return res


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
