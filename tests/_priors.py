"""Test helpers for prior-backed estimators: a toy fitted prior, and fitting with the prior resolved first."""

from __future__ import annotations

import numpy as np

from cortexflow.methods.build import with_prior
from cortexflow.models.prior import PriorConfig
from cortexflow.training.prior import FittedPrior, train_prior


def toy_prior(images: np.ndarray, config: PriorConfig) -> FittedPrior:
    """A prior trained on ``images`` with ``config``, handed over as resolve_prior does (its corpus images set)."""
    model, stats = train_prior(images, config, progress=False)
    info = {"corpus": "toy", "corpus_checksum": "", "n_images": len(images), "n_dropped": 0, "threshold": 0.01,
            "cache_key": "toy", "from_cache": False, **stats}
    prior = FittedPrior(model, info)
    prior.corpus_images = images
    return prior


def fit_resolved(est, X, Y, stimuli=None):
    """``with_prior(est, stimuli).fit(X, Y)``; the guard set defaults to ``est.stimuli``, else the training images."""
    if stimuli is None:
        stimuli = est.stimuli if getattr(est, "stimuli", None) is not None else np.asarray(Y)
    return with_prior(est, stimuli).fit(X, Y)
