"""Test helper: fit a prior-backed estimator built by hand, its prior resolved first (estimators do no I/O)."""

from __future__ import annotations

import numpy as np

from cortexflow.methods.build import with_prior


def fit_resolved(est, X, Y, stimuli=None):
    """``with_prior(est, stimuli).fit(X, Y)``; the guard set defaults to ``est.stimuli``, else the training images."""
    if stimuli is None:
        stimuli = est.stimuli if getattr(est, "stimuli", None) is not None else np.asarray(Y)
    return with_prior(est, stimuli).fit(X, Y)
