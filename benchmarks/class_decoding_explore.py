"""Explore decoding variants of ``ridge-prior`` on vangerven's 10-fold CV of the training rows (issue 19, item 2).

    python benchmarks/class_decoding_explore.py [--seed 0]

Same folds as ``cortexflow benchmark --split kfold --folds 10 --split-seed 0``
(only the 90 official training rows). For each fold one
:class:`RidgePriorDecoder` with ``class_decoding="knn"`` is fitted (the same
prior as the benchmark, from the cache) and several decodings of the held-out
rows are formed from its parts; the 90 out-of-fold images of each variant are
scored together. The official test rows are never loaded into a fit or scored.
"""

from __future__ import annotations

import argparse
import logging

import numpy as np

from cortexflow.data.loading import load_dataset
from cortexflow.data.splits import split_data
from cortexflow.evaluation.metrics import evaluate_reconstructions
from cortexflow.methods.build import make_estimator, scored_stimuli

COLUMNS = ("mse", "pearson", "ssim", "two_way")


def variants(est, Xte) -> dict[str, np.ndarray]:
    A = est.scaler_.transform(Xte).astype(np.float64)
    Z = np.atleast_2d(est.ridge_.predict(A))
    Zn = Z / np.linalg.norm(Z, axis=1, keepdims=True)
    P = est._class_proba(A)
    rng = np.random.default_rng(est._seed())
    prior_img = est._decode_mean(Z, est.residual_scale_, rng)
    cmap = {1: 6, 2: 9}
    E, I, L = est.corpus_embeddings_, est.corpus_images_, est.corpus_labels_
    out = {}
    for k in (5, 10, 20, 40):
        est.knn = k
        full = est._knn_mean(Zn, E, I)
        pool = np.isin(L, list(cmap.values()))
        pooled = est._knn_mean(Zn, E[pool], I[pool])
        soft = sum(P[:, j, None, None] * est._knn_mean(Zn, E[L == cmap[int(c)]], I[L == cmap[int(c)]])
                   for j, c in enumerate(est.class_labels_))
        for w in (0.25, 0.5, 0.75, 1.0):
            out[f"k{k} w{w} all"] = (1 - w) * prior_img + w * full
            out[f"k{k} w{w} pool69"] = (1 - w) * prior_img + w * pooled
            out[f"k{k} w{w} class-soft"] = (1 - w) * prior_img + w * soft
        est.knn = 10
    out["prior only"] = prior_img
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--C", default="auto")
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)
    ds = load_dataset("vangerven")
    preds: dict[str, np.ndarray] = {}
    for fold in range(10):
        Xtr, Ytr, Xte, Yte, te = split_data(ds, "kfold", fold, 10, 0)
        est = make_estimator("ridge-prior-class", args.seed, "vangerven", len(Xtr), stimuli=scored_stimuli(ds),
                             class_C=args.C if args.C == "auto" else float(args.C))
        est.fit(Xtr, Ytr)
        for name, img in variants(est, Xte).items():
            preds.setdefault(name, np.zeros_like(ds.Y_train))[te] = np.clip(img, 0, 1)
        print(f"fold {fold}: class C {est.class_C_}, oof acc {est.class_cv_accuracy_:.3f}", flush=True)
    rows = []
    for name, P in preds.items():
        s = evaluate_reconstructions(true=ds.Y_train, pred=P, metrics=list(COLUMNS))
        rows.append((name, *[float(np.mean(s[c])) for c in COLUMNS]))
    print("| variant | " + " | ".join(COLUMNS) + " |\n|---|---|---|---|---|")
    for r in sorted(rows, key=lambda r: r[1]):
        print(f"| {r[0]} | " + " | ".join(f"{v:.4f}" for v in r[1:]) + " |")


if __name__ == "__main__":
    main()
