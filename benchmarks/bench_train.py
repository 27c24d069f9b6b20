"""Time one CCCV1Decoder fit per dataset with the data set's preset.

Each dataset runs in its own fresh Python process, so that the peak memory
(``ru_maxrss``) belongs to that one model (imports included) and one run's
warm-up does not flatter the next. Prints epochs run, seconds per epoch, total
wall seconds of ``fit`` and of the whole process, and the peak resident memory.

Usage::

    python benchmarks/bench_train.py                      # vangerven and miyawaki, seed 0
    python benchmarks/bench_train.py --threads 1 --json out.json
    CORTEXFLOW_DATA=/path/to/datasets python benchmarks/bench_train.py vangerven

The target on the project's 2-core CI machine: one vangerven model in <= 20 s
wall and < 1.5 GB peak memory.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

TARGET_SECONDS = 20.0
TARGET_PEAK_MB = 1536.0


def run_one(name: str, seed: int, threads: int | None, data_dir: str | None) -> dict:
    """Fit one model in this process and return its measurements."""
    t_start = time.perf_counter()
    import resource

    import torch

    if threads:
        torch.set_num_threads(threads)
    from cortexflow.data import load_dataset
    from cortexflow.models.estimator import CCCV1Decoder

    ds = load_dataset(name, data_dir)
    est = CCCV1Decoder(config="auto", dataset=name, random_state=seed, device="cpu", progress=False)
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    est.fit(ds.X_train, ds.Y_train)
    fit_s = time.perf_counter() - t0
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu_s = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    res = est.train_result_
    pred = est.predict(ds.X_test)
    mse = float(((pred - ds.Y_test) ** 2).mean())
    return {
        "dataset": name,
        "seed": seed,
        "config": est.config_.pattern,
        "torch_threads": torch.get_num_threads(),
        "epochs_run": res.stopped_epoch,
        "best_epoch": res.best_epoch,
        "fit_seconds": round(fit_s, 3),
        "seconds_per_epoch": round(fit_s / max(res.stopped_epoch, 1), 4),
        "fit_cpu_seconds": round(cpu_s, 3),  # all threads; less sensitive to other load than wall time
        "process_seconds": round(time.perf_counter() - t_start, 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),  # KiB on Linux
        "test_mse": round(mse, 6),
        "load_average_1min": round(os.getloadavg()[0], 2),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("datasets", nargs="*", default=["vangerven", "miyawaki"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's own)")
    ap.add_argument("--data-dir", default=None, help="data folder (default: $CORTEXFLOW_DATA or the user cache)")
    ap.add_argument("--json", default=None, help="also write the results to this JSON file")
    ap.add_argument("--_one", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    os.environ.setdefault("CORTEXFLOW_PROGRESS", "0")

    if args._one:  # child process
        print(json.dumps(run_one(args._one, args.seed, args.threads, args.data_dir)))
        return 0

    results = []
    for name in args.datasets:
        cmd = [sys.executable, __file__, "--_one", name, "--seed", str(args.seed)]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        if args.data_dir:
            cmd += ["--data-dir", args.data_dir]
        t0 = time.perf_counter()
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            print(out.stderr, file=sys.stderr)
            return out.returncode
        r = json.loads(out.stdout.strip().splitlines()[-1])
        r["wall_seconds_with_startup"] = round(time.perf_counter() - t0, 3)
        results.append(r)

    print(f"{'dataset':<10} {'thr':>3} {'epochs':>6} {'best':>4} {'s/epoch':>8} {'fit s':>7} {'cpu s':>7} "
          f"{'wall s':>7} {'peak MB':>8} {'test MSE':>9} {'load':>5}")
    for r in results:
        print(f"{r['dataset']:<10} {r['torch_threads']:>3} {r['epochs_run']:>6} {r['best_epoch']:>4} "
              f"{r['seconds_per_epoch']:>8.3f} {r['fit_seconds']:>7.2f} {r['fit_cpu_seconds']:>7.2f} "
              f"{r['wall_seconds_with_startup']:>7.2f} {r['peak_rss_mb']:>8.1f} {r['test_mse']:>9.5f} "
              f"{r['load_average_1min']:>5.2f}")
    print("fit s = wall seconds of fit(); cpu s = its CPU seconds over all threads; wall s = whole process "
          "(imports, loading, fit, predict); load = 1-minute load average of the machine at the end")
    for r in results:
        if r["dataset"] == "vangerven":
            ok = r["fit_seconds"] <= TARGET_SECONDS and r["peak_rss_mb"] < TARGET_PEAK_MB
            print(f"vangerven target (fit <= {TARGET_SECONDS:.0f} s, peak < {TARGET_PEAK_MB:.0f} MB): "
                  f"{'met' if ok else 'NOT met'}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
