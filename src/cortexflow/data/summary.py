"""Describe a loaded dataset: shapes, unique stimuli, overlap between splits."""

from __future__ import annotations

import hashlib
import logging
from typing import Any

import numpy as np

from cortexflow.data.fetch import checksum_status
from cortexflow.data.loading import BrainDataset
from cortexflow.data.registry import DATASETS
from cortexflow.data.splits import count_seen, stimulus_groups

__all__ = ["describe_dataset", "count_copied_signals"]

logger = logging.getLogger(__name__)


def _row_digests(X: np.ndarray) -> list[bytes]:
    a = np.ascontiguousarray(np.asarray(X, dtype=np.float32).reshape(len(X), -1))
    return [hashlib.sha1(row.tobytes()).digest() for row in a]


def count_copied_signals(X_train: np.ndarray, X_test: np.ndarray) -> int:
    """Number of test signal rows that are exact copies (as float32) of a training signal row.

    A copied row leaks the training data into the test split: a decoder can
    score well on it by memorising, whatever its stimulus.
    """
    train = set(_row_digests(X_train))
    return int(sum(d in train for d in _row_digests(X_test)))


def describe_dataset(ds: BrainDataset) -> dict[str, Any]:
    """Summary used by ``cortexflow datasets info``.

    Returns
    -------
    dict
        ``n_train``, ``n_test``, ``n_features``, ``n_unique_stimuli`` (over both
        splits), ``n_test_seen_in_train`` (test stimuli shown in training),
        ``n_test_signals_in_train`` (test signal rows that copy a training row), ``checksum`` (``ok``/``mismatch`` for
        registered datasets, ``unregistered`` otherwise), labels, caveats, ...
    """
    all_imgs = np.concatenate([ds.Y_train, ds.Y_test])
    copied = count_copied_signals(ds.X_train, ds.X_test)
    caveats = list(ds.metadata.get("caveats", []))
    if copied:
        msg = (f"{copied} of {len(ds.X_test)} test signal rows are exact copies of training rows (train/test "
               "leakage: test scores of this split are not about new data)")
        logger.warning("%s: %s", ds.name, msg)
        caveats.append(msg)
    info = DATASETS.get(ds.name) if ds.metadata.get("registered") else None
    out: dict[str, Any] = {
        "name": ds.name,
        "source": ds.metadata.get("source"),
        "sha256": ds.metadata.get("sha256"),
        "checksum": checksum_status(ds.metadata["source"], info) if info else "unregistered",
        "n_train": int(len(ds.X_train)),
        "n_test": int(len(ds.X_test)),
        "n_features": ds.n_features,
        "image_shape": list(ds.Y_train.shape[1:]),
        "n_unique_stimuli": int(len(np.unique(stimulus_groups(all_imgs)))),
        "n_test_seen_in_train": count_seen(ds.Y_train, ds.Y_test),
        "n_test_signals_in_train": copied,
        "labels": sorted(int(v) for v in np.unique(ds.labels_train)) if ds.labels_train is not None else None,
        "pixel_order": ds.metadata.get("pixel_order"),
        "modality": ds.metadata.get("modality"),
        "caveats": caveats,
        "format_tests_only": ds.metadata.get("format_tests_only", False),
    }
    if info:
        out["url"] = info.url
        out["citation"] = info.citation
        out["licence"] = info.licence
    return out
