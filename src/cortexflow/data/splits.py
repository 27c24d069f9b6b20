"""Train/test splits: official, seeded K-fold, and novel-stimulus group K-fold."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Iterator

import numpy as np
from sklearn.model_selection import GroupKFold, KFold

from cortexflow.exceptions import ConfigError

__all__ = [
    "Split",
    "SPLIT_KINDS",
    "stimulus_groups",
    "count_seen",
    "kfold_splits",
    "novel_stimulus_splits",
    "inner_validation_split",
]

SPLIT_KINDS = ("official", "kfold", "novel-stimulus")


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
