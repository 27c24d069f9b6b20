"""Leak-proof preprocessing and the three kinds of split."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from cortexflow.data.preprocessing import ImageScaler, SignalScaler
from cortexflow.data.splits import (
    count_seen,
    inner_validation_split,
    kfold_splits,
    novel_stimulus_splits,
    stimulus_groups,
)
from cortexflow.exceptions import ConfigError


# ------------------------------------------------------------ preprocessing
def _fitted_stats(scaler) -> str:
    return json.dumps(scaler.get_state(), sort_keys=True)


def test_scalers_see_only_training_rows(vangerven):
    ds = copy.deepcopy(vangerven)
    sig = SignalScaler().fit(ds.X_train)
    img = ImageScaler().fit(ds.Y_train)
    before = (_fitted_stats(sig), _fitted_stats(img))
    Z_before = sig.transform(ds.X_test)

    ds.X_test *= 100.0
    ds.X_test += 7.0
    ds.Y_test[:] = 0.25
    sig.transform(ds.X_test)
    img.transform(ds.Y_test)
    assert (_fitted_stats(sig), _fitted_stats(img)) == before  # transforming test rows changes nothing

    refit = (_fitted_stats(SignalScaler().fit(ds.X_train)), _fitted_stats(ImageScaler().fit(ds.Y_train)))
    assert refit == before  # a fit on the same training rows with other test rows is identical
    np.testing.assert_allclose(sig.transform(vangerven.X_test), Z_before)


def test_signal_scaler_statistics_and_inverse():
    rng = np.random.default_rng(0)
    X = rng.normal(loc=3.0, scale=2.0, size=(50, 6))
    X[:, 4] = 1.5  # zero variance: scale 1, becomes 0
    sc = SignalScaler().fit(X)
    np.testing.assert_allclose(sc.mean_, X.mean(axis=0))
    Z = sc.transform(X)
    assert Z.dtype == np.float32
    np.testing.assert_allclose(Z.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(np.delete(Z.std(axis=0), 4), 1, atol=1e-4)
    assert np.all(Z[:, 4] == 0)
    np.testing.assert_allclose(sc.inverse_transform(Z), X, rtol=1e-5)
    assert np.abs(SignalScaler(clip=0.5).fit(X).transform(X)).max() <= 0.5


def test_scaler_state_round_trip_through_json():
    rng = np.random.default_rng(1)
    X, Y = rng.normal(size=(20, 9)), rng.uniform(0.1, 0.9, size=(20, 28, 28))
    sig = SignalScaler(clip=3.0).fit(X)
    img = ImageScaler().fit(Y)
    sig2 = SignalScaler.from_state(json.loads(json.dumps(sig.get_state())))
    img2 = ImageScaler.from_state(json.loads(json.dumps(img.get_state())))
    assert sig2.get_params() == sig.get_params() and sig2.n_features_in_ == 9
    X_new, Y_new = rng.normal(size=(5, 9)), rng.uniform(size=(5, 28, 28))
    np.testing.assert_array_equal(sig2.transform(X_new), sig.transform(X_new))
    np.testing.assert_array_equal(img2.transform(Y_new), img.transform(Y_new))
    np.testing.assert_array_equal(img2.inverse_transform(img.transform(Y_new)), img.inverse_transform(img.transform(Y_new)))
    assert img.inverse_transform(img.transform(Y_new)).shape == (5, 28, 28)
    with pytest.raises(ValueError, match="9 features"):
        sig2.transform(rng.normal(size=(2, 4)))


def test_image_scaler_min_max_and_non_square_targets():
    Y = np.array([[0.2, 0.6, 1.0], [0.4, 0.2, 0.8]])
    sc = ImageScaler().fit(Y)
    assert (sc.data_min_, sc.data_max_) == (0.2, 1.0)
    np.testing.assert_allclose(sc.transform(Y), (Y - 0.2) / 0.8, rtol=1e-6)
    back = sc.inverse_transform(sc.transform(Y))
    assert back.shape == (2, 3)  # 3 is not a square: the flat layout is kept
    np.testing.assert_allclose(back, Y, rtol=1e-6)
    with pytest.raises(ValueError, match="3 pixels"):
        sc.transform(np.zeros((1, 4)))


# ------------------------------------------------------------------ splits
def test_kfold_is_deterministic_disjoint_and_covering():
    a = list(kfold_splits(90, n_splits=10, seed=3))
    b = list(kfold_splits(90, n_splits=10, seed=3))
    c = list(kfold_splits(90, n_splits=10, seed=4))
    assert len(a) == 10
    for s, t in zip(a, b):
        np.testing.assert_array_equal(s.train, t.train)
        np.testing.assert_array_equal(s.test, t.test)
    assert any(not np.array_equal(s.test, t.test) for s, t in zip(a, c))
    all_test = np.concatenate([s.test for s in a])
    assert sorted(all_test.tolist()) == list(range(90))  # each row tested exactly once
    for s in a:
        assert np.intersect1d(s.train, s.test).size == 0
        assert len(s.train) + len(s.test) == 90 and s.kind == "kfold"
    with pytest.raises(ConfigError, match="n_splits=1"):
        list(kfold_splits(10, n_splits=1))


def test_novel_stimulus_split_on_miyawaki(miyawaki):
    Y = miyawaki.Y_train
    groups = stimulus_groups(Y)
    assert len(np.unique(groups)) == 20  # 20 unique images among 107 trials
    splits = list(novel_stimulus_splits(Y, n_splits=5, seed=0))
    assert len(splits) == 5
    tested = []
    for s in splits:
        assert np.intersect1d(s.train, s.test).size == 0
        assert not set(groups[s.test]) & set(groups[s.train])  # no test image appears in training
        assert count_seen(Y[s.train], Y[s.test]) == 0
        tested.extend(s.test.tolist())
    assert sorted(tested) == list(range(len(Y)))
    again = list(novel_stimulus_splits(Y, n_splits=5, seed=0))
    assert all(np.array_equal(s.test, t.test) for s, t in zip(splits, again))
    with pytest.raises(ConfigError, match="only 20 unique stimuli"):
        list(novel_stimulus_splits(Y, n_splits=21))


def test_official_split_overlap_counts(vangerven, miyawaki):
    assert count_seen(vangerven.Y_train, vangerven.Y_test) == 0
    assert len(np.unique(stimulus_groups(np.concatenate([vangerven.Y_train, vangerven.Y_test])))) == 100
    assert count_seen(miyawaki.Y_train, miyawaki.Y_test) == 12
    assert len(np.unique(stimulus_groups(np.concatenate([miyawaki.Y_train, miyawaki.Y_test])))) == 20


def test_stimulus_groups_number_by_first_appearance():
    a, b = np.zeros((28, 28)), np.ones((28, 28))
    np.testing.assert_array_equal(stimulus_groups(np.stack([b, a, b, a, a])), [0, 1, 0, 1, 1])


def test_inner_validation_split():
    tr, va = inner_validation_split(90, 0.15, seed=0)
    tr2, va2 = inner_validation_split(90, 0.15, seed=0)
    np.testing.assert_array_equal(va, va2)
    assert len(va) == 14 and len(tr) == 76
    assert np.intersect1d(tr, va).size == 0 and len(np.union1d(tr, va)) == 90
    assert not np.array_equal(va, inner_validation_split(90, 0.15, seed=1)[1])
    with pytest.raises(ConfigError, match="at least 4"):
        inner_validation_split(3)
