"""CortexFlow: reconstruct what a person saw from brain signals."""

from __future__ import annotations

import logging

from cortexflow._version import __version__
from cortexflow.data import fetch_dataset, list_datasets, load_dataset
from cortexflow.models.estimator import CCCV1Decoder

logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = ["__version__", "fetch_dataset", "list_datasets", "load_dataset", "CCCV1Decoder"]

