"""Image priors learned from external corpora of images, never from evaluation data.

* :mod:`~cortexflow.priors.corpora`: registered, checksummed corpora
  (``mnist-t10k``, ``miyawaki-patterns``, ``font-letters``) and each data
  set's default prior.
* :mod:`~cortexflow.priors.guard`: drops corpus images that nearly copy a
  stimulus of the data set a prior is used on.
* :mod:`~cortexflow.priors.models`: the convolutional autoencoder / VAE
  (:class:`ImagePrior`) with a unit-norm embedding and a multi-resolution decoder.
* :mod:`~cortexflow.priors.training`: :func:`get_prior`, training and the
  on-disk cache.
* :mod:`~cortexflow.priors.ridge_prior`: the ``ridge-prior`` method.
"""

from cortexflow.priors.corpora import (
    Corpus,
    CorpusInfo,
    default_prior,
    get_corpus_info,
    list_corpora,
    load_corpus,
)
from cortexflow.priors.guard import DEFAULT_THRESHOLD, dataset_stimuli, drop_near_duplicates
from cortexflow.priors.models import ImagePrior, PriorConfig
from cortexflow.priors.training import FittedPrior, get_prior, prior_cache_dir

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
