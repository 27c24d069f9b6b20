#!/usr/bin/env python
"""Speed benchmark: batched against sequential CCCV1 training (a script, not a test).

cccv1 on vangerven, K-fold cross-validation on the official training rows
(10 folds, the benchmark's fold seed 0) x 3 training seeds = 30 models,
trained

* ``sequential``: one ``CCCV1Decoder.fit`` after another (the standard trainer);
* ``batched``: all members at once with :func:`cortexflow.training.batched.fit_many`;
* ``batched1`` (ablation, optional): the batched trainer with groups of one
  member, which separates the gain of stacking members from the gain of the
  batched trainer's kernels (fused Adam, grouped linear backward).

For each arm it reports wall seconds (total and per model), CPU seconds of this
process (less sensitive to other load on a shared machine), the mean held-out
MSE and Pearson r over all test images of all folds and seeds (equal quality
check), and the machine's load average before and after. Every arm uses the
same thread setting. With ``--full-benchmark`` it also times the default
``cortexflow benchmark`` command.

Example (the command behind the table in docs/scale.md)::

    CORTEXFLOW_DATA=../shared/datasets python benchmarks/bench_speed.py \\
        --arms batched,sequential --threads 1 --repeats 3 --out runs/bench_speed
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from cortexflow.data import load_dataset
from cortexflow.data.splits import kfold_splits
from cortexflow.evaluation.metrics import mse_per_image, pearson_per_image
from cortexflow.models.estimator import CCCV1Decoder
from cortexflow.training.batched import fit_many
from cortexflow.training.config import get_config
from cortexflow.training.devices import configure_threads, resolve_device
from cortexflow.utils.io import atomic_write_json, atomic_write_text

ARMS = ("batched", "sequential", "batched1")


def _load() -> tuple[float, float, float]:
    try:
        return os.getloadavg()
    except OSError:  # pragma: no cover
        return (float("nan"),) * 3


def _tasks(ds, n_folds: int, seeds: list[int]):
    splits = list(kfold_splits(len(ds.X_train), n_folds, seed=0))
    return [(sp, s) for sp in splits for s in seeds]


def _score(decoders, tasks, ds) -> dict[str, float]:
    mses, rs = [], []
    per_model = []
    for dec, (sp, _) in zip(decoders, tasks):
        pred = dec.predict(ds.X_train[sp.test])
        m = mse_per_image(pred=pred, true=ds.Y_train[sp.test])
        mses.append(m)
        rs.append(pearson_per_image(pred=pred, true=ds.Y_train[sp.test]))
        per_model.append(float(np.mean(m)))
    mse, r = np.concatenate(mses), np.concatenate(rs)
    return {"mse_mean": float(mse.mean()), "mse_sd": float(mse.std(ddof=1)), "pearson_mean": float(np.nanmean(r)),
            "per_model_mse": per_model,
            "epochs_mean": float(np.mean([d.train_result_.stopped_epoch for d in decoders])),
            "best_epoch_mean": float(np.mean([d.train_result_.best_epoch for d in decoders]))}


def run_arm(arm: str, ds, tasks, cfg, device: str, max_group: int | None) -> dict:
    Xs = [ds.X_train[sp.train] for sp, _ in tasks]
    Ys = [ds.Y_train[sp.train] for sp, _ in tasks]
    seeds = [s for _, s in tasks]
    load0 = _load()
    w0, c0 = time.perf_counter(), time.process_time()
    if arm == "sequential":
        decs = [CCCV1Decoder(config=cfg, dataset="vangerven", random_state=s, device=device).fit(X, Y)
                for X, Y, s in zip(Xs, Ys, seeds)]
    elif arm == "batched":
        decs = fit_many(Xs, Ys, seeds, config=cfg, dataset="vangerven", device=device, max_group=max_group)
    elif arm == "batched1":
        decs = fit_many(Xs, Ys, seeds, config=cfg, dataset="vangerven", device=device, max_group=1)
    else:
        raise SystemExit(f"unknown arm {arm!r}; allowed: {', '.join(ARMS)}")
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    out = {"arm": arm, "models": len(tasks), "wall_s": wall, "cpu_s": cpu, "wall_s_per_model": wall / len(tasks),
           "cpu_s_per_model": cpu / len(tasks), "load_before": load0, "load_after": _load()}
    out.update(_score(decs, tasks, ds))
    return out


def full_benchmark(out: Path, extra: str) -> dict:
    cmd = [sys.executable, "-m", "cortexflow.cli.main", "benchmark", "--out", str(out / "full")] + shlex.split(extra)
    load0 = _load()
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    return {"command": " ".join(shlex.quote(c) for c in cmd), "rc": proc.returncode, "wall_s": time.perf_counter() - t0,
            "load_before": load0, "load_after": _load(), "stderr_tail": proc.stderr[-2000:]}


def table(results: list[dict]) -> str:
    """One row per arm: median wall and CPU time over repeats (min-max when repeated), quality of the first repeat."""
    arms = list(dict.fromkeys(r["arm"] for r in results))
    runs = {a: [r for r in results if r["arm"] == a] for a in arms}
    med = {a: (float(np.median([r["wall_s"] for r in runs[a]])), float(np.median([r["cpu_s"] for r in runs[a]])))
           for a in arms}
    lines = ["| arm | models | repeats | wall s total (median, min-max) | wall s / model | CPU s / model "
             "| speed-up (wall) | speed-up (CPU) | mean epochs | held-out MSE mean ± sd | Pearson r | load avg before→after |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for a in arms:
        r0, rs = runs[a][0], runs[a]
        n = r0["models"]
        walls = [r["wall_s"] for r in rs]
        spread = f" ({min(walls):.0f}-{max(walls):.0f})" if len(rs) > 1 else ""
        sw = f"{med['sequential'][0] / med[a][0]:.2f}x" if "sequential" in med else "-"
        sc = f"{med['sequential'][1] / med[a][1]:.2f}x" if "sequential" in med else "-"
        lines.append(
            f"| {a} | {n} | {len(rs)} | {med[a][0]:.0f}{spread} | {med[a][0] / n:.1f} | {med[a][1] / n:.1f} "
            f"| {sw} | {sc} | {r0['epochs_mean']:.0f} | {r0['mse_mean']:.4f} ± {r0['mse_sd']:.4f} | {r0['pearson_mean']:.3f} "
            f"| {min(r['load_before'][0] for r in rs):.1f}→{max(r['load_after'][0] for r in rs):.1f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arms", default="batched,sequential", help=f"comma-separated, from {', '.join(ARMS)}")
    ap.add_argument("--folds", type=int, default=10)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--threads", default="auto", help="torch intra-op threads for every arm ('auto' = the policy)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--max-group", type=int, default=None, help="largest stack of the batched arm")
    ap.add_argument("--repeats", type=int, default=1,
                    help="run the arms this many times, alternating their order (timings of a shared machine vary)")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config field (e.g. epochs=5 for a quick check; changes the protocol)")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--out", default="runs/bench_speed")
    ap.add_argument("--full-benchmark", default=None, metavar="ARGS",
                    help="also time `cortexflow benchmark ARGS --out OUT/full` (e.g. \"--datasets vangerven --methods all\")")
    args = ap.parse_args(argv)

    threads = configure_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ds = load_dataset("vangerven", args.data_dir)
    overrides = dict(s.split("=", 1) for s in args.sets)
    cfg = get_config("auto", dataset="vangerven", **overrides)
    tasks = _tasks(ds, args.folds, list(range(args.seeds)))
    meta = {"command": "python " + " ".join(shlex.quote(a) for a in sys.argv), "threads": threads,
            "device": str(resolve_device(args.device)), "torch": torch.__version__, "python": platform.python_version(),
            "cpu_count": os.cpu_count(), "machine": platform.processor() or platform.machine(),
            "config": cfg.to_dict(), "folds": args.folds, "seeds": args.seeds, "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    # warm-up (library initialisation, first allocations) so that no arm pays it
    warm_cfg = cfg.replace(epochs=1)
    CCCV1Decoder(config=warm_cfg, random_state=0, device=args.device).fit(ds.X_train[:20], ds.Y_train[:20])
    fit_many([ds.X_train[:20]] * 2, [ds.Y_train[:20]] * 2, [0, 1], config=warm_cfg, device=args.device)
    results = []
    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    for rep in range(max(1, args.repeats)):
        for arm in (arms if rep % 2 == 0 else arms[::-1]):
            print(f"[bench_speed] repeat {rep + 1}, {arm}: {len(tasks)} models ...", flush=True)
            res = run_arm(arm, ds, tasks, cfg, args.device, args.max_group)
            res["repeat"] = rep + 1
            results.append(res)
            print(f"[bench_speed] {arm}: {res['wall_s']:.1f} s wall, {res['cpu_s']:.1f} s CPU, "
                  f"MSE {res['mse_mean']:.4f}", flush=True)
            atomic_write_json(out / "speed.json", {"meta": meta, "results": results})
    report = {"meta": meta, "results": results}
    if args.full_benchmark is not None:
        print("[bench_speed] full benchmark ...", flush=True)
        report["full_benchmark"] = full_benchmark(out, args.full_benchmark)
    atomic_write_json(out / "speed.json", report)
    md = [f"Command: `{meta['command']}`", "",
          f"torch {meta['torch']}, {meta['device']}, {threads} intra-op thread(s), {meta['cpu_count']} cores; "
          f"vangerven, {args.folds}-fold x {args.seeds} seeds, config {cfg.pattern}, {max(1, args.repeats)} repeat(s)"
          + (f" with overrides {overrides}" if overrides else ""), "", table(results)]
    if "full_benchmark" in report:
        fb = report["full_benchmark"]
        md += ["", f"Full benchmark `{fb['command']}`: {fb['wall_s']:.0f} s wall (exit {fb['rc']}), "
                   f"load {fb['load_before'][0]:.1f}→{fb['load_after'][0]:.1f}"]
    atomic_write_text(out / "speed.md", "\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
