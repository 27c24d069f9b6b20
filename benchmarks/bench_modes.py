#!/usr/bin/env python
"""Wall time of ``cortexflow benchmark`` with batched against sequential cccv1 training (a script, not a test).

For each protocol (default: 5-fold x 2 seeds and 10-fold x 3 seeds on
vangerven) it runs, ``--repeats`` times and alternating the arms (batched,
sequential, sequential, batched, ...), the command

    cortexflow benchmark --datasets vangerven --methods cccv1 --split kfold \\
        --folds K --seeds S --out FRESH_FOLDER --no-progress [--train-mode sequential]

at the CLI's defaults otherwise, each time into a fresh output folder (so no
run is resumed). It prints, and writes to ``OUT/bench_modes.json`` and
``OUT/bench_modes.md``, each arm's wall seconds (mean ± sd over repeats), the
ratio sequential / batched, and the machine's load average before and after
each run: on a machine shared with other jobs the ratio swings widely, so
quote a number measured on an idle machine and say which it was.

Example::

    CORTEXFLOW_DATA=../shared/datasets python benchmarks/bench_modes.py --repeats 3 --out runs/bench_modes
    python benchmarks/bench_modes.py --protocols 5x2 --repeats 1 --out /tmp/bench_modes   # a quick check
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from cortexflow.utils.io import atomic_write_json, atomic_write_text

ARMS = ("batched", "sequential")


def _protocol(text: str) -> tuple[int, int]:
    """``"5x2"`` -> (5 folds, 2 seeds)."""
    try:
        folds, seeds = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not FOLDSxSEEDS, e.g. 5x2") from None
    if folds < 2 or seeds < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: folds must be >= 2 and seeds >= 1")
    return folds, seeds


def _load() -> list[float]:
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else []


def command(arm: str, folds: int, seeds: int, out: Path, dataset: str, extra: list[str]) -> list[str]:
    """The timed command line of one arm."""
    cmd = [sys.executable, "-m", "cortexflow.cli.main", "benchmark", "--datasets", dataset, "--methods", "cccv1",
           "--split", "kfold", "--folds", str(folds), "--seeds", str(seeds), "--out", str(out), "--no-progress"]
    if arm == "sequential":
        cmd += ["--train-mode", "sequential"]
    return cmd + extra


def time_once(cmd: list[str]) -> float:
    """Wall seconds of one command (which must succeed)."""
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"command failed ({proc.returncode}): {shlex.join(cmd)}\n{proc.stderr[-3000:]}")
    return wall


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--protocols", type=_protocol, nargs="+", default=[(5, 2), (10, 3)], metavar="FOLDSxSEEDS",
                    help="kfold protocols to time (default: 5x2 10x3)")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per arm and protocol (default 3)")
    ap.add_argument("--dataset", default="vangerven")
    ap.add_argument("--out", type=Path, required=True, help="folder for the benchmark outputs and the summary")
    ap.add_argument("--machine", default="", help="how to describe the machine in the summary (e.g. 'idle', 'shared')")
    ap.add_argument("extra", nargs="*", help="extra arguments of every timed command (after --)")
    args = ap.parse_args(argv)
    if args.repeats < 1:
        ap.error(f"--repeats {args.repeats} must be >= 1")
    args.out.mkdir(parents=True, exist_ok=True)
    results = []
    for folds, seeds in args.protocols:
        walls: dict[str, list[float]] = {a: [] for a in ARMS}
        runs = []
        for r in range(args.repeats):
            order = ARMS if r % 2 == 0 else ARMS[::-1]  # alternate which arm goes first
            for arm in order:
                out = args.out / f"k{folds}_s{seeds}" / f"{arm}_{r}"
                shutil.rmtree(out, ignore_errors=True)  # a fresh folder: nothing resumed
                cmd = command(arm, folds, seeds, out, args.dataset, list(args.extra))
                before = _load()
                wall = time_once(cmd)
                walls[arm].append(wall)
                runs.append({"arm": arm, "repeat": r, "wall_seconds": wall, "load_before": before,
                             "load_after": _load(), "command": shlex.join(cmd)})
                print(f"{folds}-fold x {seeds} seeds, repeat {r}, {arm:<10} {wall:7.1f} s "
                      f"(load {before[0]:.1f} -> {_load()[0]:.1f})" if before else f"{arm} {wall:.1f} s", flush=True)
        b, s = np.array(walls["batched"]), np.array(walls["sequential"])
        ratios = s / b
        row = {"folds": folds, "seeds": seeds, "repeats": args.repeats,
               "batched_mean": float(b.mean()), "batched_sd": float(b.std(ddof=1)) if len(b) > 1 else None,
               "sequential_mean": float(s.mean()), "sequential_sd": float(s.std(ddof=1)) if len(s) > 1 else None,
               "ratio_of_means": float(s.mean() / b.mean()), "ratio_per_repeat": ratios.tolist(), "runs": runs}
        results.append(row)
        print(f"{folds}-fold x {seeds} seeds: batched {b.mean():.1f} s, sequential {s.mean():.1f} s, "
              f"ratio {row['ratio_of_means']:.2f}x", flush=True)
    summary = {"machine": args.machine, "platform": platform.platform(), "cpu_count": os.cpu_count(),
               "python": sys.version.split()[0], "dataset": args.dataset,
               "env": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "CORTEXFLOW_NUM_THREADS")},
               "results": results}
    atomic_write_json(args.out / "bench_modes.json", summary)

    def sd(v):
        return "" if v is None else f" ± {v:.1f}"

    lines = [f"# cortexflow benchmark: batched vs sequential cccv1 ({args.machine or 'machine not described'})", "",
             f"{platform.platform()}, {os.cpu_count()} CPUs; {args.dataset}, kfold, CLI defaults; arms alternated.", "",
             "| protocol | repeats | batched s | sequential s | sequential / batched |", "|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['folds']}-fold x {r['seeds']} seeds | {r['repeats']} | {r['batched_mean']:.1f}"
                     f"{sd(r['batched_sd'])} | {r['sequential_mean']:.1f}{sd(r['sequential_sd'])} | "
                     f"{r['ratio_of_means']:.2f}x |")
    atomic_write_text(args.out / "bench_modes.md", "\n".join(lines) + "\n")
    print(f"wrote {args.out / 'bench_modes.json'} and {args.out / 'bench_modes.md'}")
    return summary


if __name__ == "__main__":
    main()
