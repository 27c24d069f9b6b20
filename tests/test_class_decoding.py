"""Class-conditioned decoding of ``ridge-prior`` (``class_decoding``, :mod:`cortexflow.priors.class_decoding`)."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from cortexflow.exceptions import ConfigError, DataValidationError
from cortexflow.methods.build import make_estimator, scored_stimuli
from cortexflow.priors import PriorConfig, get_prior
from cortexflow.priors.class_decoding import (CLASS_MAPS, check_class_map, class_probabilities, fit_class_code,
                                              labels_of_stimuli)
from cortexflow.priors.ridge_prior import RidgePriorDecoder

TINY = PriorConfig(embed_dim=8, widths=(4, 8, 8), epochs=1, batch_size=32, max_images=120)


@pytest.fixture(scope="module")
def tiny_prior(tmp_path_factory):
    return get_prior("miyawaki-patterns", config=TINY, cache_dir=tmp_path_factory.mktemp("prior-cache"))


def _bars(n, rng, vertical):
    """Noisy bar images: horizontal (class 0 of the toy corpus) or vertical (class 1)."""
    out = np.zeros((n, 28, 28), dtype=np.float32)
    for i in range(n):
        pos = rng.integers(8, 20)
        if vertical:
            out[i, 4:24, pos - 2:pos + 2] = 1.0
        else:
            out[i, pos - 2:pos + 2, 4:24] = 1.0
    return np.clip(out + 0.05 * rng.random(out.shape, dtype=np.float32), 0, 1)


@pytest.fixture(scope="module")
def toy(tiny_prior):
    """Signals that carry the class (labels 1 / 2) and a corpus of bars labeled 0 / 1 (plus unrelated class 7)."""
    rng = np.random.default_rng(0)
    n = 40
    labels = np.repeat([1, 2], n // 2)
    Y = np.concatenate([_bars(n // 2, rng, False), _bars(n // 2, rng, True)])
    X = np.outer(labels == 2, rng.normal(size=50)) * 3 + rng.normal(size=(n, 50))
    prior = copy.copy(tiny_prior)
    corpus = np.concatenate([_bars(30, rng, False), _bars(30, rng, True), rng.random((30, 28, 28), dtype=np.float32)])
    prior.corpus_images = corpus
    prior.corpus_labels = np.repeat([0, 1, 7], 30)
    order = rng.permutation(n)
    return X[order].astype(np.float32), Y[order], labels[order], prior


def _est(prior, **kw):
    kw = {"class_decoding": "knn", "class_map": {1: 0, 2: 1}, "n_samples": 4, "residual_grid": (0.0,), **kw}
    return RidgePriorDecoder(prior=prior, **kw)


def test_class_knn_uses_the_predicted_class(toy):
    X, Y, labels, prior = toy
    est = _est(prior).fit(X[:30], Y[:30], labels=labels[:30])
    assert est.class_cv_accuracy_ >= 0.9 and list(est.class_labels_) == [1, 2]
    P = est._class_proba(est.scaler_.transform(X[30:]).astype(np.float64))
    assert np.mean(est.class_labels_[P.argmax(1)] == labels[30:]) >= 0.9
    pred = est.predict(X[30:])
    assert pred.shape == (10, 28, 28) and pred.dtype == np.float32
    # the class's orientation shows: vertical bars put more mass in the middle columns than rows
    vert = pred[:, 4:24, 10:18].mean((1, 2)) - pred[:, 10:18, 4:24].mean((1, 2))
    truth = labels[30:] == 2
    assert np.all(vert[truth] > vert[~truth].max())
    assert est.report_info_["class_decoding"] == "knn"
    # no neighbour is ever drawn from the unrelated corpus class 7
    off = _est(prior, class_decoding="off").fit(X[:30], Y[:30])
    assert not hasattr(off, "class_labels_") and "class_decoding" not in off.report_info_


def test_knn_plus_prior_chooses_a_shrink_on_training_rows(toy):
    X, Y, labels, prior = toy
    est = _est(prior, class_decoding="knn+prior").fit(X[:30], Y[:30], labels=labels[:30])
    assert est.class_shrink_ in (0.0, 0.25, 0.5, 0.75) and set(est.class_shrink_cv_mse_) == {0.0, 0.25, 0.5, 0.75}
    assert est.predict(X[30:]).shape == (10, 28, 28)
    fixed = _est(prior, class_decoding="knn+prior", class_shrink=0.5).fit(X[:30], Y[:30], labels=labels[:30])
    assert fixed.class_shrink_ == 0.5


def test_labels_are_looked_up_in_labeled_stimuli(toy):
    X, Y, labels, prior = toy
    a = _est(prior).fit(X[:30], Y[:30], labels=labels[:30]).predict(X[30:])
    b = _est(prior, labeled_stimuli=(Y, labels)).fit(X[:30], Y[:30]).predict(X[30:])
    np.testing.assert_array_equal(a, b)
    flipped = labels.copy()
    flipped[30:] = 3 - flipped[30:]  # the held-out rows' labels in the table are never used
    c = _est(prior, labeled_stimuli=(Y, flipped)).fit(X[:30], Y[:30]).predict(X[30:])
    np.testing.assert_array_equal(a, c)
    with pytest.raises(DataValidationError, match="not among"):
        labels_of_stimuli(Y[:3] * 0.5, (Y[3:], labels[3:]))


def test_refusals_are_clear(toy, tiny_prior):
    X, Y, labels, prior = toy
    with pytest.raises(ConfigError, match="needs the training labels"):
        _est(prior).fit(X, Y)
    with pytest.raises(ConfigError, match="class_map"):
        _est(prior, class_map=None).fit(X, Y, labels=labels)
    with pytest.raises(ConfigError, match="not in class_map"):
        _est(prior, class_map={1: 0}).fit(X, Y, labels=labels)
    with pytest.raises(ConfigError, match="allowed"):
        _est(prior, class_decoding="soft").fit(X, Y, labels=labels)
    with pytest.raises(ConfigError, match="decoding='hybrid'"):
        _est(prior, decoding="prior").fit(X, Y, labels=labels)
    with pytest.raises(ConfigError, match="no image"):
        _est(prior, class_map={1: 0, 2: 5}).fit(X, Y, labels=labels)
    unlabeled = copy.copy(prior)
    unlabeled.corpus_labels = None
    with pytest.raises(ConfigError, match="labeled corpus"):
        _est(unlabeled).fit(X, Y, labels=labels)
    with pytest.raises(ConfigError, match="same corpus label"):
        check_class_map({1: 6, 2: 6})
    assert check_class_map({"1": 6, "2": "9"}) == {1: 6, 2: 9}
    with pytest.raises(ConfigError, match="no registered class map"):
        make_estimator("ridge-prior-class", 0, "my-file", 10, stimuli=Y, resolve=False)


def test_class_code_on_separable_signals():
    rng = np.random.default_rng(1)
    labels = np.repeat([3, 5], 20)
    A = rng.normal(size=(40, 6)) + 4 * (labels == 5)[:, None]
    folds = [(np.setdiff1d(np.arange(40), te), te) for te in np.array_split(rng.permutation(40), 5)]
    classes, coef, intercept, C, loss = fit_class_code(A, labels, folds)
    assert list(classes) == [3, 5] and C in loss
    P = class_probabilities(A, coef, intercept)
    assert np.allclose(P.sum(1), 1) and np.mean(classes[P.argmax(1)] == labels) == 1.0


def test_builder_hands_training_labels_only_and_test_rows_never_reach_training(vangerven, tiny_prior, monkeypatch):
    """The builder's label table is the official training rows; poisoned test rows change nothing."""
    import cortexflow.methods.build as build

    assert CLASS_MAPS["vangerven"] == {1: 6, 2: 9}
    monkeypatch.setattr(build, "dataset_training_labels",
                        lambda name, data_dir=None: (vangerven.Y_train, vangerven.labels_train))
    poisoned = copy.deepcopy(vangerven)
    poisoned.X_test[:] = np.nan
    poisoned.Y_test[:] = np.nan
    prior = copy.copy(tiny_prior)
    rng = np.random.default_rng(0)
    prior.corpus_images = rng.random((40, 28, 28), dtype=np.float32)
    prior.corpus_labels = np.repeat([6, 9], 20)
    preds = []
    for d in (vangerven, poisoned):
        est = make_estimator("ridge-prior-class", 0, "vangerven", len(d.X_train), stimuli=scored_stimuli(vangerven),
                             n_samples=4, residual_grid=[0.0], class_C=1.0, resolve=False).set_params(prior=prior)
        assert len(est.labeled_stimuli[1]) == len(vangerven.Y_train)
        preds.append(est.fit(d.X_train, d.Y_train).predict(vangerven.X_test))
    assert np.isnan(poisoned.X_test).all()
    np.testing.assert_array_equal(preds[0], preds[1])
    assert 0.5 <= est.class_cv_accuracy_ <= 1.0


def test_checkpoint_round_trip_keeps_the_class_code(toy, tmp_path):
    X, Y, labels, prior = toy
    est = _est(prior, class_decoding="knn+prior", class_shrink=0.25).fit(X[:30], Y[:30], labels=labels[:30])
    est.save(tmp_path / "ckpt")
    back = RidgePriorDecoder.load(tmp_path / "ckpt")
    np.testing.assert_allclose(back.predict(X[30:]), est.predict(X[30:]), atol=1e-6)
    assert back.class_shrink_ == 0.25 and list(back.class_labels_) == [1, 2]


def test_knn_weight_given_or_chosen_on_training_rows(toy):
    X, Y, labels, prior = toy
    half = _est(prior, class_decoding="off").fit(X[:30], Y[:30])
    assert half.knn_weight_ == 0.5 and "knn_weight" not in half.report_info_
    auto = _est(prior, class_decoding="off", knn_weight="auto").fit(X[:30], Y[:30])
    assert auto.knn_weight_ in (0.25, 0.5, 0.75, 1.0) and set(auto.knn_weight_cv_mse_) == {0.25, 0.5, 0.75, 1.0}
    assert auto.knn_weight_cv_mse_[auto.knn_weight_] == min(auto.knn_weight_cv_mse_.values())
    only_knn = _est(prior, class_decoding="off", knn_weight=1.0).fit(X[:30], Y[:30])
    np.testing.assert_allclose(only_knn.predict(X[30:]),
                               _est(prior, class_decoding="off", decoding="corpus-knn").fit(X[:30], Y[:30])
                               .predict(X[30:]), atol=1e-6)
    with pytest.raises(ConfigError, match="knn_weight"):
        _est(prior, knn_weight="most").fit(X[:30], Y[:30], labels=labels[:30])
