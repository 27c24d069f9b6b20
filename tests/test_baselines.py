"""Baselines: contract, determinism, training on training rows only, and the method registry."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone

from cortexflow.baselines import BrainDiffuserLite, MeanImageDecoder, MindVisLite, RidgeDecoder
from cortexflow.baselines import _common
from cortexflow.benchmark.methods import list_methods, make_estimator
from cortexflow.exceptions import ConfigError, DataValidationError


@pytest.fixture(scope="module")
def vangerven_small(vangerven):
    """40 training rows and 6 test rows of the real vangerven data."""
    ds = vangerven
    return ds.X_train[:40], ds.Y_train[:40], ds.X_test[:6], ds.Y_test[:6]


def _synthetic(n_train=60, n_test=20, p=300, seed=0):
    """Images are a linear function of a low-dimensional latent that the signal also encodes."""
    rng = np.random.default_rng(seed)
    basis = rng.uniform(0, 1, size=(4, 28 * 28))
    z = rng.uniform(0, 1, size=(n_train + n_test, 4))
    Y = (z @ basis) / 4
    W = rng.normal(size=(4, p))
    X = z @ W + 0.3 * rng.normal(size=(n_train + n_test, p))
    Y = Y.reshape(-1, 28, 28).astype(np.float32)
    return X[:n_train], Y[:n_train], X[n_train:], Y[n_train:]


FAST_LITE = {
    "brain-diffuser-lite": dict(vae_epochs=4, denoiser_epochs=4, patience=2, steps=3),
    "mindvis-lite": dict(pretrain_epochs=3, fine_tune_epochs=3, patience=2, dim=16, depth=1),
}


def test_mean_image_predicts_training_mean():
    X, Y, Xt, _ = _synthetic()
    m = MeanImageDecoder().fit(X, Y)
    P = m.predict(Xt)
    assert P.shape == (len(Xt), 28, 28)
    np.testing.assert_allclose(P[3], Y.mean(axis=0), rtol=1e-6)
    with pytest.raises(DataValidationError, match="features"):
        m.predict(Xt[:, :10])


def test_ridge_beats_mean_image_and_picks_penalty_from_grid():
    X, Y, Xt, Yt = _synthetic()
    r = RidgeDecoder().fit(X, Y)
    assert r.alpha_ in set(np.logspace(-3, 7, 21))
    P = r.predict(Xt)
    assert P.shape == Yt.shape and P.min() >= 0 and P.max() <= 1
    mse_r = ((P - Yt) ** 2).mean()
    mse_m = ((MeanImageDecoder().fit(X, Y).predict(Xt) - Yt) ** 2).mean()
    assert mse_r < 0.5 * mse_m


def test_ridge_is_deterministic_and_clonable():
    X, Y, Xt, _ = _synthetic()
    a = RidgeDecoder().fit(X, Y).predict(Xt)
    b = clone(RidgeDecoder()).fit(X, Y).predict(Xt)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("cls,name", [(BrainDiffuserLite, "brain-diffuser-lite"), (MindVisLite, "mindvis-lite")])
def test_lite_methods_contract_and_determinism(vangerven_small, cls, name):
    X, Y, Xt, Yt = vangerven_small
    a = cls(random_state=3, **FAST_LITE[name]).fit(X, Y)
    P = a.predict(Xt)
    assert P.shape == Yt.shape and P.dtype == np.float32
    assert P.min() >= 0 and P.max() <= 1 and np.isfinite(P).all()
    b = clone(a).fit(X, Y)
    np.testing.assert_array_equal(P, b.predict(Xt))
    c = cls(random_state=4, **FAST_LITE[name]).fit(X, Y)
    assert not np.array_equal(P, c.predict(Xt))
    assert set(a.timings_) and all(v >= 0 for v in a.timings_.values())
    with pytest.raises(DataValidationError, match="rows"):
        cls(**FAST_LITE[name]).fit(X, Y[:-1])


def test_lite_methods_train_through_the_project_training_loop(vangerven_small, monkeypatch):
    X, Y, Xt, _ = vangerven_small
    calls = []
    real = _common.train_model

    def spy(model, Xa, Ya, config, **kw):
        calls.append((type(model).__name__, len(Xa)))
        return real(model, Xa, Ya, config, **kw)

    monkeypatch.setattr(_common, "train_model", spy)
    BrainDiffuserLite(**FAST_LITE["brain-diffuser-lite"]).fit(X, Y)
    MindVisLite(**FAST_LITE["mindvis-lite"]).fit(X, Y)
    names = [c[0] for c in calls]
    assert names == ["ImageVAE", "ConditionalDenoiser", "MaskedSignalModel", "ConditionedImageDecoder"]
    assert all(n == len(X) for _, n in calls)  # only the training rows are seen


def test_brain_diffuser_lite_stage1_and_custom_features(vangerven_small):
    X, Y, Xt, _ = vangerven_small
    feats = lambda imgs: np.stack([imgs.mean(axis=(1, 2)), imgs[:, :14].mean(axis=(1, 2))], axis=1)  # noqa: E731
    m = BrainDiffuserLite(features=feats, **FAST_LITE["brain-diffuser-lite"]).fit(X, Y)
    s1 = m.predict_stage1(Xt)
    assert s1.shape == (len(Xt), 28, 28) and 0 <= s1.min() and s1.max() <= 1
    assert m.feature_ridge_.coef_.shape[0] == 2  # regresses onto the given features
    assert m.predict(Xt).shape == (len(Xt), 28, 28)
    with pytest.raises(ConfigError, match="strength"):
        BrainDiffuserLite(strength=1.5).fit(X, Y)


def test_mindvis_lite_pretrains_on_unlabelled_signals(vangerven_small):
    X, Y, Xt, _ = vangerven_small
    m = MindVisLite(unlabelled=Xt, **FAST_LITE["mindvis-lite"]).fit(X, Y)
    expected = np.concatenate([X, Xt]).astype(np.float64).mean(axis=0)
    np.testing.assert_allclose(m.scaler_.mean_, expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(DataValidationError):
        MindVisLite(unlabelled=Xt[:, :5], **FAST_LITE["mindvis-lite"]).fit(X, Y)
    with pytest.raises(ConfigError, match="mask_ratio"):
        MindVisLite(mask_ratio=1.0).fit(X, Y)


def test_every_registered_method_fits_and_predicts_images():
    X, Y, Xt, Yt = _synthetic(n_train=30, n_test=6, p=60)
    assert {"mean-image", "ridge", "cccv1", "brain-diffuser-lite", "mindvis-lite"} <= set(list_methods())
    for name in ["mean-image", "ridge", "cccv1", "brain-diffuser-lite", "mindvis-lite"]:
        est = make_estimator(name, seed=0, dataset_name="synthetic", n_train=len(X), fast=True)
        P = est.fit(X, Y).predict(Xt)
        assert P.shape == Yt.shape, name
        assert np.isfinite(P).all() and P.min() >= 0 and P.max() <= 1, name


def test_cccv1_factory_uses_dataset_preset():
    est = make_estimator("cccv1", seed=5, dataset_name="vangerven", n_train=90)
    assert est.dataset == "vangerven" and est.config.pattern == "vangerven" and est.random_state == 5
    with pytest.raises(ConfigError, match="takes no options"):
        make_estimator("mean-image", 0, "x", 10, bogus=1)


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Tiny networks run faster on one thread (and much faster on a shared, busy CPU)."""
    import torch
    from threadpoolctl import threadpool_limits

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1):
        yield
    torch.set_num_threads(old)


def test_lite_methods_leave_the_global_random_state_alone(vangerven_small):
    import torch

    X, Y, _, _ = vangerven_small
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    BrainDiffuserLite(**FAST_LITE["brain-diffuser-lite"]).fit(X, Y)
    MindVisLite(**FAST_LITE["mindvis-lite"]).fit(X, Y)
    assert torch.equal(torch.rand(3), expected)


def test_lite_networks_keep_no_state_between_encode_and_decode():
    """Their losses are compute_loss hooks of the training loop: nothing is stashed by encode for decode."""
    import torch

    from cortexflow.baselines.brain_diffuser_lite import ImageVAE
    from cortexflow.baselines.mindvis_lite import MaskedSignalModel

    vae, mae = ImageVAE(16, 8, 2), MaskedSignalModel(20, patch_size=4, dim=8, heads=2, depth=1)
    batch = {"x": torch.rand(5, 16), "target": torch.rand(5, 16), "index": torch.arange(5)}
    loss, pix = vae.compute_loss(batch, kl_weight=0.5)
    assert loss.item() >= pix.item() > 0
    x = torch.randn(5, 20)
    loss, pix = mae.compute_loss({"x": x, "target": x, "index": torch.arange(5)})
    assert loss is pix and pix.item() > 0
    assert not hasattr(vae, "last_stats") and not hasattr(mae, "_state")
