"""The benchmark methods that ship with CortexFlow, and the batched hook of ``cccv1``.

Each factory is called as ``factory(seed, dataset_name, n_train, fast=False,
**options)`` (see :mod:`cortexflow.benchmark.methods`). ``fast=True`` asks for
tiny settings (a pipeline check): :func:`fast_config` is the one place that
shrinks a CCCV1 configuration for it.

:func:`register` adds every built-in method; :mod:`cortexflow.benchmark` calls
it on import, so any process that can run a task (a worker of the local pool,
a Ray worker) has them.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any, Iterator, Sequence

from cortexflow.baselines.brain_diffuser_lite import BrainDiffuserLite
from cortexflow.baselines.mean_image import MeanImageDecoder
from cortexflow.baselines.mindvis_lite import MindVisLite
from cortexflow.baselines.ridge import RidgeDecoder
from cortexflow.benchmark.methods import METHODS, REFERENCE_METHOD, register_method
from cortexflow.benchmark.tasks import (
    Task,
    TaskResult,
    build_estimator,
    check_checksum,
    load_task_data,
    report_info,
    run_task,
    score_task,
    task_rows,
)
from cortexflow.exceptions import ConfigError
from cortexflow.models.eeg_estimator import EEGDecoder
from cortexflow.models.ensemble import CCCV1EnsembleDecoder
from cortexflow.models.estimator import CCCV1Decoder
from cortexflow.semantic.decoder import CCCV1SemanticDecoder
from cortexflow.semantic.encoders import DEFAULT_ENCODER
from cortexflow.training.batched import fit_many
from cortexflow.training.config import CCCV1Config, get_config

__all__ = [
    "fast_config",
    "cccv1_fit_predict_many",
    "cccv1_semantic_factory",
    "eeg_method_factory",
    "EEG_METHODS",
    "SEMANTIC_METHOD",
    "register",
]

#: name of the semantic-guidance method
SEMANTIC_METHOD = "cccv1-semantic"
#: EEG benchmark method name -> EEG front-end
EEG_METHODS: dict[str, str] = {
    "cccv1-eeg-shallow": "shallow",
    "cccv1-eeg-eegnet": "eegnet",
    "cccv1-eeg-flatten": "flatten",
}
_CONFIG_FIELDS = tuple(f.name for f in dataclasses.fields(CCCV1Config))


def fast_config(cfg: CCCV1Config) -> CCCV1Config:
    """The tiny version of a configuration used by ``fast=True`` (smoke runs; its numbers are no results)."""
    return cfg.replace(epochs=2, patience=1, hidden_dim=64, embed_dim=32)


def _auto_config(dataset_name: str, n_train: int, fast: bool, overrides: dict) -> CCCV1Config:
    cfg = get_config("auto", n_train=n_train, dataset=dataset_name, **overrides)
    return fast_config(cfg) if fast else cfg


def _params(cls: type) -> tuple[str, ...]:
    return tuple(k for k in cls().get_params() if k != "random_state")


# ---------------------------------------------------------------- factories
def _mean_image(seed: int, dataset_name: str, n_train: int, *, fast: bool = False):
    return MeanImageDecoder(random_state=seed)


def _ridge(seed: int, dataset_name: str, n_train: int, *, fast: bool = False, **options):
    return RidgeDecoder(random_state=seed, **options)


def _cccv1(seed: int, dataset_name: str, n_train: int, *, fast: bool = False, device: str = "auto",
           n_members: int = 1, **overrides):
    cfg = _auto_config(dataset_name, n_train, fast, overrides)
    if n_members != 1:  # mean image of n_members seeds, trained together by the batched trainer
        return CCCV1EnsembleDecoder(n_members, config=cfg, dataset=dataset_name, random_state=seed, device=device)
    return CCCV1Decoder(config=cfg, dataset=dataset_name, random_state=seed, device=device)


def _brain_diffuser_lite(seed: int, dataset_name: str, n_train: int, *, fast: bool = False, **options):
    if fast:
        options = {"vae_epochs": 3, "denoiser_epochs": 3, "patience": 2, "steps": 2, **options}
    return BrainDiffuserLite(random_state=seed, **options)


def _mindvis_lite(seed: int, dataset_name: str, n_train: int, *, fast: bool = False, **options):
    if fast:
        options = {"pretrain_epochs": 2, "finetune_epochs": 2, "patience": 1, "dim": 16, "depth": 1, **options}
    return MindVisLite(random_state=seed, **options)


def cccv1_semantic_factory(seed: int, dataset_name: str, n_train: int, *, fast: bool = False, device: str = "auto",
                           encoder: str = DEFAULT_ENCODER, layers: Any = None, head_dim: int = 512,
                           cache_dir: str | None = None, **overrides):
    """Factory of ``cccv1-semantic``: ``CCCV1SemanticDecoder`` with the dataset's ``"auto"`` configuration.

    ``head_dim`` is the width of the semantic projection heads; ``overrides`` are CCCV1Config fields
    (``hidden_dim`` there is the CCCV1 encoder's width; for example
    ``loss_weights={"semantic_infonce": 0.05, "semantic_cosine": 0.1}``).
    ``fast`` shrinks the network and the training as the ``cccv1`` method does.
    """
    cfg = _auto_config(dataset_name, n_train, fast, overrides)
    if fast:
        head_dim = min(int(head_dim), 64)
    return CCCV1SemanticDecoder(config=cfg, dataset=dataset_name, random_state=seed, device=device,
                                encoder=encoder, layers=layers, head_dim=head_dim, cache_dir=cache_dir)


def eeg_method_factory(frontend: str, seed: int, dataset_name: str, n_train: int, *, fast: bool = False,
                       device: str = "auto", n_channels: int | None = None, sfreq: float | None = None,
                       frontend_params: dict | None = None, clip: float | None = 20.0, **overrides: Any) -> EEGDecoder:
    """Factory of the ``cccv1-eeg-*`` methods: an :class:`EEGDecoder` with the given front-end.

    The configuration is the ``"auto"`` choice for the dataset (or its size),
    with ``overrides`` applied. ``n_channels`` and ``sfreq`` tell the decoder
    how the dataset's rows are laid out (rows of ``n_channels * n_times`` values).
    """
    cfg = _auto_config(dataset_name, n_train, fast, overrides)
    return EEGDecoder(frontend=frontend, frontend_params=frontend_params, n_channels=n_channels, sfreq=sfreq,
                      clip=clip, config=cfg, dataset=dataset_name, random_state=seed, device=device)


# ---------------------------------------------------------------- batched hook
def cccv1_fit_predict_many(tasks: Sequence[Task], *, progress: bool | None = False,
                           max_group: int | None = None) -> Iterator[TaskResult]:
    """The batched hook of ``cccv1``: train the folds x seeds of each group together.

    Each (dataset, split, options) group trains with
    :func:`cortexflow.training.batched.fit_many` (each member built by the
    method's own factory, so configuration, device and seed are those of the
    one-by-one path) and yields one :class:`TaskResult` per task, scored
    exactly as :func:`~cortexflow.benchmark.tasks.run_task` scores. A task's
    ``fit_seconds`` is its group's training time divided by the group size.
    Tasks whose estimator cannot train batched (extra loss terms, another
    network) fall back to ``run_task``.
    """
    groups: dict[tuple, list[Task]] = {}
    for t in tasks:
        groups.setdefault(t.group_key, []).append(t)
    for group in groups.values():
        t0 = group[0]
        ds = load_task_data(t0.dataset, t0.data_dir)
        check_checksum(t0, ds)
        members, fallback = [], []
        for t in group:
            rows = task_rows(ds, t)
            est = build_estimator(t, ds, len(rows[0]))
            if type(est) is CCCV1Decoder and not est.loss_terms:
                members.append((t, est, rows))
            else:
                fallback.append(t)
        if members:
            devices = {est.device for _, est, _ in members}
            if len(devices) > 1:
                raise ConfigError(f"batched tasks of one group ask for different devices {sorted(devices)}")
            amp = dict(t0.train).get("amp", "off")
            w0 = time.perf_counter()
            decs = fit_many([r[0] for _, _, r in members], [r[1] for _, _, r in members],
                            [est.random_state for _, est, _ in members], config=[est.config for _, est, _ in members],
                            dataset=t0.dataset_name, device=devices.pop(), amp=amp, progress=progress,
                            max_group=max_group)
            fit_s = (time.perf_counter() - w0) / len(members)
            for (t, _, (_, _, X_te, Y_te, test_index, stim)), dec in zip(members, decs):
                p0 = time.perf_counter()
                pred = dec.predict(X_te)
                res = score_task(t, pred, Y_te, test_index, stim, fit_s, time.perf_counter() - p0)
                res.info = report_info(dec, t)
                yield res
        for t in fallback:
            yield run_task(t)


def _cccv1_many(tasks: Sequence[Task], *, progress: bool | None = False) -> Iterator[TaskResult]:
    return cccv1_fit_predict_many(tasks, progress=progress)


# ---------------------------------------------------------------- registration
def register(overwrite: bool = False) -> list[str]:
    """Register every built-in method not registered yet (idempotent); return the names registered."""
    entries = [
        ("mean-image", _mean_image, dict(description="mean training image for every signal (the floor)")),
        ("ridge", _ridge, dict(options=_params(RidgeDecoder),
                               description="ridge from z-scored signal to pixels, penalty by inner leave-one-out CV")),
        (REFERENCE_METHOD, _cccv1, dict(supports_batched=True, fit_predict_many=_cccv1_many, options=_CONFIG_FIELDS,
                                        description="CCCV1Decoder(config='auto', dataset=name)")),
        ("brain-diffuser-lite", _brain_diffuser_lite, dict(
            options=_params(BrainDiffuserLite),
            description="VAE-latent ridge + feature-conditioned denoiser from the stage-1 image")),
        ("mindvis-lite", _mindvis_lite, dict(
            options=_params(MindVisLite),
            description="masked signal modelling pretraining + conditioned image decoder, fine-tuned")),
        (SEMANTIC_METHOD, cccv1_semantic_factory, dict(
            in_all=False, extra="semantic",
            options=_CONFIG_FIELDS,
            description="CCCV1 + CLIP-style InfoNCE and cosine alignment of its embedding to EfficientNet-Lite0 "
                        "features (block10 + final), pixel MSE unchanged")),
    ]
    for name, fe in EEG_METHODS.items():
        entries.append((name, functools.partial(eeg_method_factory, fe), dict(
            in_all=False, options=_CONFIG_FIELDS,
            description=f"EEGDecoder: {fe} EEG front-end + CCCV1 (rows reshaped to n_channels x n_times)")))
    done = []
    for name, factory, kw in entries:
        if name in METHODS and not overwrite:
            continue
        register_method(name, factory, overwrite=overwrite, **kw)
        done.append(name)
    return done
