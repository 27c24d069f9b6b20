"""The lean ridge path (float32, one eigendecomposition, GCV) against scikit-learn and an explicit formula.

Registered data sets stay on scikit-learn's RidgeCV (their numbers do not change); the lean path is taken
above ``LEAN_MIN_ELEMENTS`` only, and is forced here on small problems by lowering that threshold.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import RidgeCV

from cortexflow.baselines import _common
from cortexflow.baselines._common import (
    default_alphas,
    fit_ridge_cv,
    fit_ridge_gcv_lean,
    fit_signal_scaler_lean,
    transform_in_chunks,
    uses_lean_path,
)
from cortexflow.baselines.ridge import RidgeDecoder
from cortexflow.data.preprocessing import SignalScaler


def _problem(n, p, t=40, seed=0, noise=1.0):
    rng = np.random.default_rng(seed)
    X = (rng.standard_normal((n, p)) + 0.5).astype(np.float32)
    W = rng.standard_normal((p, t)) * 0.1
    Y = X.astype(np.float64) @ W + noise * rng.standard_normal((n, t)) + 3.0
    Xt = (rng.standard_normal((25, p)) + 0.5).astype(np.float32)
    return X, Y, Xt


def _rel(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.mark.parametrize("n,p", [(400, 60), (80, 300), (121, 120)], ids=["primal", "dual", "square"])
def test_lean_path_agrees_with_sklearn_ridgecv(n, p):
    X, Y, Xt = _problem(n, p)
    lean = fit_ridge_gcv_lean(X, Y)
    ref = RidgeCV(alphas=default_alphas()).fit(X.astype(np.float64), Y)
    assert lean.lean_path_ == ("primal" if n >= p else "dual")
    assert lean.alpha_ == ref.alpha_
    assert _rel(lean.predict(Xt), ref.predict(Xt)) < 1e-4
    assert _rel(lean.coef_, ref.coef_) < 1e-4 and lean.coef_.shape == ref.coef_.shape
    assert _rel(lean.intercept_, ref.intercept_) < 1e-4


@pytest.mark.parametrize("n,p", [(120, 30), (30, 120)], ids=["primal", "dual"])
def test_gcv_scores_equal_the_explicit_hat_matrix_formula(n, p):
    X, Y, _ = _problem(n, p, t=7, seed=1)
    alphas = np.logspace(-2, 4, 9)
    lean = fit_ridge_gcv_lean(X, Y, alphas)
    Xc = X.astype(np.float64) - X.mean(axis=0, dtype=np.float64)
    Yc = Y - Y.mean(axis=0)
    expected = []
    for a in alphas:
        H = Xc @ np.linalg.solve(Xc.T @ Xc + a * np.eye(p), Xc.T)  # hat matrix of the centred problem
        df = 1.0 + np.trace(H)  # + the intercept
        expected.append(((Yc - H @ Yc) ** 2).mean() / (1.0 - df / n) ** 2)
    np.testing.assert_allclose(lean.gcv_scores_, expected, rtol=1e-4)
    assert lean.alpha_ == alphas[int(np.argmin(expected))]
    assert lean.best_score_ == -lean.gcv_scores_.min()


def test_one_target_memmap_and_float64_input(tmp_path):
    X, Y, Xt = _problem(200, 50, t=1)
    np.save(tmp_path / "X.npy", X)
    mm = np.load(tmp_path / "X.npy", mmap_mode="r")
    lean = fit_ridge_gcv_lean(mm, Y[:, 0])
    ref = RidgeCV(alphas=default_alphas()).fit(X.astype(np.float64), Y[:, 0])
    assert lean.coef_.shape == (50,) and np.ndim(lean.intercept_) == 0
    assert lean.alpha_ == ref.alpha_ and _rel(lean.predict(Xt), ref.predict(Xt)) < 1e-4
    lean64 = fit_ridge_gcv_lean(X.astype(np.float64), Y[:, 0])
    np.testing.assert_allclose(lean64.predict(Xt), lean.predict(Xt), rtol=1e-6)


def test_registered_sizes_stay_on_sklearn_ridgecv():
    # vangerven's training rows (90 x 3,092 -> 784 pixels) and miyawaki's are far below the threshold
    assert not uses_lean_path((90, 3092)) and not uses_lean_path((440, 967))
    assert uses_lean_path((27_000, 16_000)) and not uses_lean_path((27_000, 16_000), cv=5)
    X, Y, Xt = _problem(90, 300)
    got = fit_ridge_cv(X.astype(np.float64), Y)
    ref = RidgeCV(alphas=default_alphas()).fit(X.astype(np.float64), Y)
    assert not hasattr(got, "lean_path_")
    np.testing.assert_array_equal(got.predict(Xt), ref.predict(Xt))


def test_threshold_routes_fit_ridge_cv_through_the_lean_path(monkeypatch):
    X, Y, Xt = _problem(200, 30)
    monkeypatch.setattr(_common, "LEAN_MIN_ELEMENTS", 100)
    got = fit_ridge_cv(X, Y)
    assert got.lean_path_ == "primal"
    ref = RidgeCV(alphas=default_alphas()).fit(X.astype(np.float64), Y)
    assert got.alpha_ == ref.alpha_ and _rel(got.predict(Xt), ref.predict(Xt)) < 1e-4
    assert not hasattr(fit_ridge_cv(X, Y, cv=3), "lean_path_")  # K-fold stays on scikit-learn


def test_chunked_scaler_and_transform(monkeypatch):
    monkeypatch.setattr(_common, "_CHUNK_VALUES", 500)  # many small blocks
    rng = np.random.default_rng(3)
    X = (rng.standard_normal((70, 33)) * 5 + 2).astype(np.float32)
    X[:, 4] = 1.0  # a constant feature gets scale 1
    full = SignalScaler().fit(X)
    lean = fit_signal_scaler_lean(X)
    np.testing.assert_allclose(lean.mean_, full.mean_, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(lean.scale_, full.scale_, rtol=1e-12)
    assert lean.scale_[4] == 1.0 and lean.n_features_in_ == 33
    np.testing.assert_array_equal(transform_in_chunks(full.transform, X), full.transform(X))


def test_ridge_decoder_on_the_lean_path_matches_the_default_path(monkeypatch, tmp_path):
    rng = np.random.default_rng(4)
    Y = rng.random((150, 12, 12)).astype(np.float32)
    P = rng.standard_normal((144, 80))
    X = (Y.reshape(150, -1) @ P + 0.5 * rng.standard_normal((150, 80))).astype(np.float32)
    ref = RidgeDecoder().fit(X[:120], Y[:120])
    monkeypatch.setattr(_common, "LEAN_MIN_ELEMENTS", 100)
    lean = RidgeDecoder().fit(X[:120], Y[:120])
    assert lean.ridge_.lean_path_ == "primal" and not hasattr(ref.ridge_, "lean_path_")
    assert lean.alpha_ == ref.alpha_
    np.testing.assert_allclose(lean.predict(X[120:]), ref.predict(X[120:]), atol=1e-4)
    loaded = RidgeDecoder.load(lean.save(tmp_path / "ridge"))
    np.testing.assert_array_equal(loaded.predict(X[120:]), lean.predict(X[120:]))


def test_block_out_of_fold_equals_refitting_sklearn_ridge():
    """The block leave-out identity on the lean fit's decomposition gives each fold's refit predictions."""
    from sklearn.linear_model import Ridge

    from cortexflow.baselines._common import block_out_of_fold

    X, Y, _ = _problem(300, 50, t=6, seed=3)
    model, basis = fit_ridge_gcv_lean(X, Y, return_basis=True)
    assert basis is not None and basis.alpha == model.alpha_
    rng = np.random.default_rng(0)
    folds = [(np.setdiff1d(np.arange(300), te), te) for te in np.array_split(rng.permutation(300), 7)]
    got = block_out_of_fold(model, basis, X, Y, folds)
    ref = np.zeros_like(Y)
    for tr, te in folds:
        ref[te] = Ridge(alpha=model.alpha_).fit(X[tr].astype(np.float64), Y[tr]).predict(X[te].astype(np.float64))
    assert _rel(got, ref) < 1e-4
    # the dual path (n < p) keeps no basis
    _, none = fit_ridge_gcv_lean(X[:40], Y[:40], return_basis=True)
    assert none is None


def _toy_prior(seed: int):
    """A fitted 4-d prior of 12x12 images (one epoch on 64 random images), as resolve_prior hands it over."""
    from cortexflow.models.prior import PriorConfig
    from _priors import toy_prior

    corpus = np.random.default_rng(seed).random((64, 12, 12)).astype(np.float32)
    return toy_prior(corpus, PriorConfig(embed_dim=4, epochs=1, widths=(4, 8, 8), image_shape=(12, 12)))


def _toy_problem(n: int, p: int, seed: int):
    """Signals (n, p) that depend linearly on random 12x12 images (n, 12, 12)."""
    rng = np.random.default_rng(seed)
    Y = rng.random((n, 12, 12)).astype(np.float32)
    X = (Y.reshape(n, -1) @ rng.standard_normal((144, p)) + rng.standard_normal((n, p))).astype(np.float32)
    return X, Y


def test_ridge_prior_lean_path_matches_the_default_path(monkeypatch):
    """ridge-prior above LEAN_MIN_ELEMENTS (float32, GCV, block out-of-fold) decodes as the default path does."""
    from cortexflow.priors.ridge_prior import RidgePriorDecoder

    prior = _toy_prior(0)
    X, Y = _toy_problem(120, 30, 0)
    kw = dict(prior=prior, alpha=[30.0], n_samples=4, random_state=0, decoding="prior")
    ref = RidgePriorDecoder(**kw).fit(X, Y)
    monkeypatch.setattr(_common, "LEAN_MIN_ELEMENTS", 100)
    lean = RidgePriorDecoder(**kw).fit(X, Y)
    assert lean.ridge_.lean_path_ == "primal" and not hasattr(ref.ridge_, "lean_path_")
    np.testing.assert_allclose(lean.residuals_, ref.residuals_, atol=1e-4)
    assert lean.residual_scale_ == ref.residual_scale_
    np.testing.assert_allclose(lean.predict(X[:10]), ref.predict(X[:10]), atol=1e-3)


def test_ridge_prior_ranks_candidates_on_a_row_subset_above_the_cap(monkeypatch):
    """Above RANKING_MAX_ROWS training rows the residual scale is ranked on a seeded subset (same fit twice)."""
    from cortexflow.priors import ridge_prior

    prior = _toy_prior(1)
    X, Y = _toy_problem(90, 20, 1)
    monkeypatch.setattr(ridge_prior, "RANKING_MAX_ROWS", 30)
    calls = []
    orig = ridge_prior.RidgePriorDecoder._decode_mean

    def spy(self, Z, *a, **k):
        calls.append(len(Z))
        return orig(self, Z, *a, **k)

    monkeypatch.setattr(ridge_prior.RidgePriorDecoder, "_decode_mean", spy)
    kw = dict(prior=prior, n_samples=4, random_state=0, decoding="prior", pixel_blend="auto")
    a = ridge_prior.RidgePriorDecoder(**kw).fit(X, Y)
    assert calls and max(calls) == 30  # every candidate ranked on 30 rows, not 90
    b = ridge_prior.RidgePriorDecoder(**kw).fit(X, Y)
    assert a.residual_scale_ == b.residual_scale_ and a.pixel_blend_ == b.pixel_blend_
    assert a.residual_scale_ in a.residual_grid and a.pixel_blend_ in ridge_prior.BLEND_GRID


def test_grouped_decoding_in_chunks_equals_row_by_row(monkeypatch):
    """Above ROW_BY_ROW_MAX rows the grouped posterior mean is decoded 64 rows per call: the same images."""
    from cortexflow.priors import ridge_prior

    rng = np.random.default_rng(2)
    est = ridge_prior.RidgePriorDecoder()
    est.prior_ = _toy_prior(2)
    est.residuals_ = rng.normal(size=(150, 4)).astype(np.float32)
    Z = rng.normal(size=(150, 4))
    groups = np.repeat(np.arange(50), 3)
    ref = est._decode_mean(Z, 0.5, np.random.default_rng(0), groups, cap=5)
    monkeypatch.setattr(ridge_prior, "ROW_BY_ROW_MAX", 10)
    got = est._decode_mean(Z, 0.5, np.random.default_rng(0), groups, cap=5)
    np.testing.assert_allclose(got, ref, atol=1e-5)


def test_lean_fit_reuses_a_given_basis():
    """A second set of targets on the same X with the first fit's basis: the same model as a fresh fit."""
    X, Y, Xt = _problem(300, 50, t=8, seed=4)
    _, basis = fit_ridge_gcv_lean(X, Y[:, :3], return_basis=True)
    fresh = fit_ridge_gcv_lean(X, Y)
    reused, basis2 = fit_ridge_gcv_lean(X, Y, return_basis=True, basis=basis)
    assert reused.alpha_ == fresh.alpha_ and basis2.alpha == fresh.alpha_ and basis2.eigvecs is basis.eigvecs
    np.testing.assert_allclose(reused.gcv_scores_, fresh.gcv_scores_, rtol=1e-6)
    assert _rel(reused.predict(Xt), fresh.predict(Xt)) < 1e-6
    with pytest.raises(ValueError, match="basis of a 300 x 50 fit"):
        fit_ridge_gcv_lean(X[:200], Y[:200], basis=basis)


def test_ridge_prior_stacked_lean_path_reuses_the_decomposition(monkeypatch):
    """pixel_blend='auto' on the lean path: the pixel ridge reuses the embedding fit's basis, as the default path decides."""
    from cortexflow.priors.ridge_prior import RidgePriorDecoder

    X, Y = _toy_problem(120, 30, 5)
    kw = dict(prior=_toy_prior(5), alpha=[30.0], n_samples=4, random_state=0, decoding="prior", pixel_blend="auto")
    ref = RidgePriorDecoder(**kw).fit(X, Y)
    monkeypatch.setattr(_common, "LEAN_MIN_ELEMENTS", 100)
    calls = []
    eigh = _common._eigh_upper
    monkeypatch.setattr(_common, "_eigh_upper", lambda M: calls.append(len(M)) or eigh(M))
    lean = RidgePriorDecoder(**kw).fit(X, Y)
    assert calls == [30]  # one decomposition for the embedding and the pixel ridge
    assert lean.pixel_blend_ == ref.pixel_blend_ and lean.pixel_ridge_.lean_path_ == "primal"
    np.testing.assert_allclose(lean.predict(X[:10]), ref.predict(X[:10]), atol=1e-3)
