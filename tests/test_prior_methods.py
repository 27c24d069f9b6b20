"""The learned prior-backed methods: cccv1-prior (MLP / attention encoder, ensembles) and friends.

Every test uses a tiny prior on the generated ``miyawaki-patterns`` corpus (no
data file needed) or, for the real-data checks, the vangerven file.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from cortexflow.benchmark.methods import get_method, list_methods, make_estimator
from cortexflow.exceptions import ConfigError
from cortexflow.priors import PriorConfig, get_prior, load_corpus
from cortexflow.models.ensemble import CCCV1EnsembleDecoder, member_seeds
from cortexflow.models.estimator import CCCV1Decoder
from cortexflow.priors.cccv1_prior import CCCV1PriorDecoder, PriorEnsemble
from cortexflow.data.generators import miyawaki_patterns
from cortexflow.training.config import get_config
from cortexflow.methods.build import with_prior
from _priors import fit_resolved

TINY = PriorConfig(embed_dim=8, widths=(4, 8, 8), epochs=1, batch_size=32, max_images=120)
TRAIN = get_config("small").replace(epochs=3, patience=2, hidden_dim=32, batch_size=8)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CORTEXFLOW_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def tiny_prior(tmp_path_factory):
    """One tiny fitted prior shared by the module's tests (trained once, in a second or so), with its corpus images."""
    prior = get_prior("miyawaki-patterns", config=TINY, cache_dir=tmp_path_factory.mktemp("prior-cache"))
    prior.corpus_images = load_corpus("miyawaki-patterns").images  # what resolve_prior hands over (unguarded here)
    return prior


def _problem(n=20, p=30, seed=0):
    rng = np.random.default_rng(seed)
    Y, _ = miyawaki_patterns(n_random=n, n_shapes=0, seed=seed)
    X = Y.reshape(n, -1) @ rng.normal(size=(784, p)) + 0.1 * rng.normal(size=(n, p))
    return X.astype(np.float32), Y


def _fit(prior, X, Y, **kw):
    kw = {"config": TRAIN, "device": "cpu", "random_state": 0, "residual_scale": 0.0, "decoding": "prior", **kw}
    return fit_resolved(CCCV1PriorDecoder(prior=prior, **kw), X, Y)


@pytest.mark.parametrize("encoder", ["mlp", "attention"])
def test_cccv1_prior_fits_and_predicts(tiny_prior, encoder):
    X, Y = _problem()
    est = CCCV1PriorDecoder(prior=tiny_prior, config=TRAIN, encoder=encoder, device="cpu")
    assert est.fit(X[:15], Y[:15]) is est
    P = est.predict(X[15:])
    assert P.shape == (5, 28, 28) and P.dtype == np.float32 and 0 <= P.min() and P.max() <= 1
    Z = est.transform(X[15:])
    assert Z.shape == (5, tiny_prior.embed_dim) and np.allclose(np.linalg.norm(Z, axis=1), 1, atol=1e-5)
    info = est.report_info_
    assert info["prior_corpus"] == "miyawaki-patterns" and info["prior_n_dropped"] == tiny_prior.info["n_dropped"]
    assert info["encoder"] == encoder and info["n_members"] == 1
    assert est.n_features_in_ == 30 and len(est.history_) >= 1
    # the prior's own network is untouched (a copy is wrapped)
    assert all(not p.requires_grad for p in tiny_prior.model.parameters())


def test_fit_leaves_global_random_state_alone(tiny_prior):
    X, Y = _problem()
    torch.manual_seed(123)
    before = torch.get_rng_state()
    _fit(tiny_prior, X, Y)
    assert torch.equal(before, torch.get_rng_state())


def test_deterministic_per_seed(tiny_prior):
    X, Y = _problem()
    a = _fit(tiny_prior, X, Y, random_state=5).predict(X)
    b = _fit(tiny_prior, X, Y, random_state=5).predict(X)
    c = _fit(tiny_prior, X, Y, random_state=6).predict(X)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_members_are_averaged(tiny_prior):
    X, Y = _problem()
    ens = _fit(tiny_prior, X, Y, n_members=3, random_state=2)
    assert isinstance(ens.model_, PriorEnsemble) and len(ens.model_.members) == 3
    with torch.no_grad():
        xt = torch.as_tensor(ens.signal_scaler_.transform(X))
        each = torch.stack([m(xt) for m in ens.model_.members]).numpy().reshape(3, len(X), 28, 28)
    np.testing.assert_allclose(ens.predict(X), each.mean(0), atol=1e-6)
    assert not np.allclose(each[0], each[1])  # members differ (different seeds)
    # member 0 is the single model of the same seed
    single = _fit(tiny_prior, X, Y, random_state=2)
    np.testing.assert_allclose(single.predict(X), each[0], atol=1e-6)
    assert member_seeds(2, 3)[0] == 2 and len(set(member_seeds(2, 3))) == 3


def test_fine_tune_and_no_skip_variants(tiny_prior):
    X, Y = _problem()
    est = _fit(tiny_prior, X, Y, fine_tune_decoder=True, ridge_skip=False)
    assert est.ridge_alpha_ is None and any(h.get("phase") == "finetune" for h in est.history_)
    assert est.predict(X).shape == (20, 28, 28)
    assert all(not p.requires_grad for p in tiny_prior.model.parameters())


def test_bad_options_are_named(tiny_prior):
    X, Y = _problem()
    with pytest.raises(ConfigError, match="encoder='cnn'.*mlp, attention"):
        _fit(tiny_prior, X, Y, encoder="cnn")
    with pytest.raises(ConfigError, match="n_members=0"):
        _fit(tiny_prior, X, Y, n_members=0)


@pytest.mark.parametrize("method", ["cccv1-prior", "brain-diffuser-prior", "mindvis-prior"])
def test_user_file_without_prior_is_a_clear_error(cache, method):
    X, Y = _problem()
    with pytest.raises(ConfigError, match="no default image prior.*color-shapes, font-letters, miyawaki-patterns, mnist-t10k"):
        make_estimator(method, 0, "my_recording.mat", 20, fast=True, stimuli=Y)  # the builder resolves the prior
    est = make_estimator(method, 0, "my_recording.mat", 20, fast=True, stimuli=Y, resolve=False)
    with pytest.raises(ConfigError, match="needs a fitted prior.*estimators do no I/O.*with_prior"):
        est.fit(X, Y)  # fit never resolves a prior itself
    with pytest.raises(ConfigError, match="no default image prior"):
        with_prior(est, Y)  # the helper for estimators built by hand: the builder's message


def test_decoding_options_reach_cccv1_prior_through_the_factory():
    est = make_estimator("cccv1-prior", 0, "vangerven", 90, decoding="prior", knn=5, pixel_blend="auto",
                         stimuli=np.zeros((2, 28, 28), np.float32), resolve=False)
    assert (est.decoding, est.knn, est.pixel_blend) == ("prior", 5, "auto")


def test_registered_fast_methods_fit_in_seconds(cache):
    X, Y = _problem()
    for name in ("cccv1-prior", "brain-diffuser-prior", "mindvis-prior"):
        assert name in list_methods() and get_method(name).description and get_method(name).needs_stimuli
        est = make_estimator(name, 1, "my_recording.mat", 15, fast=True, prior="miyawaki-patterns", stimuli=Y)
        assert est.random_state == 1
        P = est.fit(X[:15], Y[:15]).predict(X[15:])
        assert P.shape == (5, 28, 28) and np.isfinite(P).all()
        assert est.report_info_["prior_corpus"] == "miyawaki-patterns"


@pytest.mark.parametrize("decoding", ["prior", "hybrid"])
def test_test_rows_never_reach_training(vangerven, tiny_prior, decoding):
    """Training on a data set whose test split is all NaN gives exactly the same model."""
    poisoned = copy.deepcopy(vangerven)
    poisoned.X_test[:] = np.nan
    poisoned.Y_test[:] = np.nan
    kw = {"dataset": "vangerven", "n_members": 2, "decoding": decoding}
    normal = _fit(tiny_prior, vangerven.X_train, vangerven.Y_train, **kw)
    isolated = _fit(tiny_prior, poisoned.X_train, poisoned.Y_train, **kw)
    assert np.isnan(poisoned.X_test).all()  # the poison is really there
    np.testing.assert_array_equal(isolated.predict(vangerven.X_test), normal.predict(vangerven.X_test))
    assert isolated.signal_scaler_.get_state() == normal.signal_scaler_.get_state()
    np.testing.assert_allclose(isolated.signal_scaler_.mean_, vangerven.X_train.astype(np.float64).mean(axis=0))


def test_cccv1_n_members_is_a_batched_mean_image(tiny_config):
    X, Y = _problem(n=24)
    est = make_estimator("cccv1", 3, "my_recording.mat", 24, fast=True, n_members=3, device="cpu")
    assert isinstance(est, CCCV1EnsembleDecoder) and est.n_members == 3
    assert type(make_estimator("cccv1", 3, "my_recording.mat", 24, fast=True)) is CCCV1Decoder
    P = est.fit(X, Y).predict(X)
    each = np.stack([m.predict(X) for m in est.members_])
    assert [m.random_state for m in est.members_] == member_seeds(3, 3)
    np.testing.assert_allclose(P, each.mean(0), atol=1e-6)
    assert not np.allclose(each[0], each[1])
    # member 0 is the plain decoder of the same seed (batched = sequential up to summation order)
    plain = CCCV1Decoder(config=est.members_[0].config_, dataset="my_recording.mat", random_state=3,
                         device="cpu").fit(X, Y)
    np.testing.assert_allclose(plain.predict(X), each[0], atol=1e-4)
    ens = make_estimator("cccv1-ensemble", 0, "my_recording.mat", 24, fast=True)
    assert isinstance(ens, CCCV1EnsembleDecoder) and ens.n_members == 5


@pytest.mark.parametrize("method", ["brain-diffuser-prior", "mindvis-prior"])
def test_baseline_prior_variants_never_see_test_rows(vangerven, tiny_prior, method):
    poisoned = copy.deepcopy(vangerven)
    poisoned.X_test[:] = np.nan
    poisoned.Y_test[:] = np.nan
    fits = [make_estimator(method, 0, "vangerven", 90, fast=True, prior=tiny_prior, stimuli=vangerven.Y_train)
            .fit(d.X_train, d.Y_train) for d in (vangerven, poisoned)]
    assert np.isnan(poisoned.X_test).all()
    np.testing.assert_array_equal(fits[0].predict(vangerven.X_test), fits[1].predict(vangerven.X_test))
    assert fits[0].report_info_["prior_corpus"] == "miyawaki-patterns"
    assert all(not p.requires_grad for p in tiny_prior.model.parameters())


def test_posterior_mean_decoding(tiny_prior):
    """With a residual scale the prediction is the mean decoded image over the out-of-fold ridge residuals."""
    X, Y = _problem()
    est = _fit(tiny_prior, X, Y, residual_scale=0.5, n_members=2)
    post = est.posterior_
    assert post.residual_scale_ == 0.5 and post.residuals_.shape == (20, tiny_prior.embed_dim)
    assert est.report_info_["residual_scale"] == 0.5
    P = est.predict(X[:4])
    with torch.no_grad():
        xt = torch.as_tensor(est.signal_scaler_.transform(X[:4]))
        Z = [m.encoder.raw(xt).numpy() for m in est.model_.members]
    assert post.n_samples >= 20  # every residual is used: the mean is exact
    manual = np.mean([[tiny_prior.decode_embeddings(z[None] + 0.5 * post.residuals_).mean(0) for z in Zm]
                      for Zm in Z], axis=0)
    assert P.shape == (4, 28, 28)
    np.testing.assert_allclose(P, manual, atol=1e-5)
    assert not np.allclose(P, _fit(tiny_prior, X, Y, residual_scale=0.0, n_members=2).predict(X[:4]))
    auto = _fit(tiny_prior, X, Y, residual_scale="auto")
    assert auto.report_info_["residual_scale"] in (0.0, 0.25, 0.5, 0.75)
    assert _fit(tiny_prior, X, Y, residual_scale=0.5, ridge_skip=False).posterior_ is None


def test_the_prior_parameters_are_documented_stored_and_checked_once():
    """The four prior-backed estimators share PriorBacked: one text per prior parameter, one store, one check."""
    import inspect

    from cortexflow.exceptions import ConfigError
    from cortexflow.priors.backed import PRIOR_PARAMS, PriorBacked
    from cortexflow.priors.baselines import BrainDiffuserPrior, MindVisPrior
    from cortexflow.priors.cccv1_prior import CCCV1PriorDecoder
    from cortexflow.priors.ridge_prior import RidgePriorDecoder
    from cortexflow.registry.options import options_from_estimator

    helps = []
    for cls in (RidgePriorDecoder, CCCV1PriorDecoder, BrainDiffuserPrior, MindVisPrior):
        assert issubclass(cls, PriorBacked)
        doc = inspect.getdoc(cls)
        assert "{prior_parameters}" not in doc, cls
        for name in PRIOR_PARAMS:
            assert name in inspect.signature(cls.__init__).parameters, (cls, name)
            assert sum(line.startswith(f"{name} : ") for line in doc.splitlines()) == 1, (cls, name)
        est = cls(prior="miyawaki-patterns", threshold=0.5, data_dir="d", cache_dir="c")
        assert (est.prior, est.threshold, est.data_dir, est.cache_dir) == ("miyawaki-patterns", 0.5, "d", "c")
        with pytest.raises(ConfigError, match="threshold=-1"):
            cls(threshold=-1)._check_params()
        helps.append({o.name: o.help for o in options_from_estimator(cls) if o.name in PRIOR_PARAMS})
    for name in ("prior", "stimuli", "threshold", "data_dir", "cache_dir"):  # the same text for every estimator
        assert len({h[name] for h in helps}) == 1 and helps[0][name], name
    assert "RIDGE_PRIOR_CONFIG" in helps[0]["prior_config"] and "PriorConfig()" in helps[1]["prior_config"]
    assert helps[0]["data_dir"] != helps[0]["cache_dir"]
