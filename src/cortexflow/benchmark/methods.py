"""Registry of benchmark methods: name -> factory of a scikit-learn-style estimator.

A factory is called as ``factory(seed, dataset_name, n_train, fast=False, **options)``
and returns an unfitted estimator with ``fit(X, Y)`` and ``predict(X) -> (n, 28, 28)``
in [0, 1]. It must make every choice (hyper-parameters, early stopping, penalties)
from the training rows it is given, and be deterministic given ``seed``.
``fast=True`` asks for tiny settings (tests and smoke runs only; results of a
fast run are keyed apart from full runs).

Other modules add methods with :func:`register_method`::

    from cortexflow.benchmark.methods import register_method
    register_method("my-method", my_factory, version="1")

and a batched trainer can register a ``fit_predict_many(tasks)`` hook that
fits every (fold, seed) task of one method at once (see
:mod:`cortexflow.benchmark.runner`). Installed packages can also declare an
entry point in the group ``cortexflow.methods`` whose object is a callable
that registers its methods; :func:`load_plugins` calls them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from cortexflow.exceptions import ConfigError

__all__ = [
    "MethodSpec",
    "METHODS",
    "register_method",
    "unregister_method",
    "get_method",
    "list_methods",
    "resolve_methods",
    "make_estimator",
    "load_plugins",
    "REFERENCE_METHOD",
]

logger = logging.getLogger(__name__)

Factory = Callable[..., Any]
REFERENCE_METHOD = "cccv1"


@dataclass(frozen=True)
class MethodSpec:
    """One registered method.

    Attributes
    ----------
    name : str
    factory : callable
        ``factory(seed, dataset_name, n_train, fast=False, **options) -> estimator``.
    supports_batched : bool
        Whether ``fit_predict_many`` may be used for this method.
    fit_predict_many : callable, optional
        ``fit_predict_many(tasks, *, progress=False)`` yielding ``(task, TaskResult)``
        pairs for a list of tasks of this method (for a batched trainer).
    version : str
        Part of every result key: bump it when a change of the method's code
        changes its results, and finished runs are recomputed.
    description : str
        One line for ``--help`` and the report.
    in_all : bool
        Whether ``--methods all`` includes it (False for methods that need
        an optional extra or another kind of data, e.g. EEG epochs).
    """

    name: str
    factory: Factory
    supports_batched: bool = False
    fit_predict_many: Callable[..., Iterable] | None = None
    version: str = "1"
    description: str = ""
    in_all: bool = True


METHODS: dict[str, MethodSpec] = {}


def register_method(
    name: str,
    factory: Factory,
    *,
    supports_batched: bool = False,
    fit_predict_many: Callable[..., Iterable] | None = None,
    version: str = "1",
    description: str = "",
    overwrite: bool = False,
    in_all: bool = True,
) -> MethodSpec:
    """Register a benchmark method.

    Parameters
    ----------
    name : str
        Lower-case name used on the command line (no commas).
    factory : callable
        See :class:`MethodSpec`.
    supports_batched : bool
        Set with ``fit_predict_many`` to let the runner train all tasks of
        this method at once.
    fit_predict_many : callable, optional
        The batched hook.
    version : str
        Result-key version of the method.
    description : str
        One line.
    overwrite : bool
        Replace an existing registration instead of raising.
    in_all : bool
        Include the method in ``--methods all``.

    Returns
    -------
    MethodSpec
    """
    if not name or "," in name or name != name.strip() or name == "all":
        raise ConfigError(f"invalid method name {name!r}: use a non-empty name without commas, not 'all'")
    if not callable(factory):
        raise ConfigError(f"factory of method {name!r} is not callable")
    if supports_batched and fit_predict_many is None:
        raise ConfigError(f"method {name!r}: supports_batched=True needs a fit_predict_many hook")
    if name in METHODS and not overwrite:
        raise ConfigError(f"method {name!r} is already registered (pass overwrite=True to replace it)")
    spec = MethodSpec(name, factory, supports_batched, fit_predict_many, str(version), description, in_all)
    METHODS[name] = spec
    return spec


def unregister_method(name: str) -> None:
    """Remove a registered method (tests and plugins)."""
    METHODS.pop(name, None)


def list_methods() -> list[str]:
    """Registered method names, in registration order."""
    load_plugins()
    return list(METHODS)


def get_method(name: str) -> MethodSpec:
    """The :class:`MethodSpec` of ``name``."""
    load_plugins()
    try:
        return METHODS[name]
    except KeyError:
        raise ConfigError(f"unknown method {name!r}; registered methods: {', '.join(METHODS)}") from None


def resolve_methods(spec: str | Iterable[str]) -> list[str]:
    """Turn ``"all"``, a comma list or an iterable of names into a checked list of names."""
    if isinstance(spec, str):
        names = [s.strip() for s in spec.split(",") if s.strip()]
    else:
        names = [str(s).strip() for s in spec]
    if not names:
        raise ConfigError("no method given; use 'all' or a comma list of: " + ", ".join(list_methods()))
    out: list[str] = []
    for n in names:
        for m in ([k for k in list_methods() if METHODS[k].in_all] if n == "all" else [n]):
            get_method(m)
            if m not in out:
                out.append(m)
    return out


def make_estimator(name: str, seed: int, dataset_name: str, n_train: int, *, fast: bool = False, **options: Any):
    """Build the unfitted estimator of method ``name``."""
    return get_method(name).factory(seed, dataset_name, n_train, fast=fast, **options)


_PLUGINS_LOADED = False

#: Registration hooks that ship with CortexFlow. They are also declared as entry
#: points, but are called directly so that a source checkout on ``PYTHONPATH``
#: (no installed package metadata) has them too.
BUILTIN_PLUGINS = (
    "cortexflow.models.eeg_estimator:register_benchmark_methods",
    "cortexflow.semantic.benchmark:register",
    "cortexflow.priors.methods:register",
)


def _call_hook(name: str, value: str) -> None:
    import importlib

    try:
        module, _, attr = value.partition(":")
        hook = getattr(importlib.import_module(module), attr)
        if callable(hook):
            hook()
    except Exception as exc:  # a broken plugin must not break the built-in methods
        logger.warning("could not load benchmark method plugin %r (%s): %s", name, value, exc)


def load_plugins() -> None:
    """Register the methods of :data:`BUILTIN_PLUGINS` and of every entry point of ``cortexflow.methods``, once."""
    global _PLUGINS_LOADED
    if _PLUGINS_LOADED:
        return
    _PLUGINS_LOADED = True
    from importlib.metadata import entry_points

    for value in BUILTIN_PLUGINS:
        _call_hook(value.rsplit(":", 1)[0], value)
    for ep in entry_points(group="cortexflow.methods"):
        if ep.value.replace(" ", "") not in BUILTIN_PLUGINS:
            _call_hook(ep.name, ep.value)


# ---------------------------------------------------------------- built-ins
def _no_options(name: str, options: dict) -> None:
    if options:
        raise ConfigError(f"method {name!r} takes no options; got {sorted(options)}")


def _mean_image(seed: int, dataset_name: str, n_train: int, *, fast: bool = False, **options):
    from cortexflow.baselines.mean_image import MeanImageDecoder

    _no_options("mean-image", options)
    return MeanImageDecoder(random_state=seed)


def _ridge(seed: int, dataset_name: str, n_train: int, *, fast: bool = False, **options):
    from cortexflow.baselines.ridge import RidgeDecoder

    return RidgeDecoder(random_state=seed, **options)


def _cccv1(seed: int, dataset_name: str, n_train: int, *, fast: bool = False, device: str = "auto",
           n_members: int = 1, **overrides):
    from cortexflow.models.ensemble import CCCV1EnsembleDecoder
    from cortexflow.models.estimator import CCCV1Decoder
    from cortexflow.training.config import get_config

    cfg = get_config("auto", n_train=n_train, dataset=dataset_name, **overrides)
    if fast:
        cfg = cfg.replace(epochs=2, patience=1, hidden_dim=64, embed_dim=32)
    if n_members != 1:  # mean image of n_members seeds, trained together by the batched trainer
        return CCCV1EnsembleDecoder(n_members, config=cfg, dataset=dataset_name, random_state=seed, device=device)
    return CCCV1Decoder(config=cfg, dataset=dataset_name, random_state=seed, device=device)


def _brain_diffuser_lite(seed: int, dataset_name: str, n_train: int, *, fast: bool = False, **options):
    from cortexflow.baselines.brain_diffuser_lite import BrainDiffuserLite

    if fast:
        options = {"vae_epochs": 3, "denoiser_epochs": 3, "patience": 2, "steps": 2, **options}
    return BrainDiffuserLite(random_state=seed, **options)


def _mindvis_lite(seed: int, dataset_name: str, n_train: int, *, fast: bool = False, **options):
    from cortexflow.baselines.mindvis_lite import MindVisLite

    if fast:
        options = {"pretrain_epochs": 2, "finetune_epochs": 2, "patience": 1, "dim": 16, "depth": 1, **options}
    return MindVisLite(random_state=seed, **options)


register_method("mean-image", _mean_image, description="mean training image for every signal (the floor)")
register_method("ridge", _ridge, description="ridge from z-scored signal to pixels, penalty by inner leave-one-out CV")
def _cccv1_many(tasks, *, progress=False):
    """Batched training of cccv1's folds x seeds (issue 7; see cortexflow.training.batched)."""
    from cortexflow.benchmark.backends import cccv1_fit_predict_many

    return cccv1_fit_predict_many(tasks, progress=progress)


register_method(REFERENCE_METHOD, _cccv1, supports_batched=True, fit_predict_many=_cccv1_many,
                description="CCCV1Decoder(config='auto', dataset=name)")
register_method("brain-diffuser-lite", _brain_diffuser_lite,
                description="VAE-latent ridge + feature-conditioned denoiser from the stage-1 image")
register_method("mindvis-lite", _mindvis_lite,
                description="masked signal modelling pretraining + conditioned image decoder, fine-tuned")
