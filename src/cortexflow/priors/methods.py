"""Benchmark registration of the prior methods (``ridge-prior``).

:func:`register` is listed in ``cortexflow.benchmark.methods.BUILTIN_PLUGINS``.
The factories follow ``factory(seed, dataset_name, n_train, *, fast=False,
stimuli=None, **options)``: ``stimuli`` holds every stimulus of the data set
(train and test) for the near-duplicate guard; when the runner does not pass
it, a registered data set's stimuli are loaded by the estimator itself.
"""

from __future__ import annotations

from typing import Any

from cortexflow.benchmark.methods import METHODS, register_method
import cortexflow.priors.learned_methods as learned_methods
from cortexflow.priors.ridge_prior import RidgePriorDecoder

__all__ = ["register", "FAST_PRIOR_CONFIG", "ridge_prior_factory", "ridge_prior_stacked_factory"]

#: Tiny prior for ``fast=True`` runs (tests, smoke runs): 500 images, 1 epoch, 32-d.
FAST_PRIOR_CONFIG = {"epochs": 1, "max_images": 500, "embed_dim": 32, "widths": [8, 16, 32]}


def ridge_prior_factory(seed: int, dataset_name: str, n_train: int, *, fast: bool = False, stimuli=None,
                        **options: Any) -> RidgePriorDecoder:
    """Unfitted :class:`RidgePriorDecoder` for the benchmark (``options`` are its parameters)."""
    if fast:
        options = {"prior_config": dict(FAST_PRIOR_CONFIG), "n_samples": 4, "residual_grid": [0.0, 0.5], **options}
    return RidgePriorDecoder(dataset=dataset_name, stimuli=stimuli, random_state=seed, **options)


def ridge_prior_stacked_factory(seed: int, dataset_name: str, n_train: int, *, fast: bool = False, stimuli=None,
                                **options: Any) -> RidgePriorDecoder:
    """``ridge-prior`` with ``pixel_blend="auto"``: stacked with pixel ridge (weight chosen on the training rows)."""
    return ridge_prior_factory(seed, dataset_name, n_train, fast=fast, stimuli=stimuli,
                               **{"pixel_blend": "auto", **options})


def register() -> None:
    """Register the prior methods with the benchmark (idempotent)."""
    learned_methods.register()
    if "ridge-prior" not in METHODS:
        register_method(
            "ridge-prior",
            ridge_prior_factory,
            version="2",  # 2: hybrid decoding (prior posterior mean + corpus neighbours), inner folds by image
            description="ridge from z-scored signal to an image prior's embedding (penalty by inner LOO CV), "
            "decoded by the prior and its corpus (option prior=CORPUS; default: the data set's)",
        )
    if "ridge-prior-stacked" not in METHODS:
        register_method(
            "ridge-prior-stacked",
            ridge_prior_stacked_factory,
            version="1",
            description="ridge-prior averaged with pixel ridge, the weight chosen from 0, 0.25, ..., 1 by the "
            "training rows' out-of-fold MSE (pixel_blend='auto')",
        )
