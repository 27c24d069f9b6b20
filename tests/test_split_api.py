"""The one split API of ``cortexflow.data.splits``: every kind through one function."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from cortexflow.data.splits import (
    iter_splits,
    kfold_splits,
    novel_stimulus_splits,
    resolve_folds,
    scored_images,
    scored_slice,
    split_data,
    split_indices,
    stimulus_groups,
)
from cortexflow.exceptions import ConfigError


@pytest.fixture()
def ds():
    rng = np.random.default_rng(0)
    stims = rng.uniform(size=(5, 28, 28)).astype(np.float32)
    Y_train = stims[np.repeat(np.arange(4), 3)]  # 4 stimuli x 3 repeats
    return SimpleNamespace(X_train=rng.normal(size=(12, 7)), Y_train=Y_train,
                           X_test=rng.normal(size=(2, 7)), Y_test=stims[[4, 0]])


def test_official_split(ds):
    train, test = split_indices(ds, "official")
    np.testing.assert_array_equal(train, np.arange(12))
    np.testing.assert_array_equal(test, np.arange(2))
    X_tr, Y_tr, X_te, Y_te, idx = split_data(ds, "official")
    assert X_te is ds.X_test and Y_tr is ds.Y_train
    assert scored_images(ds, "official") is ds.Y_test
    np.testing.assert_array_equal(np.concatenate([ds.Y_train, ds.Y_test])[scored_slice(ds, "official")], ds.Y_test)
    with pytest.raises(ConfigError, match="needs a dataset"):
        split_indices(ds.Y_train, "official")


def test_kfold_and_novel_stimulus_match_their_generators(ds):
    for fold, s in enumerate(kfold_splits(12, 3, seed=1)):
        train, test = split_indices(ds.Y_train, "kfold", fold, 3, seed=1)
        np.testing.assert_array_equal(train, s.train)
        np.testing.assert_array_equal(test, s.test)
    groups = stimulus_groups(ds.Y_train)
    for fold, s in enumerate(novel_stimulus_splits(ds.Y_train, 2, seed=0)):
        train, test = split_indices(ds, "novel-stimulus", fold, 2, seed=0)
        np.testing.assert_array_equal(test, s.test)
        assert not set(groups[test]) & set(groups[train])
        X_tr, Y_tr, X_te, Y_te, idx = split_data(ds, "novel-stimulus", fold, 2, 0)
        np.testing.assert_array_equal(X_te, ds.X_train[test])
    assert [s.fold for s in iter_splits(ds, "kfold", 4, 0)] == [0, 1, 2, 3]
    assert scored_images(ds, "kfold") is ds.Y_train


def test_bad_kind_and_fold(ds):
    with pytest.raises(ConfigError, match="unknown split 'holdout'; allowed: official, kfold, novel-stimulus"):
        split_indices(ds, "holdout")
    with pytest.raises(ConfigError, match="fold 3 does not exist; the kfold split has 3 fold"):
        split_indices(ds, "kfold", 3, 3)


def test_resolve_folds(ds):
    assert resolve_folds(ds.Y_train, "official", 10) == (0, [])
    assert resolve_folds(ds.Y_train, "kfold", 5) == (5, [])
    with pytest.raises(ConfigError, match="--folds 13 must lie between 2 and the 12 training rows of toy"):
        resolve_folds(ds.Y_train, "kfold", 13, "toy")
    k, notes = resolve_folds(ds.Y_train, "novel-stimulus", 10, "toy")
    assert k == 4 and "only 4 unique stimuli; using 4 folds" in notes[0]
    with pytest.raises(ConfigError, match="at least 2 unique training stimuli"):
        resolve_folds(ds.Y_train[:3], "novel-stimulus", 2, "toy")


def test_stratified_split_is_scikit_learns_stratified_kfold_over_the_labels(ds):
    from sklearn.model_selection import StratifiedKFold

    from cortexflow.data.splits import SPLIT_KINDS, split_labels

    assert "stratified" in SPLIT_KINDS
    labeled = SimpleNamespace(**vars(ds), labels_train=np.repeat(np.arange(4), 3))
    want = list(StratifiedKFold(3, shuffle=True, random_state=2).split(np.zeros(12), labeled.labels_train))
    for fold, (tr, te) in enumerate(want):
        train, test = split_indices(labeled, "stratified", fold, 3, seed=2)
        np.testing.assert_array_equal(train, tr)
        np.testing.assert_array_equal(test, te)
        assert np.bincount(labeled.labels_train[test]).tolist() == [1, 1, 1, 1]  # one trial of each class
    epochs = SimpleNamespace(labels=np.array([0, 1] * 3))  # EEGEpochs carry .labels
    np.testing.assert_array_equal(split_labels(epochs), epochs.labels)
    assert len(list(iter_splits(epochs, "stratified", 3, 0))) == 3
    assert scored_images(labeled, "stratified") is labeled.Y_train
    with pytest.raises(ConfigError, match="smallest class's trial count \\(3\\)"):
        split_indices(labeled, "stratified", 0, 4)
    with pytest.raises(ConfigError, match="needs class labels"):
        split_indices(ds, "stratified", 0, 3)
