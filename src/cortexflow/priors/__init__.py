"""The prior-backed methods, and the image-prior API re-exported from the layers that hold it.

Methods (the methods layer, beside ``baselines``):

* :mod:`~cortexflow.priors.ridge_prior`: ``ridge-prior`` and ``ridge-prior-stacked``;
* :mod:`~cortexflow.priors.cccv1_prior`: ``cccv1-prior`` and its ablations;
* :mod:`~cortexflow.priors.baselines`: ``brain-diffuser-prior``, ``mindvis-prior``;
* :mod:`~cortexflow.priors.persistence`: their checkpoint state types.

The prior itself lives in its layers: corpora, generators and the near-duplicate
guard in :mod:`cortexflow.data` (``corpora``, ``generators``, ``guard``), the
network in :mod:`cortexflow.models.prior`, its training and verified cache in
:mod:`cortexflow.training.prior` (member training of ``cccv1-prior`` in
:mod:`cortexflow.training.prior_members`). Image priors are learned from
external corpora of images, never from evaluation data.
"""

from cortexflow.data.corpora import (
    Corpus,
    CorpusInfo,
    default_prior,
    get_corpus_info,
    list_corpora,
    load_corpus,
)
from cortexflow.data.guard import DEFAULT_THRESHOLD, dataset_stimuli, drop_near_duplicates
from cortexflow.models.prior import ImagePrior, PriorConfig
from cortexflow.training.prior import FittedPrior, get_prior, prior_cache_dir

__all__ = [
    "Corpus",
    "CorpusInfo",
    "default_prior",
    "get_corpus_info",
    "list_corpora",
    "load_corpus",
    "DEFAULT_THRESHOLD",
    "dataset_stimuli",
    "drop_near_duplicates",
    "ImagePrior",
    "PriorConfig",
    "FittedPrior",
    "get_prior",
    "prior_cache_dir",
]
