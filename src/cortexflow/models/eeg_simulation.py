"""End-to-end check of the EEG pathway on simulated EEG, with a shuffled-label control.

simulated EEG (:func:`cortexflow.data.eeg.simulate_evoked_eeg`) -> artefact
rejection, notch, band-pass, average reference, baseline, resampling
(:func:`cortexflow.data.eeg.preprocess_epochs`) -> stratified train/test split
-> rendered digit images as targets -> :class:`EEGDecoder` (EEG front-end +
CCCV1) -> two-way identification of the test trials' class images (chance 0.5).
With ``shuffle_labels=True`` the training targets are permuted, which must
leave the test score at chance.

Run from the command line (the numbers in ``docs/eeg.md`` come from this)::

    python -m cortexflow.models.eeg_simulation --frontends eegnet shallow flatten --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import numpy as np

from cortexflow.data.eeg import DIGIT_CLASSES, preprocess_epochs, simulate_evoked_eeg
from cortexflow.data.stimuli import class_images, targets_for_labels
from cortexflow.evaluation.metrics import two_way_identification
from cortexflow.models.eeg_estimator import EEGDecoder

__all__ = ["simulated_identification", "DEFAULT_SIMULATION", "main"]

#: Simulation settings of the documented runs (see ``simulate_evoked_eeg`` for their meaning).
DEFAULT_SIMULATION: dict[str, float] = {"evoked_uv": 40.0, "class_spread": 1.0}


def simulated_identification(
    frontend: str = "eegnet",
    *,
    n_classes: int = 10,
    n_per_class: int = 40,
    seed: int = 0,
    shuffle_labels: bool = False,
    new_sfreq: float | None = 64.0,
    reject_uv: float = 150.0,
    test_fraction: float = 0.25,
    config: Any = "auto",
    frontend_params: dict | None = None,
    device: str = "cpu",
    simulation: dict | None = None,
) -> dict[str, Any]:
    """Train on simulated EEG and score two-way identification of held-out trials.

    Parameters
    ----------
    frontend : str
        EEG front-end of the decoder.
    n_classes, n_per_class : int
        Digit classes ``0..n_classes-1`` and trials per class.
    seed : int
        Seeds the simulation, the split, the label shuffle and the decoder.
    shuffle_labels : bool
        Permute the training trials' targets (the chance-level control).
    new_sfreq : float or None
        Resampling rate after filtering (None keeps 128 Hz).
    reject_uv : float
        Peak-to-peak rejection threshold in microvolts.
    test_fraction : float
        Share of trials held out (stratified by class).
    config, frontend_params, device :
        Passed to :class:`EEGDecoder`.
    simulation : dict, optional
        Overrides of :data:`DEFAULT_SIMULATION` / ``simulate_evoked_eeg`` arguments.

    Returns
    -------
    dict
        ``two_way`` (mean over test trials), ``class_accuracy`` (nearest class
        image by correlation; chance 1/n_classes), counts, SNR, seconds and
        the settings.
    """
    from sklearn.model_selection import train_test_split

    t0 = time.perf_counter()
    sim = {**DEFAULT_SIMULATION, **(simulation or {})}
    names = DIGIT_CLASSES[:n_classes]
    ep = simulate_evoked_eeg(n_per_class=n_per_class, class_names=names, seed=seed, **sim)
    X, keep, rep = preprocess_epochs(
        ep.data, ep.sfreq, l_freq=1.0, h_freq=40.0, notch=50.0, reference="average", baseline="epoch",
        new_sfreq=new_sfreq, reject_ptp=reject_uv, ch_names=ep.ch_names,
    )
    labels = ep.labels[keep]
    tr, te = train_test_split(np.arange(len(X)), test_size=test_fraction, random_state=seed, stratify=labels)
    images = class_images(names)
    y_train = labels[tr]
    if shuffle_labels:
        y_train = np.random.default_rng(seed + 10_000).permutation(y_train)
    dec = EEGDecoder(frontend=frontend, frontend_params=frontend_params, sfreq=rep.sfreq, config=config,
                     random_state=seed, device=device)
    dec.fit(X[tr], targets_for_labels(y_train, images))
    pred = dec.predict(X[te])
    true = targets_for_labels(labels[te], images)
    two_way = two_way_identification(true=true, pred=pred)
    p = pred.reshape(len(pred), -1)
    p = (p - p.mean(1, keepdims=True)) / (p.std(1, keepdims=True) + 1e-12)
    q = images.reshape(len(images), -1)
    q = (q - q.mean(1, keepdims=True)) / (q.std(1, keepdims=True) + 1e-12)
    acc = float(np.mean((p @ q.T).argmax(1) == labels[te]))
    return {
        "frontend": frontend,
        "seed": seed,
        "shuffle_labels": shuffle_labels,
        "two_way": float(np.mean(two_way)),
        "class_accuracy": acc,
        "chance_two_way": 0.5,
        "chance_accuracy": 1.0 / n_classes,
        "n_train": int(len(tr)),
        "n_test": int(len(te)),
        "n_rejected": int(rep.rejection.n_rejected) if rep.rejection else 0,
        "snr_rms": float(ep.metadata["snr_rms"]),
        "sfreq": rep.sfreq,
        "config": dec.config_.to_dict(),
        "best_epoch": int(dec.train_result_.best_epoch),
        "stopped_epoch": int(dec.train_result_.stopped_epoch),
        "seconds": time.perf_counter() - t0,
        "simulation": {"n_classes": n_classes, "n_per_class": n_per_class, **sim},
    }


def main(argv: list[str] | None = None) -> int:
    """Command line: run several front-ends and seeds, with and without shuffled labels."""
    ap = argparse.ArgumentParser(prog="python -m cortexflow.models.eeg_simulation", description=__doc__.split("\n")[0])
    ap.add_argument("--frontends", nargs="+", default=["eegnet", "shallow", "flatten"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--n-classes", type=int, default=10)
    ap.add_argument("--n-per-class", type=int, default=40)
    ap.add_argument("--config", default="auto", help="'auto', a preset name, or a JSON dict of CCCV1Config fields")
    ap.add_argument("--no-shuffled", action="store_true", help="skip the shuffled-label control")
    ap.add_argument("--out", default=None, help="write all results as JSON here")
    args = ap.parse_args(argv)
    config = json.loads(args.config) if args.config.startswith("{") else args.config
    rows = []
    for fe in args.frontends:
        for shuffle in ([False] if args.no_shuffled else [False, True]):
            for seed in args.seeds:
                r = simulated_identification(fe, n_classes=args.n_classes, n_per_class=args.n_per_class, seed=seed,
                                             shuffle_labels=shuffle, config=config)
                rows.append(r)
                print(f"{fe:8s} shuffled={shuffle!s:5s} seed={seed} two_way={r['two_way']:.3f} "
                      f"acc={r['class_accuracy']:.3f} n_test={r['n_test']} {r['seconds']:.0f}s", flush=True)
    print("\nfrontend  labels    two-way mean ± sd   class acc mean ± sd   (seeds " + " ".join(map(str, args.seeds)) + ")")
    for fe in args.frontends:
        for shuffle in ([False] if args.no_shuffled else [False, True]):
            sel = [r for r in rows if r["frontend"] == fe and r["shuffle_labels"] == shuffle]
            tw = np.array([r["two_way"] for r in sel])
            ac = np.array([r["class_accuracy"] for r in sel])
            sd = (lambda a: a.std(ddof=1) if len(a) > 1 else 0.0)
            print(f"{fe:8s}  {'shuffled' if shuffle else 'true':8s}  {tw.mean():.3f} ± {sd(tw):.3f}       "
                  f"{ac.mean():.3f} ± {sd(ac):.3f}")
    if args.out:
        from cortexflow.utils.io import atomic_write_json

        atomic_write_json(args.out, rows)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
