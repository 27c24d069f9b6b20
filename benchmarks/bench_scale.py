"""NSD-size scale benchmark: ridge and ridge-prior on a simulated data set read through a spec file.

Not a test (it takes minutes at full size); see docs/scale.md, "NSD-size data".

What it does
    1. Generates a data set of NSD size from a known linear model (fixed seeds): ``n_images = trials /
       repeats`` smooth random images of ``side x side`` pixels in [0, 1]; each trial shows one image
       (trial i shows image i mod n_images, so every image is shown ``repeats`` times); its signal is
       ``(image - 0.5) . P / sqrt(side^2) + noise * N(0, 1)`` with ``P`` a fixed Gaussian random
       projection (side^2 x features). It writes ``OUT/data/signals.npy`` (float32, written block by
       block through a memory map), ``stimuli.npy``, ``trials.tsv`` (trial, image, split: the last
       ``--test-images`` images' trials are ``test``) and the spec ``OUT/data/nsd_sim.toml``.
    2. Runs every method in its own fresh child process, phase after phase: ``load``
       (``load_dataset(spec)``: the .npy signals are memory-mapped), ``fit`` (on the official
       training rows) and ``predict`` (the test rows). For each phase it records wall time, CPU time
       (user + system of the child), the peak RSS of the child up to the end of that phase
       (``resource.getrusage(RUSAGE_SELF).ru_maxrss``: a high-water mark, so the fit's value includes
       what the load holds) and the resident anonymous and file-backed memory at the end of the phase
       (``RssAnon`` / ``RssFile`` of /proc/self/status: memory-mapped signal pages are file-backed).
    3. Scores the reconstructions against the generating images: mean Pearson r per test trial and
       of the mean of each test image's repeats.

Results go to ``OUT/bench_scale.json`` and ``OUT/bench_scale.md``.

    python benchmarks/bench_scale.py --out runs/scale                                  # full size
    python benchmarks/bench_scale.py --out /tmp/scale --trials 3000 --features 1600    # small check

Timings are only meaningful on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing as mp
import os
import platform
import queue
import resource
import sys
import time
from pathlib import Path

import numpy as np

logger = logging.getLogger("bench_scale")

SPEC_NAME = "nsd_sim.toml"


# ------------------------------------------------------------------ data
def _smooth_images(rng: np.random.Generator, n: int, side: int) -> np.ndarray:
    """``n`` smooth random images in [0, 1] (Gaussian low-pass filtered white noise through a sigmoid)."""
    f = np.fft.fftfreq(side)
    gain = np.exp(-(f[:, None] ** 2 + f[None, :] ** 2) / (2 * 0.06 ** 2))
    noise = rng.standard_normal((n, side, side))
    field = np.fft.ifft2(np.fft.fft2(noise) * gain).real
    field /= field.std(axis=(1, 2), keepdims=True) + 1e-12
    return (1.0 / (1.0 + np.exp(-2.0 * field))).astype(np.float32)


def generate(out: Path, trials: int, features: int, side: int, repeats: int, test_images: int,
             noise: float, seed: int) -> dict:
    """Write the simulated data set and its spec into ``out``; return its facts."""
    if trials % repeats:
        raise SystemExit(f"--trials {trials} must be a multiple of --repeats {repeats}")
    n_images = trials // repeats
    if not 0 < test_images < n_images:
        raise SystemExit(f"--test-images {test_images} must be in 1..{n_images - 1}")
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    images = np.concatenate([_smooth_images(rng, min(1000, n_images - i), side) for i in range(0, n_images, 1000)])
    np.save(out / "stimuli.npy", images)
    P = (np.random.default_rng(seed + 1).standard_normal((side * side, features)) / side).astype(np.float32)
    X = np.lib.format.open_memmap(out / "signals.npy", mode="w+", dtype=np.float32, shape=(trials, features))
    noise_rng = np.random.default_rng(seed + 2)
    step = max(1, 2**22 // features)
    image_of = np.arange(trials) % n_images
    for i in range(0, trials, step):
        rows = image_of[i:i + step]
        block = (images[rows].reshape(len(rows), -1) - 0.5) @ P
        block += noise * noise_rng.standard_normal(block.shape, dtype=np.float32)
        X[i:i + step] = block
    X.flush()
    del X
    test = image_of >= n_images - test_images
    with open(out / "trials.tsv", "w", encoding="utf-8") as fh:
        fh.write("trial\timage\tsplit\n")
        for i in range(trials):
            fh.write(f"t{i}\t{image_of[i]}\t{'test' if test[i] else 'train'}\n")
    (out / SPEC_NAME).write_text(
        'name = "nsd_sim"\nmodality = "fmri"\n\n[signals]\npath = "signals.npy"\n\n'
        f'[stimuli]\npath = "stimuli.npy"\nsize = [{side}, {side}]\ncolor = "grayscale"\nscale = 1.0\n\n'
        '[trials]\ntable = "trials.tsv"\nid = "trial"\nstimulus = "image"\nsplit = "split"\n', encoding="utf-8")
    return {"trials": trials, "features": features, "side": side, "repeats": repeats, "images": n_images,
            "test_images": test_images, "train_trials": int((~test).sum()), "test_trials": int(test.sum()),
            "noise": noise, "seed": seed, "signals_bytes": trials * features * 4}


# ----------------------------------------------------------- measuring
def _status_kb(field: str) -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return -1


class _Phases:
    """Wall time, CPU time and memory of consecutive phases of one process."""

    def __init__(self):
        self.rows: list[dict] = []

    def run(self, name: str, fn, *args, **kwargs):
        r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        value = fn(*args, **kwargs)
        r1, t1 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        self.rows.append({
            "phase": name, "wall_s": t1 - t0,
            "cpu_s": (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime),
            "peak_rss_mb": r1.ru_maxrss / 1024,  # kilobytes on Linux
            "rss_anon_mb_end": _status_kb("RssAnon") / 1024, "rss_file_mb_end": _status_kb("RssFile") / 1024,
        })
        return value


def _correlations(pred: np.ndarray, truth: np.ndarray, image_ids: np.ndarray) -> dict:
    def rowwise(a, b):
        a = a.reshape(len(a), -1).astype(np.float64)
        b = b.reshape(len(b), -1).astype(np.float64)
        a = a - a.mean(axis=1, keepdims=True)
        b = b - b.mean(axis=1, keepdims=True)
        return (a * b).sum(axis=1) / np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1) + 1e-300)

    ids = np.unique(image_ids)
    mean_pred = np.stack([pred[image_ids == i].mean(axis=0) for i in ids])
    first = np.stack([truth[np.flatnonzero(image_ids == i)[0]] for i in ids])
    return {"r_per_trial": float(rowwise(pred, truth).mean()),
            "r_mean_of_repeats": float(rowwise(mean_pred, first).mean())}


def _child(method: str, spec: str, opts: dict, queue) -> None:
    """One method in a fresh process: load, fit, predict; results into ``queue``."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("cortexflow.baselines._common").setLevel(logging.INFO)  # the lean solver's phase times
    out: dict = {"method": method}
    try:
        if opts.get("lean_threshold") is not None:
            from cortexflow.baselines import _common

            _common.LEAN_MIN_ELEMENTS = int(opts["lean_threshold"])
        from cortexflow.data.loading import load_dataset

        ph = _Phases()
        ds = ph.run("load", load_dataset, spec)
        out["x_train_is_memmap"] = isinstance(ds.X_train, np.memmap)
        if method == "ridge":
            from cortexflow.baselines.ridge import RidgeDecoder

            est = RidgeDecoder()
        elif method == "ridge-prior":
            from cortexflow.priors.ridge_prior import RidgePriorDecoder

            stimuli = np.concatenate([ds.Y_train, ds.Y_test])
            from cortexflow.methods.build import with_prior

            est = RidgePriorDecoder(prior=opts["prior"], prior_epochs=opts["prior_epochs"],
                                    stimuli=np.unique(stimuli, axis=0))
            ph.run("prior", with_prior, est)  # trains the prior (or reads it from the cache): outside fit
        else:
            raise ValueError(f"unknown method {method!r}; allowed: ridge, ridge-prior")
        ph.run("fit", est.fit, ds.X_train, ds.Y_train)
        pred = ph.run("predict", est.predict, ds.X_test)
        out["alpha"] = float(getattr(est, "alpha_", float("nan")))
        out["solver"] = getattr(getattr(est, "ridge_", None), "lean_path_", "sklearn RidgeCV")
        # the generating image of every test trial: trial i shows image i mod n_images
        out.update(_correlations(pred, ds.Y_test, np.asarray(ds.metadata["test_rows"]) % opts["n_images"]))
        out["phases"] = ph.rows
    except Exception as exc:  # noqa: BLE001 - reported, the other methods still run
        out["error"] = f"{type(exc).__name__}: {exc}"
        out["phases"] = locals().get("ph", _Phases()).rows
    queue.put(out)


def run_method(method: str, spec: Path, opts: dict, n_images: int) -> dict:
    ctx = mp.get_context("spawn")  # a fresh interpreter: nothing inherited from the parent's memory
    q = ctx.Queue()
    p = ctx.Process(target=_child, args=(method, str(spec), dict(opts, n_images=n_images), q))
    p.start()
    while True:
        try:
            res = q.get(timeout=5)
            break
        except queue.Empty:
            if not p.is_alive():  # died without a result (for example killed for memory)
                res = {"method": method, "phases": [],
                       "error": f"the child process exited with code {p.exitcode} before reporting"}
                break
    p.join()
    return res


# ------------------------------------------------------------------ main
def _markdown(res: dict) -> str:
    d = res["data"]
    lines = [f"# bench_scale: {d['trials']} trials x {d['features']} features, {d['side']}x{d['side']} stimuli, "
             f"{d['repeats']} repeats ({d['images']} images, {d['test_images']} test images)", "",
             f"machine: {res['machine']}; load average before {res['loadavg_before']}, after {res['loadavg_after']}",
             "", "| method | phase | wall s | CPU s | peak RSS MB (so far) | RssAnon MB at end | RssFile MB at end |",
             "|---|---|---|---|---|---|---|"]
    for m in res["methods"]:
        for r in m["phases"]:
            lines.append(f"| {m['method']} | {r['phase']} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} | "
                         f"{r['peak_rss_mb']:.0f} | {r['rss_anon_mb_end']:.0f} | {r['rss_file_mb_end']:.0f} |")
    lines += ["", "| method | solver | alpha | r per test trial | r of the mean of repeats | error |", "|---|---|---|---|---|---|"]
    for m in res["methods"]:
        lines.append(f"| {m['method']} | {m.get('solver', '')} | {m.get('alpha', float('nan')):.3g} | "
                     f"{m.get('r_per_trial', float('nan')):.3f} | {m.get('r_mean_of_repeats', float('nan')):.3f} | "
                     f"{m.get('error', '')} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, type=Path, help="output folder (data in OUT/data)")
    ap.add_argument("--trials", type=int, default=30_000)
    ap.add_argument("--features", type=int, default=16_000)
    ap.add_argument("--side", type=int, default=64, help="stimulus height and width in pixels")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--test-images", type=int, default=None, help="default: the last tenth of the images")
    ap.add_argument("--noise", type=float, default=1.0, help="sd of the signal noise (signal sd is about 0.3)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--methods", default="ridge,ridge-prior")
    ap.add_argument("--prior", default="mnist-t10k", help="corpus of ridge-prior's image prior")
    ap.add_argument("--prior-epochs", type=int, default=None, help="ridge-prior's prior_epochs (default: its own)")
    ap.add_argument("--lean-threshold", type=int, default=None,
                    help="override LEAN_MIN_ELEMENTS (e.g. 0: force the lean ridge path in a small run)")
    ap.add_argument("--reuse-data", action="store_true", help="keep OUT/data if it holds a data set already")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    os.environ.setdefault("CORTEXFLOW_CACHE", str(args.out / "cache"))
    n_images = args.trials // args.repeats
    test_images = args.test_images or max(1, n_images // 10)
    data_dir = args.out / "data"
    facts_file = data_dir / "facts.json"
    t0 = time.perf_counter()
    if args.reuse_data and facts_file.is_file():
        facts = json.loads(facts_file.read_text())
    else:
        facts = generate(data_dir, args.trials, args.features, args.side, args.repeats, test_images, args.noise,
                         args.seed)
        facts_file.write_text(json.dumps(facts))
    facts["generate_s"] = time.perf_counter() - t0
    logger.info("data set in %s (%.1f s)", data_dir, facts["generate_s"])
    res = {"data": facts, "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
                                     f"Python {sys.version.split()[0]}",
           "loadavg_before": [round(v, 2) for v in os.getloadavg()], "methods": []}
    opts = {"prior": args.prior, "prior_epochs": args.prior_epochs, "lean_threshold": args.lean_threshold}
    res["lean_threshold"] = args.lean_threshold
    for method in [m.strip() for m in args.methods.split(",") if m.strip()]:
        logger.info("running %s", method)
        r = run_method(method, data_dir / SPEC_NAME, opts, facts["images"])
        logger.info("%s: %s", method, json.dumps(r))
        res["methods"].append(r)
    res["loadavg_after"] = [round(v, 2) for v in os.getloadavg()]
    (args.out / "bench_scale.json").write_text(json.dumps(res, indent=2))
    (args.out / "bench_scale.md").write_text(_markdown(res))
    print(_markdown(res))
    return 0 if all("error" not in m for m in res["methods"]) else 1


if __name__ == "__main__":
    sys.exit(main())
