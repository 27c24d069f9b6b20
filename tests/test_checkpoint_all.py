"""One checkpoint format for every estimator: fit on 20 rows, save, load, predict again, max |diff| == 0.

Every estimator class of CortexFlow is covered, baselines included; the
prior-backed ones use a tiny prior on the generated ``miyawaki-patterns``
corpus (no data file needed), trained once for the module.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cortexflow.baselines import BrainDiffuserLite, MeanImageDecoder, MindVisLite, RidgeDecoder
from cortexflow.models.base import BaseDecoder, NonFinitePredictionError
from cortexflow.models.checkpoint import CHECKPOINT_META, FIT_ONLY_PARAMS
from cortexflow.models.eeg_estimator import EEGDecoder
from cortexflow.models.ensemble import CCCV1EnsembleDecoder
from cortexflow.models.estimator import CCCV1Decoder
from cortexflow.models.loader import DECODER_KINDS, load_decoder
from cortexflow.priors import PriorConfig
from cortexflow.priors.baselines import BrainDiffuserPrior, MindVisPrior
from cortexflow.priors.cccv1_prior import CCCV1PriorDecoder
from cortexflow.data.generators import miyawaki_patterns
from cortexflow.priors.ridge_prior import RidgePriorDecoder
from cortexflow.semantic.decoder import CCCV1SemanticDecoder
from cortexflow.training.config import get_config
from _priors import fit_resolved

TINY = PriorConfig(embed_dim=8, widths=(4, 8, 8), epochs=1, batch_size=32, max_images=120)
TRAIN = get_config("small").replace(epochs=2, patience=1, hidden_dim=32, embed_dim=16, batch_size=8)


def _problem(n=20, p=30, seed=0):
    rng = np.random.default_rng(seed)
    Y, _ = miyawaki_patterns(n_random=n, n_shapes=0, seed=seed)
    X = Y.reshape(n, -1) @ rng.normal(size=(784, p)) + 0.1 * rng.normal(size=(n, p))
    return X.astype(np.float32), Y.astype(np.float32)


def _fit(est, X, Y):
    """Fit ``est``; a prior-backed one gets its prior resolved first (estimators do no I/O)."""
    return fit_resolved(est, X, Y) if "prior" in est.get_params() else est.fit(X, Y)


def _prior(cache):
    return {"prior": "miyawaki-patterns", "prior_config": TINY, "cache_dir": cache}


#: kind -> (estimator factory given the prior cache folder, input transform)
CASES = {
    "mean-image": lambda c: MeanImageDecoder(),
    "ridge": lambda c: RidgeDecoder(),
    "brain-diffuser-lite": lambda c: BrainDiffuserLite(vae_epochs=2, denoiser_epochs=2, patience=1, steps=3),
    "mindvis-lite": lambda c: MindVisLite(dim=16, depth=1, heads=2, pretrain_epochs=2, fine_tune_epochs=2, patience=1),
    "cccv1": lambda c: CCCV1Decoder(config=TRAIN, device="cpu"),
    "cccv1-ensemble": lambda c: CCCV1EnsembleDecoder(2, config=TRAIN, device="cpu"),
    "cccv1-semantic": lambda c: CCCV1SemanticDecoder(config=TRAIN, encoder="pixels", device="cpu"),
    "cccv1-eeg": lambda c: EEGDecoder(frontend="flatten", n_channels=3, config=TRAIN, device="cpu"),
    "ridge-prior": lambda c: RidgePriorDecoder(**_prior(c), n_samples=4, residual_grid=(0.0, 0.5), pixel_blend="auto"),
    "cccv1-prior": lambda c: CCCV1PriorDecoder(**_prior(c), config=TRAIN, device="cpu", n_members=2),
    "brain-diffuser-prior": lambda c: BrainDiffuserPrior(**_prior(c), denoiser_epochs=2, patience=1, steps=3),
    "mindvis-prior": lambda c: MindVisPrior(**_prior(c), dim=16, depth=1, heads=2, pretrain_epochs=2,
                                            fine_tune_epochs=2, patience=1),
}


@pytest.fixture(scope="module")
def problem():
    return _problem()


@pytest.fixture(scope="module")
def prior_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("prior-cache")


def test_every_checkpoint_kind_is_covered():
    assert set(CASES) == set(DECODER_KINDS)
    for kind, cls in DECODER_KINDS.items():
        assert cls.checkpoint_kind == kind and issubclass(cls, BaseDecoder)


@pytest.mark.parametrize("kind", list(CASES))
def test_fit_save_load_predict_identically(kind, problem, prior_cache, tmp_path):
    X, Y = problem
    X_in = X[:, :30].copy()
    if kind == "cccv1-eeg":
        X_in = X[:, :30].reshape(len(X), 3, 10)
    est = _fit(CASES[kind](prior_cache), X_in, Y)
    before = est.predict(X_in)
    path = est.save(tmp_path / "ckpt")
    meta = json.loads((path / CHECKPOINT_META).read_text())
    assert meta["kind"] == kind and meta["format"] == 2 and meta["image_shape"] == [28, 28]
    torch.manual_seed(3)
    rng_state = torch.get_rng_state()
    loaded = load_decoder(path, device="cpu")
    assert torch.equal(rng_state, torch.get_rng_state())  # loading leaves the global random stream alone
    assert type(loaded) is type(est)
    after = loaded.predict(X_in)
    assert after.shape == before.shape == (20, 28, 28)
    assert float(np.max(np.abs(after - before))) == 0.0
    assert tuple(loaded.image_shape_) == (28, 28) and loaded.n_features_in_ == 30
    assert {k: v for k, v in loaded.get_params().items() if k not in FIT_ONLY_PARAMS + ("device",)}.keys() \
        == {k: v for k, v in est.get_params().items() if k not in FIT_ONLY_PARAMS + ("device",)}.keys()
    # a loaded estimator saves again, and that checkpoint predicts the same too
    again = load_decoder(loaded.save(tmp_path / "again"), device="cpu")
    assert float(np.max(np.abs(again.predict(X_in) - before))) == 0.0


def test_any_image_shape_is_stored(tmp_path):
    """Nothing assumes 28 x 28: a (6, 5, 3) target shape round-trips through the generic format."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(20, 12)).astype(np.float32)
    Y = rng.uniform(size=(20, 6, 5, 3)).astype(np.float32)
    for est in (MeanImageDecoder(), RidgeDecoder()):
        est.fit(X, Y)
        path = est.save(tmp_path / type(est).__name__)
        assert json.loads((path / CHECKPOINT_META).read_text())["image_shape"] == [6, 5, 3]
        loaded = load_decoder(path)
        assert loaded.image_shape_ == (6, 5, 3)
        np.testing.assert_array_equal(loaded.predict(X), est.predict(X))


def test_a_function_parameter_cannot_be_saved(problem, tmp_path):
    X, Y = problem
    est = BrainDiffuserLite(vae_epochs=1, denoiser_epochs=1, patience=1, steps=2,
                            features=lambda im: im.reshape(len(im), -1)[:, :4]).fit(X, Y)
    from cortexflow.exceptions import CheckpointError

    with pytest.raises(CheckpointError, match="parameter features=.* is a function"):
        est.save(tmp_path / "ckpt")
    assert not (tmp_path / "ckpt").exists()


@pytest.mark.parametrize("kind", ["mean-image", "brain-diffuser-lite", "mindvis-lite"])
def test_non_finite_predictions_are_refused_on_every_predict(kind, problem, prior_cache):
    """The check lives in BaseDecoder: every subclass's predict goes through it."""
    X, Y = problem
    est = _fit(CASES[kind](prior_cache), X, Y)
    if kind == "mean-image":
        est.mean_image_ = est.mean_image_.copy()
        est.mean_image_[0, 0] = np.nan
    else:
        net = est.denoiser_ if kind == "brain-diffuser-lite" else est.model_
        with torch.no_grad():
            for p in net.parameters():
                p.fill_(float("nan"))
    with pytest.raises(NonFinitePredictionError, match=f"{type(est).__name__}.predict produced NaN or infinite "
                                                       "values for 20 of 20 row"):
        est.predict(X)


def test_a_new_decoder_gets_the_check_without_code():
    class Broken(MeanImageDecoder):
        def predict(self, X):
            return np.full((len(X), 2), np.inf, dtype=np.float32)

    est = Broken().fit(np.ones((3, 2)), np.ones((3, 2)))
    with pytest.raises(NonFinitePredictionError, match="Broken.predict produced NaN or infinite values for 3 of 3"):
        est.predict(np.ones((3, 2)))
