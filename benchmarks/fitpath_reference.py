"""Record (or compare) predictions of every trained decoder on vangerven's official split.

Used to check that a refactor of the fit path changes no number:

    python benchmarks/fitpath_reference.py save /tmp/h4_ref      # before
    python benchmarks/fitpath_reference.py compare /tmp/h4_ref   # after: max |diff| per output

Small epoch counts keep it to a few minutes on one CPU thread.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import torch

from cortexflow.baselines.brain_diffuser_lite import BrainDiffuserLite
from cortexflow.baselines.mindvis_lite import MindVisLite
from cortexflow.baselines.ridge import RidgeDecoder
from cortexflow.data.loading import load_dataset
from cortexflow.models.estimator import CCCV1Decoder
from cortexflow.training.batched import fit_many
from cortexflow.training.config import get_config


def outputs() -> dict[str, np.ndarray]:
    ds = load_dataset("vangerven", os.environ["CORTEXFLOW_DATA"])
    X, Y, Xt = ds.X_train, ds.Y_train, ds.X_test
    out: dict[str, np.ndarray] = {}
    cfg = get_config("vangerven").replace(epochs=25)
    for seed in (0, 1):
        out[f"cccv1_seed{seed}"] = CCCV1Decoder(cfg, random_state=seed, device="cpu").fit(X, Y).predict(Xt)
    parts = [slice(0, 60), slice(10, 80), slice(0, len(X))]
    decs = fit_many([X[p] for p in parts], [Y[p] for p in parts], [0, 1, 2], config=cfg, device="cpu")
    for i, d in enumerate(decs):
        out[f"fit_many_member{i}"] = d.predict(Xt)
    out["ridge"] = RidgeDecoder().fit(X, Y).predict(Xt)
    out["brain_diffuser_lite"] = BrainDiffuserLite(vae_epochs=15, denoiser_epochs=15, random_state=3).fit(X, Y).predict(Xt)
    out["mindvis_lite"] = MindVisLite(pretrain_epochs=8, fine_tune_epochs=8, random_state=4).fit(X, Y).predict(Xt)
    if os.environ.get("FITPATH_PRIORS", "1") != "0":
        out.update(prior_outputs(ds))
    # the global RNG must not matter: a draw here shows whether fit consumed it
    out["global_rng_after"] = torch.rand(4).numpy()
    return out


def prior_outputs(ds) -> dict[str, np.ndarray]:
    """ridge-prior and cccv1-prior with a small mnist-t10k prior, guarded against every vangerven stimulus, and
    the EEG front-ends on simulated epochs (skip with FITPATH_PRIORS=0)."""
    from cortexflow.priors import PriorConfig, get_prior
    from cortexflow.priors.cccv1_prior import CCCV1PriorDecoder
    from cortexflow.priors.ridge_prior import RidgePriorDecoder
    from cortexflow.models.eeg_estimator import EEGDecoder

    X, Y, Xt = ds.X_train, ds.Y_train, ds.X_test
    stim = np.concatenate([ds.Y_train, ds.Y_test]).astype(np.float32)
    cfg = PriorConfig(embed_dim=16, epochs=1, max_images=2000)
    prior = get_prior("mnist-t10k", exclude=stim, config=cfg, data_dir=os.environ["CORTEXFLOW_DATA"])
    from cortexflow.methods.build import with_prior

    out = {"ridge_prior": with_prior(RidgePriorDecoder(prior="mnist-t10k", prior_config=cfg, stimuli=stim, n_samples=8,
                                            random_state=0, data_dir=os.environ["CORTEXFLOW_DATA"])).fit(X, Y).predict(Xt)}
    train = get_config("vangerven").replace(epochs=6, patience=3)
    out["cccv1_prior"] = with_prior(CCCV1PriorDecoder(prior=prior, stimuli=stim, config=train, device="cpu", n_members=2,
                                           random_state=1, data_dir=os.environ["CORTEXFLOW_DATA"])).fit(X, Y).predict(Xt)
    rng = np.random.default_rng(0)
    E = rng.normal(size=(58, 4, 32)).astype(np.float32)  # 58 epochs: 49 inner-training rows, batches of 8 + 1
    T = Y[:58]
    for fe in ("flatten", "shallow"):
        est = EEGDecoder(frontend=fe, config=train.replace(embed_dim=32, hidden_dim=64), device="cpu", random_state=2)
        try:
            out[f"eeg_{fe}"] = est.fit(E, T).predict(E[:5])
        except ValueError as exc:  # the old trainer could not train BatchNorm on a final batch of one row
            print(f"eeg_{fe}: {exc}")
    return out


def main(argv: list[str]) -> int:
    mode, folder = argv[1], Path(argv[2])
    torch.manual_seed(12345)
    got = outputs()
    if mode == "save":
        folder.mkdir(parents=True, exist_ok=True)
        for k, v in got.items():
            np.save(folder / f"{k}.npy", v)
        return 0
    for k, v in got.items():
        ref = np.load(folder / f"{k}.npy")
        print(f"{k:24s} max|diff| = {float(np.max(np.abs(ref.astype(np.float64) - v))):.3g}")
    torch.manual_seed(12345)
    untouched = np.array_equal(got["global_rng_after"], torch.rand(4).numpy())
    print(f"global stream untouched by the fits: {untouched}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
