"""Train/test splits: official, seeded K-fold, stratified K-fold, and novel-stimulus group K-fold.

One function, :func:`split_indices`, gives the rows of one fold of any split
kind; :func:`iter_splits` gives every fold, :func:`split_data` the arrays and
:func:`resolve_folds` checks (and, for novel-stimulus, caps) the number of
folds before any work starts.

- ``official``: the data set's own training rows against its test rows
  (one fold; test indices point into the official *test* rows).
- ``kfold``: seeded, shuffled K-fold over the official training rows.
- ``novel-stimulus``: group K-fold over the official training rows in which
  no test image (by content) appears among the fold's training images.
- ``stratified``: seeded, shuffled K-fold over the official training rows
  that keeps each class's share in every fold (scikit-learn's
  ``StratifiedKFold(n_folds, shuffle=True, random_state=seed)``) over the
  rows' class labels: a dataset's ``labels_train``, or the ``labels`` of
  :class:`~cortexflow.data.eeg.EEGEpochs` (``cortexflow eeg evaluate``).

For ``kfold``, ``stratified`` and ``novel-stimulus`` test indices point into
the official *training* rows.

>>> import numpy as np
>>> images = np.repeat(np.eye(4, dtype=np.float32)[:, None, :].repeat(4, axis=1), 2, axis=0)
>>> train, test = split_indices(images, "novel-stimulus", fold=0, n_folds=2, seed=0)
>>> bool(np.isin(stimulus_groups(images)[test], stimulus_groups(images)[train]).any())
False
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
from sklearn.model_selection import GroupKFold, KFold, StratifiedKFold

from cortexflow.exceptions import ConfigError

__all__ = [
    "Split",
    "SPLIT_KINDS",
    "stimulus_groups",
    "count_seen",
    "kfold_splits",
    "novel_stimulus_splits",
    "stratified_splits",
    "split_labels",
    "inner_validation_split",
    "split_indices",
    "iter_splits",
    "split_data",
    "resolve_folds",
    "scored_images",
    "scored_slice",
]

SPLIT_KINDS = ("official", "kfold", "novel-stimulus", "stratified")

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Split:
    """Indices of one train/test split of the official training rows (or the official split)."""

    kind: str
    fold: int
    train: np.ndarray
    test: np.ndarray


def _image_key(img: np.ndarray) -> bytes:
    q = np.round(np.asarray(img, dtype=np.float64) * 255).astype(np.uint8)
    return hashlib.sha1(q.tobytes()).digest()


def stimulus_groups(images: np.ndarray) -> np.ndarray:
    """Group id per image: images identical in content (at 8-bit precision) share an id.

    Ids are numbered in order of first appearance.
    """
    seen: dict[bytes, int] = {}
    out = np.empty(len(images), dtype=np.int64)
    for i, img in enumerate(images):
        out[i] = seen.setdefault(_image_key(img), len(seen))
    return out


def count_seen(train_images: np.ndarray, test_images: np.ndarray) -> int:
    """How many test images also appear (identical in content) among the training images."""
    train_keys = {_image_key(img) for img in train_images}
    return int(sum(_image_key(img) in train_keys for img in test_images))


def kfold_splits(n_samples: int, n_splits: int = 10, seed: int = 0) -> Iterator[Split]:
    """Seeded, shuffled K-fold over ``n_samples`` rows."""
    if not 2 <= n_splits <= n_samples:
        raise ConfigError(f"n_splits={n_splits} must lie between 2 and n_samples={n_samples}")
    kf = KFold(n_splits=n_splits, shuffle=True, random_state=seed)
    for fold, (tr, te) in enumerate(kf.split(np.zeros(n_samples))):
        yield Split("kfold", fold, tr, te)


def novel_stimulus_splits(images: np.ndarray, n_splits: int = 10, seed: int = 0) -> Iterator[Split]:
    """Group K-fold in which no test image (by content) appears in the training fold."""
    groups = stimulus_groups(images)
    n_groups = len(np.unique(groups))
    if n_splits > n_groups:
        raise ConfigError(
            f"novel-stimulus split asks for {n_splits} folds but there are only {n_groups} unique stimuli"
        )
    gkf = GroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    for fold, (tr, te) in enumerate(gkf.split(np.zeros(len(images)), groups=groups)):
        yield Split("novel-stimulus", fold, tr, te)


def split_labels(data: Any) -> np.ndarray:
    """Class label of every row the ``stratified`` split divides (``labels`` of epochs, ``labels_train`` of a dataset).

    Raises
    ------
    ConfigError
        ``data`` carries no class labels.
    """
    for attr in ("labels", "labels_train"):
        labels = getattr(data, attr, None)
        if labels is not None:
            return np.asarray(labels)
    raise ConfigError(f"the stratified split needs class labels; {getattr(data, 'name', type(data).__name__)} "
                      "has none (no labels or labels_train)")


def stratified_splits(labels: np.ndarray, n_splits: int = 5, seed: int = 0) -> Iterator[Split]:
    """Seeded, shuffled stratified K-fold over rows with class ``labels`` (each class split over the folds)."""
    labels = np.asarray(labels)
    counts = np.unique(labels, return_counts=True)[1]
    smallest = int(counts.min()) if len(counts) else 0
    if not 2 <= int(n_splits) <= smallest:
        raise ConfigError(f"--folds {n_splits}: stratified folds need 2 <= folds <= the smallest class's trial "
                          f"count ({smallest})")
    skf = StratifiedKFold(int(n_splits), shuffle=True, random_state=seed)
    for fold, (tr, te) in enumerate(skf.split(np.zeros(len(labels)), labels)):
        yield Split("stratified", fold, tr, te)


def _group_kfold_splits(groups: np.ndarray, n_splits: int, seed: int) -> Iterator[Split]:
    """``kfold`` of a data set whose trials carry a run/session group: no group is split across train and test."""
    n_groups = len(np.unique(groups))
    if not 2 <= n_splits <= n_groups:
        raise ConfigError(f"--folds {n_splits}: the kfold split keeps runs/sessions (the spec's group column) apart, "
                          f"and there are {n_groups}; use between 2 and {n_groups} folds")
    gkf = GroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    for fold, (tr, te) in enumerate(gkf.split(np.zeros(len(groups)), groups=groups)):
        yield Split("kfold", fold, tr, te)


def inner_validation_split(n_samples: int, fraction: float = 0.15, seed: int = 0, min_val: int = 2):
    """Carve a validation subset out of training rows with a fixed seed.

    Returns
    -------
    train_idx, val_idx : ndarray
    """
    if n_samples < 2 * min_val:
        raise ConfigError(f"need at least {2 * min_val} training rows for an inner validation split; got {n_samples}")
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n_samples)
    n_val = max(min_val, int(round(fraction * n_samples)))
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def _train_images(data: Any) -> np.ndarray:
    return np.asarray(data.Y_train) if hasattr(data, "Y_train") else np.asarray(data)


def _check_kind(kind: str) -> None:
    if kind not in SPLIT_KINDS:
        raise ConfigError(f"unknown split {kind!r}; allowed: {', '.join(SPLIT_KINDS)}")


def iter_splits(data: Any, kind: str, n_folds: int = 10, seed: int = 0) -> Iterator[Split]:
    """Every fold of one split kind.

    Parameters
    ----------
    data : Dataset or ndarray
        A dataset (with ``Y_train`` and ``Y_test``), or the official training
        images (n, H, W) or (n, H, W, C) for ``kfold`` and ``novel-stimulus``.
    kind : {"official", "kfold", "novel-stimulus", "stratified"}
    n_folds : int
        Folds of ``kfold``, ``stratified`` and ``novel-stimulus`` (ignored by ``official``).
    seed : int
        Seed of the fold assignment.

    Yields
    ------
    Split
    """
    _check_kind(kind)
    if kind == "official":
        if not hasattr(data, "Y_test"):
            raise ConfigError("the official split needs a dataset (with Y_train and Y_test), not an image array")
        if len(data.Y_test) == 0:  # a spec without a split column (cortexflow.data.spec)
            raise ConfigError(f"{getattr(data, 'name', 'the dataset')} has no official test rows (no split column in "
                              "its trial table): only the kfold and novel-stimulus splits can be used")
        yield Split("official", 0, np.arange(len(data.Y_train)), np.arange(len(data.Y_test)))
    elif kind == "kfold":
        groups = (getattr(data, "metadata", None) or {}).get("groups_train")  # a spec's group column
        if groups is not None:
            yield from _group_kfold_splits(np.asarray(groups), n_folds, seed)
            return
        yield from kfold_splits(len(_train_images(data)), n_folds, seed)
    elif kind == "stratified":
        yield from stratified_splits(split_labels(data), n_folds, seed)
    else:
        yield from novel_stimulus_splits(_train_images(data), n_folds, seed)


def split_indices(data: Any, kind: str, fold: int = 0, n_folds: int = 10, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Training and test row indices of one fold.

    Parameters are those of :func:`iter_splits`, plus ``fold`` (0 for the
    official split).

    Returns
    -------
    train_idx, test_idx : ndarray of int
        ``test_idx`` indexes the official test rows for ``official`` and the
        official training rows otherwise (see :func:`scored_images`).

    Raises
    ------
    ConfigError
        Unknown kind, or a fold that does not exist.
    """
    folds = list(iter_splits(data, kind, n_folds, seed))
    if not 0 <= fold < len(folds):
        raise ConfigError(f"fold {fold} does not exist; the {kind} split has {len(folds)} fold(s)")
    s = folds[fold]
    return np.asarray(s.train, dtype=np.int64), np.asarray(s.test, dtype=np.int64)


def split_data(ds: Any, kind: str, fold: int = 0, n_folds: int = 10, seed: int = 0):
    """The arrays of one fold of a dataset.

    Returns
    -------
    X_train, Y_train, X_test, Y_test, test_idx : ndarray
    """
    train, test = split_indices(ds, kind, fold, n_folds, seed)
    if kind == "official":
        return ds.X_train, ds.Y_train, ds.X_test, ds.Y_test, test
    return ds.X_train[train], ds.Y_train[train], ds.X_train[test], ds.Y_train[test], test


def scored_slice(ds: Any, kind: str) -> slice:
    """Where the rows a split's test indices point into lie in the training rows followed by the test rows."""
    _check_kind(kind)
    n_train = len(ds.Y_train)
    return slice(n_train, None) if kind == "official" else slice(0, n_train)


def scored_images(ds: Any, kind: str) -> np.ndarray:
    """The images a split's test indices point into (official test rows, or official training rows)."""
    _check_kind(kind)
    return ds.Y_test if kind == "official" else ds.Y_train


def resolve_folds(train_images: np.ndarray, kind: str, n_folds: int, name: str = "dataset") -> tuple[int, list[str]]:
    """Number of folds a split will use, and notes about it, checked before any work.

    ``official`` has one fold (returned as 0, the ``n_folds`` recorded for it).
    ``kfold`` needs ``2 <= n_folds <= n_train``. ``novel-stimulus`` needs at
    least 2 unique training stimuli; asked for more folds than unique stimuli,
    it uses one fold per stimulus (leave-one-stimulus-out) and a note says so.

    Returns
    -------
    n_folds : int
    notes : list of str
    """
    _check_kind(kind)
    n_train = len(train_images)
    if kind == "official":
        return 0, []
    if kind in ("kfold", "stratified"):  # stratified: the class counts are checked by iter_splits
        if not 2 <= n_folds <= n_train:
            raise ConfigError(f"--folds {n_folds} must lie between 2 and the {n_train} training rows of {name}")
        return n_folds, []
    notes = []
    n_groups = len(np.unique(stimulus_groups(train_images)))
    if n_groups < 2:
        raise ConfigError(f"{name}: novel-stimulus needs at least 2 unique training stimuli; found {n_groups}")
    k = n_folds
    if n_groups == n_train:
        notes.append(f"{name}: every training stimulus is unique, so novel-stimulus measures "
                     "the same thing as kfold (generalisation to unseen images)")
    if n_folds > n_groups:
        k = n_groups
        notes.append(f"{name}: novel-stimulus asked for {n_folds} folds but its training rows hold only "
                     f"{n_groups} unique stimuli; using {n_groups} folds (leave-one-stimulus-out)")
        logger.warning(notes[-1])
    if k < 2:
        raise ConfigError(f"--folds {n_folds} must be at least 2")
    return k, notes
