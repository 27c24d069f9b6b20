"""Select an image-prior recipe for ridge-prior on vangerven by 10-fold CV of the training rows.

Usage::

    python benchmarks/prior_research.py --out runs/prior_research.jsonl \
        --config ae512:kind=ae,embed_dim=512,epochs=8 --config ae32:kind=ae,embed_dim=32,epochs=8 \
        [--fine-tune 0,30] [--residual-scales 0,auto] [--knn 10,20] [--official ae32] [--threads 1]

Each config trains (or reads from the cache) a prior on mnist-t10k with the
vangerven stimuli guarded out, then runs ridge-prior in 10-fold CV of the 90
official training rows (KFold, shuffled, seed 0; the official test rows are
never used) and pools the 90 out-of-fold reconstructions into one evaluation.
Only the configs named by ``--official`` (chosen from the CV numbers) are
scored once on the official test split. One JSON line per (config,
fine-tuning, split) goes to ``--out``; pixel ridge is run as a reference.
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import numpy as np
import torch
from sklearn.model_selection import KFold

from cortexflow import load_dataset
from cortexflow.methods.build import scored_stimuli, with_prior
from cortexflow.baselines.ridge import RidgeDecoder
from cortexflow.evaluation import evaluate_reconstructions, summarize
from cortexflow.priors import PriorConfig, dataset_stimuli, get_prior
from cortexflow.priors.ridge_prior import RidgePriorDecoder


def _parse(spec: str) -> tuple[str, dict]:
    name, _, body = spec.partition(":")
    out: dict = {}
    for item in filter(None, body.split(",")):
        k, v = item.split("=")
        out[k] = v if k == "kind" else (float(v) if "." in v or "e-" in v else int(v))
    return name, out


def _cv(make, X, Y, folds: int = 10) -> dict:
    pred = np.zeros_like(Y)
    for tr, te in KFold(folds, shuffle=True, random_state=0).split(X):
        pred[te] = make().fit(X[tr], Y[tr]).predict(X[te])
    return summarize(evaluate_reconstructions(true=Y, pred=pred))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", action="append", required=True)
    ap.add_argument("--fine-tune", default="0")
    ap.add_argument("--residual-scales", default="auto", help="comma list of residual_scale values (numbers or auto)")
    ap.add_argument("--knn", default="", help="comma list of k for decoding='corpus-knn' runs (after the prior ones)")
    ap.add_argument("--decoding", default="prior", help="decoding of the residual-scale runs (prior, hybrid)")
    ap.add_argument("--official", default="")
    ap.add_argument("--out", required=True)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-baseline", action="store_true")
    ap.add_argument("--official-only", action="store_true", help="skip the CV (its numbers were written before)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    ds = load_dataset("vangerven")
    stim = dataset_stimuli("vangerven")
    official = set(filter(None, args.official.split(",")))

    def emit(rec: dict) -> None:
        print(json.dumps(rec), flush=True)
        with open(args.out, "a") as fh:
            fh.write(json.dumps(rec) + "\n")

    if not args.no_baseline:
        emit({"config": "pixel-ridge", "split": "cv10", **_cv(lambda: RidgeDecoder(), ds.X_train, ds.Y_train)})
    for spec in args.config:
        name, fields = _parse(spec)
        cfg = PriorConfig(**fields)
        t0 = time.perf_counter()
        prior = get_prior("mnist-t10k", exclude=stim, config=cfg)
        wall = time.perf_counter() - t0
        base = {"config": name, "prior": cfg.to_dict(), "prior_wall_s": round(wall, 1),
                "prior_train_s": prior.info["train_time_s"], "prior_recon_mse": prior.info["recon_mse"],
                "n_dropped": prior.info["n_dropped"], "from_cache": prior.info["from_cache"],
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
        scales = [v if v == "auto" else float(v) for v in args.residual_scales.split(",")]
        scales += [f"knn{k}" for k in filter(None, args.knn.split(","))]
        for ft in [int(v) for v in args.fine_tune.split(",")]:
            for rs in scales:
                def make(ft=ft, rs=rs):
                    knn = ({"decoding": "corpus-knn", "knn": int(rs[3:])} if str(rs).startswith("knn")
                           else {"decoding": args.decoding})
                    return with_prior(RidgePriorDecoder(
                        prior="mnist-t10k", dataset="vangerven", prior_config=cfg, fine_tune_epochs=ft,
                        residual_scale=0.0 if str(rs).startswith("knn") else rs, **knn), scored_stimuli(ds))
                t1 = time.perf_counter()
                if not args.official_only:
                    emit({**base, "fine_tune": ft, "residual_scale": rs, "decoding": make().decoding, "split": "cv10",
                          **_cv(make, ds.X_train, ds.Y_train), "cv_s": round(time.perf_counter() - t1, 1)})
                if name in official:
                    t1 = time.perf_counter()
                    est = make().fit(ds.X_train, ds.Y_train)
                    emit({**base, "fine_tune": ft, "residual_scale": rs, "chosen_scale": est.residual_scale_,
                          "decoding": est.decoding, "split": "official", "alpha": est.alpha_, "fit_s": round(time.perf_counter() - t1, 1),
                          **summarize(evaluate_reconstructions(true=ds.Y_test, pred=est.predict(ds.X_test)))})


if __name__ == "__main__":
    main()
