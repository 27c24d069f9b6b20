"""Describe a loaded dataset: shapes, unique stimuli, overlap between splits."""

from __future__ import annotations

from typing import Any

import numpy as np

from cortexflow.data.fetch import checksum_status
from cortexflow.data.loading import BrainDataset
from cortexflow.data.registry import DATASETS
from cortexflow.data.splits import count_seen, stimulus_groups

__all__ = ["describe_dataset"]


def describe_dataset(ds: BrainDataset) -> dict[str, Any]:
    """Summary used by ``cortexflow datasets info``.

    Returns
    -------
    dict
        ``n_train``, ``n_test``, ``n_features``, ``n_unique_stimuli`` (over both
        splits), ``n_test_seen_in_train``, ``checksum`` (``ok``/``mismatch`` for
        registered datasets, ``unregistered`` otherwise), labels, caveats, ...
    """
    all_imgs = np.concatenate([ds.Y_train, ds.Y_test])
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
        "labels": sorted(int(v) for v in np.unique(ds.labels_train)) if ds.labels_train is not None else None,
        "pixel_order": ds.metadata.get("pixel_order"),
        "modality": ds.metadata.get("modality"),
        "caveats": ds.metadata.get("caveats", []),
        "format_tests_only": ds.metadata.get("format_tests_only", False),
    }
    if info:
        out["url"] = info.url
        out["citation"] = info.citation
        out["licence"] = info.licence
    return out
