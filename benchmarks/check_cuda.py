#!/usr/bin/env python
"""CUDA check of CCCV1 training (a script for a machine with a GPU, not a test).

Trains cccv1 on the official vangerven split with the ``vangerven`` preset for
a few seeds

* on the CPU (the reference),
* on CUDA in fp32 (the standard trainer),
* on CUDA with deterministic algorithms, twice (the two runs must agree bit for bit),
* on CUDA with mixed precision (bf16, and fp16 with a gradient scaler),
* on CUDA with the batched trainer, fp32 and bf16 autocast,

and writes the held-out test metrics of every run (MSE, Pearson r, SSIM) and
their mean and spread over seeds to ``OUT/cuda_check.json``. The same seed
cannot give the same model on the two devices (dropout masks come from
different generators), so CPU and CUDA agree only statistically: the script
reports the difference of the seed means and the seed-to-seed spread on
each device.

Example::

    CORTEXFLOW_DATA=../shared/datasets python benchmarks/check_cuda.py --seeds 3 --out runs/cuda_check
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from cortexflow.data import load_dataset
from cortexflow.evaluation.metrics import mse_per_image, pearson_per_image, ssim_per_image
from cortexflow.models.estimator import CCCV1Decoder
from cortexflow.training.batched import fit_many
from cortexflow.training.config import get_config
from cortexflow.training.devices import configure_threads, set_deterministic
from cortexflow.utils.io import atomic_write_json


def _metrics(pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
    return {"mse": float(mse_per_image(pred=pred, true=true).mean()), "pearson": float(np.nanmean(pearson_per_image(pred=pred, true=true))),
            "ssim": float(ssim_per_image(pred=pred, true=true).mean())}


def _summary(runs: list[dict]) -> dict[str, list[float]]:
    """[mean, sd] over seeds of each metric and of the fit time."""
    out = {}
    for k in ("mse", "pearson", "ssim", "fit_s"):
        v = np.array([r[k] for r in runs])
        out[k] = [float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0]
    return out


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="vangerven")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--threads", default="auto", help="CPU intra-op threads of the CPU reference")
    ap.add_argument("--out", default="runs/cuda_check")
    ap.add_argument("--device", default="cuda", help="the accelerator to check ('cpu' only for a dry run of the script)")
    ap.add_argument("--epochs", type=int, default=None, help="override the preset's epochs (dry runs only)")
    args = ap.parse_args(argv)
    gpu = args.device
    if gpu.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("check_cuda.py needs a CUDA device; torch.cuda.is_available() is False")
    configure_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ds = load_dataset(args.dataset, args.data_dir)
    cfg = get_config("auto", dataset=args.dataset)
    if args.epochs is not None:
        cfg = cfg.replace(epochs=args.epochs)
    seeds = list(range(args.seeds))
    report: dict = {"meta": {"command": "python " + " ".join(sys.argv), "torch": torch.__version__,
                             "cuda": torch.version.cuda,
                             "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
                             "python": platform.python_version(), "cpu_threads": torch.get_num_threads(),
                             "dataset": args.dataset, "split": "official", "config": cfg.to_dict(), "seeds": seeds},
                    "runs": {}}

    def record(name: str, runs: list[dict]) -> None:
        report["runs"][name] = {"per_seed": runs, "mean_sd": _summary(runs)}
        s = report["runs"][name]["mean_sd"]
        print(f"[check_cuda] {name:>22}: MSE {s['mse'][0]:.4f} ± {s['mse'][1]:.4f}  r {s['pearson'][0]:.3f} ± "
              f"{s['pearson'][1]:.3f}  SSIM {s['ssim'][0]:.3f} ± {s['ssim'][1]:.3f}  fit {s['fit_s'][0]:.1f} s/model",
              flush=True)
        atomic_write_json(out / "cuda_check.json", report)

    def single(device: str, seed: int, amp: str = "off") -> tuple[dict, np.ndarray]:
        _sync(device)
        t0 = time.perf_counter()
        dec = CCCV1Decoder(config=cfg, dataset=args.dataset, random_state=seed, device=device,
                           amp=amp).fit(ds.X_train, ds.Y_train)
        _sync(device)
        fit_s = time.perf_counter() - t0
        pred = dec.predict(ds.X_test)
        res = _metrics(pred, ds.Y_test)
        res.update(seed=seed, fit_s=fit_s, best_epoch=int(dec.train_result_.best_epoch),
                   stopped_epoch=int(dec.train_result_.stopped_epoch))
        return res, pred

    # warm-up: CUDA context, cuBLAS handles, first allocations
    CCCV1Decoder(config=cfg.replace(epochs=1), random_state=0, device=gpu).fit(ds.X_train[:20], ds.Y_train[:20])

    record("cpu_fp32", [single("cpu", s)[0] for s in seeds])
    record("cuda_fp32", [single(gpu, s)[0] for s in seeds])

    set_deterministic(True)
    det_a, det_b, same = [], [], []
    for s in seeds:
        ra, pa = single(gpu, s)
        rb, pb = single(gpu, s)
        det_a.append(ra)
        det_b.append(rb)
        same.append(bool(np.array_equal(pa, pb)))
    set_deterministic(False)
    record("cuda_deterministic", det_a)
    report["deterministic_repeat_identical"] = same
    print(f"[check_cuda] deterministic repeat gives identical predictions per seed: {same}", flush=True)

    for amp in ("bf16", "fp16") if gpu.startswith("cuda") else ("bf16",):
        record(f"cuda_amp_{amp}", [single(gpu, s, amp)[0] for s in seeds])

    for amp in ("off", "bf16"):
        _sync(gpu)
        t0 = time.perf_counter()
        decs = fit_many([ds.X_train] * len(seeds), [ds.Y_train] * len(seeds), seeds, config=cfg,
                        dataset=args.dataset, device=gpu, amp=amp)
        _sync(gpu)
        total = time.perf_counter() - t0
        runs = []
        for s, dec in zip(seeds, decs):
            res = _metrics(dec.predict(ds.X_test), ds.Y_test)
            res.update(seed=s, fit_s=total / len(seeds), best_epoch=int(dec.train_result_.best_epoch),
                       stopped_epoch=int(dec.train_result_.stopped_epoch))
            runs.append(res)
        record(f"cuda_batched_{amp}", runs)

    cpu = report["runs"]["cpu_fp32"]["mean_sd"]
    agree = {}
    for name, r in report["runs"].items():
        if name == "cpu_fp32":
            continue
        m = r["mean_sd"]
        agree[name] = {k: {"diff_of_means": m[k][0] - cpu[k][0],
                           "pooled_sd": float(np.sqrt((m[k][1] ** 2 + cpu[k][1] ** 2) / 2))}
                       for k in ("mse", "pearson", "ssim")}
    report["agreement_vs_cpu"] = agree
    atomic_write_json(out / "cuda_check.json", report)
    print(json.dumps(agree, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
