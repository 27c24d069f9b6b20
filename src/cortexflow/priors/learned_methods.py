"""Benchmark factories of the learned prior-backed methods: ``cccv1-prior`` (and its variants).

:func:`register` is called by :func:`cortexflow.priors.methods.register`. Every
factory follows ``factory(seed, dataset_name, n_train, *, fast=False,
stimuli=None, **options)``; ``stimuli`` (all stimuli of the data set, for the
near-duplicate guard) may be None, and a registered data set's stimuli are then
loaded by the estimator (:func:`cortexflow.priors.ridge_prior.guard_stimuli`).
``fast=True`` shrinks the prior (:data:`FAST_PRIOR_CONFIG`) and the training
so that a fit takes about a second (tests and smoke runs only).
"""

from __future__ import annotations

from typing import Any

from cortexflow.benchmark.methods import METHODS, make_estimator, register_method
from cortexflow.priors.baselines import BrainDiffuserPrior, MindVisPrior
from cortexflow.priors.cccv1_prior import CCCV1PriorDecoder
from cortexflow.training.config import get_config

__all__ = ["register", "cccv1_prior_factory", "cccv1_ensemble_factory", "brain_diffuser_prior_factory",
           "mindvis_prior_factory", "FAST_PRIOR_CONFIG", "CCCV1_PRIOR_VERSION"]

#: Tiny prior for ``fast=True`` runs: 500 images, 1 epoch, 32-d (the same as ``ridge-prior``'s).
FAST_PRIOR_CONFIG = {"epochs": 1, "max_images": 500, "embed_dim": 32, "widths": [8, 16, 32]}
CCCV1_PRIOR_VERSION = "3"  # 2: posterior-mean decoding, 40 epochs / patience 8; 3: hybrid decoding

_ESTIMATOR_OPTIONS = ("prior", "encoder", "n_members", "ridge_skip", "gate_init", "residual_scale", "decoding", "knn",
                      "pixel_blend", "finetune_decoder",
                      "finetune_lr_factor", "prior_config", "threshold", "data_dir", "cache_dir", "device", "amp",
                      "batched")


def cccv1_prior_factory(seed: int, dataset_name: str, n_train: int, *, fast: bool = False, stimuli=None,
                        **options: Any) -> CCCV1PriorDecoder:
    """Unfitted :class:`CCCV1PriorDecoder` with the data set's training preset.

    ``options`` are the estimator's parameters (``prior``, ``encoder``,
    ``n_members``, ``ridge_skip``, ``finetune_decoder``, ...) and
    :class:`~cortexflow.training.CCCV1Config` fields (``lr``, ``dropout_encoder``,
    ``loss_weights``, ...), which override the preset.
    """
    est_opts = {k: options.pop(k) for k in list(options) if k in _ESTIMATOR_OPTIONS}
    # shorter schedule than cccv1's preset: on vangerven's training rows (inner 5-fold CV) 40 epochs with
    # patience 8 scored the same as the preset's 150 / 20 at a third of the time
    options = {"epochs": 40, "patience": 8, **options}
    cfg = get_config("auto", n_train=n_train, dataset=dataset_name, **options)
    if fast:
        cfg = cfg.replace(epochs=2, patience=1, hidden_dim=64)
        est_opts.setdefault("prior_config", dict(FAST_PRIOR_CONFIG))
    return CCCV1PriorDecoder(dataset=dataset_name, config=cfg, stimuli=stimuli, random_state=seed, **est_opts)


def cccv1_ensemble_factory(seed: int, dataset_name: str, n_train: int, *, fast: bool = False, stimuli=None,
                           n_members: int = 5, **options: Any):
    """``cccv1`` with ``n_members`` seeds (default 5) trained together by the batched trainer, mean image."""
    return make_estimator("cccv1", seed, dataset_name, n_train, fast=fast, n_members=n_members, **options)


def _variant(fixed: dict):
    """A ``cccv1-prior`` factory with some options fixed (the ablation variants)."""

    def factory(seed: int, dataset_name: str, n_train: int, *, fast: bool = False, stimuli=None, **options: Any):
        return cccv1_prior_factory(seed, dataset_name, n_train, fast=fast, stimuli=stimuli, **{**fixed, **options})

    return factory


_PRIOR_PARAMS = ("prior", "prior_config", "threshold", "data_dir", "cache_dir")


def _prior_variant(cls, base: str, seed: int, dataset_name: str, n_train: int, fast: bool, stimuli, options: dict):
    """``cls`` with the parameters of the registered ``base`` method's estimator (fast settings included)."""
    prior_opts = {k: options.pop(k) for k in list(options) if k in _PRIOR_PARAMS}
    if fast:
        prior_opts.setdefault("prior_config", dict(FAST_PRIOR_CONFIG))
    params = make_estimator(base, seed, dataset_name, n_train, fast=fast, **options).get_params()
    return cls(dataset=dataset_name, stimuli=stimuli, **prior_opts, **params)


def brain_diffuser_prior_factory(seed: int, dataset_name: str, n_train: int, *, fast: bool = False, stimuli=None,
                                 **options: Any) -> BrainDiffuserPrior:
    """Unfitted :class:`BrainDiffuserPrior`: ``brain-diffuser-lite``'s settings plus the prior options."""
    return _prior_variant(BrainDiffuserPrior, "brain-diffuser-lite", seed, dataset_name, n_train, fast, stimuli,
                          options)


def mindvis_prior_factory(seed: int, dataset_name: str, n_train: int, *, fast: bool = False, stimuli=None,
                          **options: Any) -> MindVisPrior:
    """Unfitted :class:`MindVisPrior`: ``mindvis-lite``'s settings plus the prior options."""
    return _prior_variant(MindVisPrior, "mindvis-lite", seed, dataset_name, n_train, fast, stimuli, options)


def register() -> None:
    """Register ``cccv1-prior``, ``cccv1-ensemble``, ``brain-diffuser-prior`` and ``mindvis-prior`` (idempotent)."""
    if "cccv1-ensemble" not in METHODS:
        register_method(
            "cccv1-ensemble", cccv1_ensemble_factory, version="1", in_all=False,
            description="cccv1 with n_members=5 seeds trained together by the batched trainer; mean image",
        )
    if "cccv1-prior" not in METHODS:
        register_method(
            "cccv1-prior", cccv1_prior_factory, version=CCCV1_PRIOR_VERSION, needs_stimuli=True,
            description="CCCV1 encoder trained into an image prior's embedding space (cosine + InfoNCE to the "
                        "prior's embeddings, pixel MSE through the prior's frozen decoder), plus a fixed ridge "
                        "read-out; option prior=CORPUS (default: the data set's), encoder=mlp|attention, n_members",
        )
    for name, opts, what in (("cccv1-prior-ensemble", {"n_members": 5}, "5 members (seeds) trained together by "
                              "the batched trainer, mean image"),
                             ("cccv1-prior-attention", {"encoder": "attention"}, "self-attention encoder over 32 "
                              "groups of voxels instead of the MLP")):
        if name not in METHODS:
            register_method(name, _variant(opts), version=CCCV1_PRIOR_VERSION, in_all=False, needs_stimuli=True,
                            description=f"cccv1-prior with {what} (ablation)")
    if "brain-diffuser-prior" not in METHODS:
        register_method(
            "brain-diffuser-prior", brain_diffuser_prior_factory, version="1", needs_stimuli=True,
            description="brain-diffuser-lite with an external image prior as stage-1 image model and stage-2 "
                        "features (option prior=CORPUS); brain-diffuser-lite itself is unchanged",
        )
    if "mindvis-prior" not in METHODS:
        register_method(
            "mindvis-prior", mindvis_prior_factory, version="1", needs_stimuli=True,
            description="mindvis-lite whose image decoder renders through an external image prior's frozen "
                        "decoder (option prior=CORPUS); mindvis-lite itself is unchanged",
        )
