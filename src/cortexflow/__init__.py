"""CortexFlow: reconstruct what a person saw from brain signals."""

from __future__ import annotations

import logging

__version__ = "0.1.0"

from cortexflow.data import fetch_dataset, list_datasets, load_dataset  # noqa: E402

logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = ["__version__", "fetch_dataset", "list_datasets", "load_dataset", "CCCV1Decoder"]


def __getattr__(name):  # lazy: importing torch models only when asked
    if name == "CCCV1Decoder":
        from cortexflow.models.estimator import CCCV1Decoder

        return CCCV1Decoder
    raise AttributeError(f"module 'cortexflow' has no attribute {name!r}")
