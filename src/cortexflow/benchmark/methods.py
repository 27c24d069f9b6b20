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
fits every (fold, seed) task of one method at once and yields one
:class:`~cortexflow.benchmark.tasks.TaskResult` per task.

The methods that ship with CortexFlow are registered by
:mod:`cortexflow.benchmark.builtin` when :mod:`cortexflow.benchmark` is
imported. Hooks named in :data:`BUILTIN_PLUGINS` and installed packages that
declare an entry point in the group ``cortexflow.methods`` (a callable that
registers its methods) are called once by :func:`load_plugins`.

>>> from cortexflow.benchmark import get_method
>>> get_method("ridge").name
'ridge'
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import logging
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, Callable, Iterable, Sequence

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
    "accepted_options",
    "check_options",
    "suggest",
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
        ``fit_predict_many(tasks, *, progress=False)`` yielding one ``TaskResult``
        per task of a list of tasks of this method (for a batched trainer).
    version : str
        Part of every result key: bump it when a change of the method's code
        changes its results, and finished runs are recomputed.
    description : str
        One line for ``--help`` and the report.
    in_all : bool
        Whether ``--methods all`` includes it (False for methods that need
        an optional extra or another kind of data, e.g. EEG epochs).
    needs_stimuli : bool
        The factory also receives ``stimuli=``: every stimulus of the dataset
        (training and test rows), (n, 28, 28) float32 in [0, 1], for example
        to drop near-duplicates of them from an image prior.
    options : tuple of str, optional
        Option names the factory takes through ``**kwargs`` (its own keyword
        parameters are always accepted); None with a ``**kwargs`` factory
        accepts any option.
    extra : str
        Optional extra it needs (``pip install 'cortexflow[EXTRA]'``), or "".
    """

    name: str
    factory: Factory
    supports_batched: bool = False
    fit_predict_many: Callable[..., Iterable] | None = None
    version: str = "1"
    description: str = ""
    in_all: bool = True
    needs_stimuli: bool = False
    options: tuple[str, ...] | None = None
    extra: str = ""


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
    needs_stimuli: bool = False,
    options: Sequence[str] | None = None,
    extra: str = "",
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
    needs_stimuli : bool
        Pass ``stimuli=`` (all stimuli of the dataset) to the factory.
    options : sequence of str, optional
        Option names the factory takes through ``**kwargs`` (see :class:`MethodSpec`).
    extra : str
        Optional extra the method needs.

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
    spec = MethodSpec(name, factory, supports_batched, fit_predict_many, str(version), description, in_all,
                      bool(needs_stimuli), None if options is None else tuple(options), str(extra))
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
        raise ConfigError(f"unknown method {name!r}{suggest(name, METHODS)}; registered methods: "
                          f"{', '.join(METHODS)}") from None


def suggest(name: str, choices: Iterable[str]) -> str:
    """``" (did you mean X?)"`` for the closest of ``choices``, or ``""``.

    >>> suggest("ccv1", ["ridge", "cccv1"])
    ' (did you mean cccv1?)'
    """
    close = difflib.get_close_matches(str(name), list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


_FACTORY_ARGS = {"seed", "dataset_name", "n_train", "fast", "stimuli"}


def accepted_options(name: str) -> list[str] | None:
    """Option names method ``name`` accepts, or None when it accepts any.

    The factory's own keyword parameters, plus the names declared with
    ``options=`` (those it takes through ``**kwargs``); None for a factory with
    ``**kwargs`` that declares none.
    """
    spec = get_method(name)
    params = inspect.signature(spec.factory).parameters.values()
    named = {p.name for p in params if p.name not in _FACTORY_ARGS
             and p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)}
    if spec.options is None and any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return sorted(named | set(spec.options or ()))


def check_options(name: str, options: dict[str, Any]) -> None:
    """Refuse options that method ``name`` does not accept, naming the allowed ones.

    Raises
    ------
    ConfigError
    """
    allowed = accepted_options(name)
    if allowed is None:
        return
    if options and not allowed:
        raise ConfigError(f"method {name!r} takes no options; got {sorted(options)}")
    for key in options:
        if key not in allowed:
            listed = ", ".join(allowed) if allowed else "none"
            raise ConfigError(f"method {name!r} has no option {key!r}{suggest(key, allowed)}; "
                              f"its options: {listed}")


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
    """Build the unfitted estimator of method ``name`` (``options`` may include ``stimuli=``).

    Raises
    ------
    ConfigError
        An option the method does not accept.
    """
    check_options(name, {k: v for k, v in options.items() if k != "stimuli"})
    return get_method(name).factory(seed, dataset_name, n_train, fast=fast, **options)


_PLUGINS_LOADED = False

#: Registration hooks (``"module:function"``) of method packages that ship with
#: CortexFlow outside :mod:`cortexflow.benchmark.builtin`; called by
#: :func:`load_plugins` (they import this module, so it cannot import them).
BUILTIN_PLUGINS: tuple[str, ...] = ("cortexflow.priors.methods:register",)


def _call_hook(name: str, value: str) -> None:
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
    for value in BUILTIN_PLUGINS:
        _call_hook(value.rsplit(":", 1)[0], value)
    for ep in entry_points(group="cortexflow.methods"):
        value = ep.value.replace(" ", "")
        # CortexFlow's own methods are registered directly; entry points of an
        # older installed copy that name them are skipped
        if value not in BUILTIN_PLUGINS and not value.startswith("cortexflow."):
            _call_hook(ep.name, ep.value)


