"""The method registry: the one place that knows which methods exist and what each needs.

A method is declared once, in the module that defines its estimator, by one
call of :func:`register_method`; the call builds a :class:`MethodSpec` that
holds its name and one-line description, its estimator class and factory,
its typed options (:class:`~cortexflow.registry.options.Option`, derived from
the estimator's parameters unless given), its checkpoint kind (the
estimator's ``checkpoint_kind``), what data it needs (``needs``), whether it is
in ``--methods all``, and the scikit-learn checks it is known to fail. Every
list of methods elsewhere (``cortexflow methods list``, ``cortexflow train
--method``, the checkpoint loader, figure labels, the contract tests and the
scikit-learn checks) is derived from it.

The modules that declare CortexFlow's own methods are named in
:data:`BUILTIN_MODULES`; :func:`load_methods` imports them (and the entry
points of the group ``cortexflow.methods``) once. A failure while registering
raises :class:`~cortexflow.exceptions.ConfigError` naming the methods that
module declares; nothing is swallowed.

>>> from cortexflow.methods import get_method
>>> get_method("ridge").checkpoint_kind
'ridge'
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import logging
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, Callable, Iterable, Mapping, Sequence

from cortexflow.exceptions import ConfigError
from cortexflow.registry.options import Option, kinds_of_annotation, options_from_estimator

__all__ = [
    "MethodSpec",
    "METHODS",
    "NEEDS",
    "RUNTIME_PARAMS",
    "BUILTIN_MODULES",
    "REFERENCE_METHOD",
    "register_method",
    "unregister_method",
    "get_method",
    "list_methods",
    "resolve_methods",
    "load_methods",
    "load_plugins",
    "accepted_options",
    "check_options",
    "suggest",
    "checkpoint_kinds",
    "decoder_label",
]

logger = logging.getLogger(__name__)

Factory = Callable[..., Any]
REFERENCE_METHOD = "cccv1"

#: What a method may need besides its training rows:
#: ``guard`` every stimulus that will be scored (training and test rows), for the near-duplicate guard;
#: ``prior`` a fitted image prior (resolved by :func:`cortexflow.methods.build.make_estimator`);
#: ``eeg`` rows laid out as EEG epochs (``n_channels`` x ``n_times``).
NEEDS = ("guard", "prior", "eeg")

#: Estimator parameters set by the layer that builds estimators, never user options.
RUNTIME_PARAMS = ("random_state", "stimuli", "dataset", "data_dir", "cache_dir", "progress")

#: module -> the methods it declares (CortexFlow's own methods).
BUILTIN_MODULES: dict[str, tuple[str, ...]] = {
    "cortexflow.baselines.mean_image": ("mean-image",),
    "cortexflow.baselines.ridge": ("ridge",),
    "cortexflow.models.ensemble": ("cccv1", "cccv1-ensemble"),
    "cortexflow.baselines.brain_diffuser_lite": ("brain-diffuser-lite",),
    "cortexflow.baselines.mindvis_lite": ("mindvis-lite",),
    "cortexflow.semantic.decoder": ("cccv1-semantic",),
    "cortexflow.models.eeg_estimator": ("cccv1-eeg-shallow", "cccv1-eeg-eegnet", "cccv1-eeg-flatten"),
    "cortexflow.priors.cccv1_prior": ("cccv1-prior", "cccv1-prior-ensemble", "cccv1-prior-attention"),
    "cortexflow.priors.baselines": ("brain-diffuser-prior", "mindvis-prior"),
    "cortexflow.priors.ridge_prior": ("ridge-prior", "ridge-prior-stacked"),
}


@dataclass(frozen=True)
class MethodSpec:
    """One registered method.

    Attributes
    ----------
    name : str
    factory : callable
        ``factory(seed, dataset_name, n_train, *, fast=False, **options) -> estimator`` (unfitted).
    estimator : type or None
        The estimator class the factory builds (its ``checkpoint_kind`` names its checkpoints).
    options : tuple of Option
        Every option the method accepts (typed; ``cortexflow methods list`` shows them).
    needs : frozenset of str
        From :data:`NEEDS`.
    version : str
        Part of every benchmark result key: bump it when a change of the method's code changes its results.
    description : str
        One line.
    in_all : bool
        Whether ``--methods all`` includes it.
    extra : str
        Optional extra it needs (``pip install 'cortexflow[EXTRA]'``), or "".
    label : str
        Name in figure titles.
    sklearn_xfail : dict
        scikit-learn check name -> why this method's estimator fails it (strict xfails in the test suite).
    check_params : dict
        Parameters of a tiny instance for the scikit-learn checks (merged over the fast factory's).
    supports_batched, fit_predict_many :
        The benchmark's batched hook (attached by :mod:`cortexflow.benchmark.builtin`).
    check : callable, optional
        ``check(options)`` raising ``ConfigError`` for values the typed schema cannot judge alone (ranges that
        depend on each other, a configuration's own checks); run by :func:`check_options`.
    defaults : dict
        Option values used unless the user sets them (see :func:`register_method`).
    """

    name: str
    factory: Factory
    estimator: type | None = None
    options: tuple[Option, ...] = ()
    needs: frozenset = frozenset()
    version: str = "1"
    description: str = ""
    in_all: bool = True
    extra: str = ""
    label: str = ""
    sklearn_xfail: Mapping[str, str] = field(default_factory=dict)
    check_params: Mapping[str, Any] = field(default_factory=dict)
    supports_batched: bool = False
    fit_predict_many: Callable[..., Iterable] | None = None
    check: Callable[[Mapping[str, Any]], None] | None = None
    defaults: Mapping[str, Any] = field(default_factory=dict)

    @property
    def checkpoint_kind(self) -> str | None:
        """The ``kind`` of this method's checkpoints (None when its estimator has no checkpoint)."""
        return getattr(self.estimator, "checkpoint_kind", None)

    @property
    def needs_stimuli(self) -> bool:
        """Whether the builder hands the estimator every scored stimulus (``guard`` in :attr:`needs`)."""
        return "guard" in self.needs

    @property
    def option_names(self) -> list[str]:
        """Names of :attr:`options`, sorted."""
        return sorted(o.name for o in self.options)

    def option(self, name: str) -> Option:
        """The :class:`Option` called ``name`` (``ConfigError`` naming the allowed ones)."""
        for o in self.options:
            if o.name == name:
                return o
        names = self.option_names
        raise ConfigError(f"method {self.name!r} has no option {name!r}{suggest(name, names)}; "
                          f"its options: {', '.join(names) if names else 'none'}")


METHODS: dict[str, MethodSpec] = {}

_FACTORY_ARGS = {"seed", "dataset_name", "n_train", "fast"}


def _factory_options(factory: Factory) -> list[Option]:
    """Typed options of a factory's own keyword parameters."""
    out = []
    for p in inspect.signature(factory).parameters.values():
        if p.name in _FACTORY_ARGS or p.name in RUNTIME_PARAMS or p.kind not in (p.KEYWORD_ONLY,
                                                                                 p.POSITIONAL_OR_KEYWORD):
            continue
        if p.default is inspect.Parameter.empty:
            continue
        kinds, nullable = kinds_of_annotation(p.annotation, p.default)
        out.append(Option(p.name, kinds, p.default if isinstance(p.default, (int, float, str, bool)) else None,
                          nullable))
    return out


def register_method(
    name: str,
    factory: Factory,
    *,
    estimator: type | None = None,
    options: Sequence[Option | str] | None = None,
    choices: Mapping[str, Sequence] | None = None,
    ranges: Mapping[str, tuple[float | None, float | None]] | None = None,
    needs: Iterable[str] = (),
    version: str = "1",
    description: str = "",
    in_all: bool = True,
    extra: str = "",
    label: str = "",
    sklearn_xfail: Mapping[str, str] | None = None,
    check_params: Mapping[str, Any] | None = None,
    supports_batched: bool = False,
    fit_predict_many: Callable[..., Iterable] | None = None,
    needs_stimuli: bool = False,
    check: Callable[[Mapping[str, Any]], None] | None = None,
    defaults: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> MethodSpec:
    """Register a method (see :class:`MethodSpec`).

    Parameters
    ----------
    name : str
        Lower-case name used on the command line (no commas, not ``all``).
    factory : callable
        ``factory(seed, dataset_name, n_train, *, fast=False, **options)``.
    estimator : type, optional
        The estimator class it builds; when given and ``options`` is None, the
        options are derived from its ``__init__`` (less :data:`RUNTIME_PARAMS`).
    options : sequence of Option or str, optional
        The options; plain names are typed from the estimator's parameters when
        possible, else accept any value. The factory's own keyword parameters
        are always added.
    choices, ranges : dict, optional
        Allowed values / inclusive ranges by option name, applied to the options.
    needs : iterable of str
        From :data:`NEEDS`.
    needs_stimuli : bool
        Old spelling of ``needs=("guard",)``.
    defaults : dict, optional
        Option values this method uses unless the user sets them (a variant of
        another method: ``ridge-prior-stacked`` is ``ridge-prior`` with
        ``pixel_blend="auto"``); shown as the options' defaults and passed to
        the factory by :func:`cortexflow.methods.build.make_estimator`.
    overwrite : bool
        Replace an existing registration instead of raising.
    Other parameters :
        As the attributes of :class:`MethodSpec`.

    Raises
    ------
    ConfigError
        Invalid name or needs, a duplicate name, a factory that is not callable.
    """
    if not isinstance(name, str) or not name or "," in name or name != name.strip() or name == "all":
        raise ConfigError(f"invalid method name {name!r}: use a non-empty name without commas, not 'all'")
    if not callable(factory):
        raise ConfigError(f"factory of method {name!r} is not callable")
    if supports_batched and fit_predict_many is None:
        raise ConfigError(f"method {name!r}: supports_batched=True needs a fit_predict_many hook")
    if name in METHODS and not overwrite:
        raise ConfigError(f"method {name!r} is already registered (pass overwrite=True to replace it)")
    need_set = frozenset(needs) | ({"guard"} if needs_stimuli else frozenset())
    if "prior" in need_set:
        need_set |= {"guard"}
    unknown = sorted(need_set - set(NEEDS))
    if unknown:
        raise ConfigError(f"method {name!r}: unknown needs {unknown}; allowed: {', '.join(NEEDS)}")
    derived = {o.name: o for o in (options_from_estimator(estimator, exclude=RUNTIME_PARAMS)
                                   if estimator is not None else ())}
    opts: dict[str, Option] = {}
    if options is None:
        opts.update(derived)
    else:
        for o in options:
            if isinstance(o, Option):
                opts[o.name] = o
            else:
                opts[str(o)] = derived.get(str(o), Option(str(o)))
    for o in _factory_options(factory):
        opts.setdefault(o.name, derived.get(o.name, o))
    for key, values in (choices or {}).items():
        if key not in opts:
            raise ConfigError(f"method {name!r}: choices given for {key!r}, which is not one of its options")
        opts[key] = opts[key].with_(choices=tuple(values))
    for key, (low, high) in (ranges or {}).items():
        if key not in opts:
            raise ConfigError(f"method {name!r}: a range given for {key!r}, which is not one of its options")
        opts[key] = opts[key].with_(low=low, high=high)
    for key, value in (defaults or {}).items():
        if key not in opts:
            raise ConfigError(f"method {name!r}: a default given for {key!r}, which is not one of its options")
        opts[key] = opts[key].with_(default=value)
    spec = MethodSpec(name=name, factory=factory, estimator=estimator, options=tuple(opts[k] for k in sorted(opts)),
                      needs=need_set, version=str(version), description=description, in_all=in_all,
                      extra=str(extra), label=label or name, sklearn_xfail=dict(sklearn_xfail or {}),
                      check_params=dict(check_params or {}), supports_batched=supports_batched,
                      fit_predict_many=fit_predict_many, check=check, defaults=dict(defaults or {}))
    METHODS[name] = spec
    return spec


def attach_batched_hook(name: str, fit_predict_many: Callable[..., Iterable]) -> MethodSpec:
    """Give a registered method a batched ``fit_predict_many`` hook (the benchmark's execution layer)."""
    spec = get_method(name)
    new = MethodSpec(**{**spec.__dict__, "supports_batched": True, "fit_predict_many": fit_predict_many})
    METHODS[name] = new
    return new


def unregister_method(name: str) -> None:
    """Remove a registered method (tests and plugins)."""
    METHODS.pop(name, None)


_LOADED = False


def load_methods() -> None:
    """Import the modules of :data:`BUILTIN_MODULES` and call the ``cortexflow.methods`` entry points, once.

    Raises
    ------
    ConfigError
        A module or plugin failed to import or register (its methods are named).
    """
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    try:
        for module, names in BUILTIN_MODULES.items():
            try:
                importlib.import_module(module)
            except Exception as exc:
                raise ConfigError(f"registering method(s) {', '.join(names)} failed: {module} raised "
                                  f"{type(exc).__name__}: {exc}") from exc
            missing = [n for n in names if n not in METHODS]
            if missing:
                raise ConfigError(f"module {module} did not register method(s) {', '.join(missing)}")
        for ep in entry_points(group="cortexflow.methods"):
            value = ep.value.replace(" ", "")
            if value.startswith("cortexflow."):  # an older installed copy of CortexFlow's own plugin hook
                continue
            try:
                hook = ep.load()
                hook()
            except Exception as exc:
                raise ConfigError(f"method plugin {ep.name!r} ({ep.value}) failed to register: "
                                  f"{type(exc).__name__}: {exc}") from exc
    except BaseException:
        _LOADED = False
        raise


load_plugins = load_methods  # old name


def list_methods() -> list[str]:
    """Registered method names: CortexFlow's own in the order of :data:`BUILTIN_MODULES`, then the others
    in registration order."""
    load_methods()
    own = [n for names in BUILTIN_MODULES.values() for n in names if n in METHODS]
    return own + [n for n in METHODS if n not in own]


def get_method(name: str) -> MethodSpec:
    """The :class:`MethodSpec` of ``name`` (``ConfigError`` with a suggestion and the registered names)."""
    load_methods()
    try:
        return METHODS[name]
    except (KeyError, TypeError):
        raise ConfigError(f"unknown method {name!r}{suggest(name, METHODS)}; registered methods: "
                          f"{', '.join(METHODS)}") from None


def suggest(name: str, choices: Iterable[str]) -> str:
    """``" (did you mean X?)"`` for the closest of ``choices``, or ``""``.

    >>> suggest("ccv1", ["ridge", "cccv1"])
    ' (did you mean cccv1?)'
    """
    close = difflib.get_close_matches(str(name), list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def accepted_options(name: str) -> list[str]:
    """Option names method ``name`` accepts."""
    return get_method(name).option_names


def check_options(name: str, options: Mapping[str, Any]) -> None:
    """Refuse an option that method ``name`` does not have, or a value of the wrong type or range.

    Raises
    ------
    ConfigError
        The message names the option, the value and what is allowed.
    """
    spec = get_method(name)
    if options and not spec.options:
        raise ConfigError(f"method {name!r} takes no options; got {sorted(options)}")
    for key, value in options.items():
        spec.option(key).check(value, name)
    if spec.check is not None:
        spec.check(options)


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


def checkpoint_kinds() -> dict[str, type]:
    """Checkpoint kind -> the estimator class that loads it, over every registered method."""
    out: dict[str, type] = {}
    for name in list_methods():
        spec = METHODS[name]
        if spec.checkpoint_kind is not None:
            out.setdefault(spec.checkpoint_kind, spec.estimator)  # type: ignore[arg-type]
    return out


def decoder_label(estimator: Any) -> str:
    """Name of a fitted decoder in figure titles: the label of the method whose class it is."""
    kind = getattr(estimator, "checkpoint_kind", None)
    for name in list_methods():
        spec = METHODS[name]
        if spec.estimator is type(estimator):
            return spec.label
    return str(kind or type(estimator).__name__)
