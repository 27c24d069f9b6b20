"""Typed option schemas of the registered methods.

Every option a method accepts (``--set METHOD:KEY=VALUE`` on the command line,
a keyword of :func:`cortexflow.methods.make_estimator` in Python) is one
:class:`Option`: its name, the kinds of value it takes, its default, its
allowed values or range, and one line of help. A method's schema is derived
from its estimator's ``__init__`` signature and numpydoc ``Parameters``
section (:func:`options_from_estimator`) and, for the CCCV1 family, from the
fields of :class:`~cortexflow.training.config.CCCV1Config`
(:func:`options_from_dataclass`); a spec may add choices and ranges. Each
option's help is the first sentence of its own numpydoc entry, looked up
through the base classes (:func:`option_help`); a grouped entry (``a, b :
...``) describes the group, so its fields' own lines come from a base class
or from :data:`FIELD_HELP`.

>>> opt = Option("knn", kinds=("int",), default=10, low=1, help="corpus images averaged")
>>> opt.check(5, "ridge-prior")
>>> opt.check(0, "ridge-prior")
Traceback (most recent call last):
...
cortexflow.exceptions.ConfigError: method 'ridge-prior': option knn=0 is below its minimum 1
"""

from __future__ import annotations

import dataclasses
import inspect
import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

from cortexflow.exceptions import ConfigError

__all__ = ["Option", "KINDS", "FIELD_HELP", "options_from_estimator", "options_from_dataclass", "option_help",
           "kinds_of_annotation"]

#: The kinds of value an option may take.
KINDS = ("int", "float", "bool", "str", "list", "dict", "any")

_ANNOTATION_KINDS = (
    (re.compile(r"\bbool\b"), "bool"),
    (re.compile(r"\b(int|np\.integer)\b"), "int"),
    (re.compile(r"\bfloat\b"), "float"),
    (re.compile(r"\bstr\b|PathLike|\bPath\b"), "str"),
    (re.compile(r"\b(list|tuple|Sequence|ndarray|array)\b", re.I), "list"),
    (re.compile(r"\b(dict|Mapping|PriorConfig|CCCV1Config|TrainingConfig)\b"), "dict"),
)


def kinds_of_annotation(annotation: Any, default: Any = None) -> tuple[tuple[str, ...], bool]:
    """The value kinds and whether None is allowed, from an annotation (string or type) and the default.

    >>> kinds_of_annotation("int | None")
    (('int',), True)
    >>> kinds_of_annotation("float | str", 0.5)
    (('float', 'str'), False)
    """
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", repr(annotation))
    if annotation is inspect.Parameter.empty:
        text = ""
    nullable = default is None or "None" in text or "Optional" in text
    if "Any" in text:
        return ("any",), True
    kinds = tuple(k for pattern, k in _ANNOTATION_KINDS if pattern.search(text))
    if not kinds and default is not None:
        kinds = (_kind_of_value(default),)
    return (kinds or ("any",)), nullable


def _kind_of_value(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    if isinstance(value, (list, tuple)):
        return "list"
    if isinstance(value, Mapping):
        return "dict"
    return "any"


def _matches(value: Any, kind: str) -> bool:
    if kind == "any":
        return True
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "float":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "str":
        return isinstance(value, str)
    if kind == "list":
        return isinstance(value, (list, tuple))
    if kind == "dict":
        return isinstance(value, Mapping)
    return False


@dataclass(frozen=True)
class Option:
    """One option of a method.

    Attributes
    ----------
    name : str
    kinds : tuple of str
        Kinds of value accepted (from :data:`KINDS`).
    default : object
        Default value (JSON-friendly form).
    nullable : bool
        Whether ``None`` (JSON ``null``) is accepted.
    choices : tuple, optional
        Allowed values (for ``str``/``int`` options with a fixed set).
    low, high : float, optional
        Inclusive range of a number.
    help : str
        One line.
    """

    name: str
    kinds: tuple[str, ...] = ("any",)
    default: Any = None
    nullable: bool = True
    choices: tuple | None = None
    low: float | None = None
    high: float | None = None
    help: str = ""

    def check(self, value: Any, method: str) -> None:
        """Raise :class:`ConfigError` unless ``value`` is allowed (the message names the value and what is allowed)."""
        if value is None:
            if not self.nullable:
                raise ConfigError(f"method {method!r}: option {self.name} may not be null; {self.describe_allowed()}")
            return
        if not any(_matches(value, k) for k in self.kinds):
            raise ConfigError(f"method {method!r}: option {self.name}={value!r} is a {type(value).__name__}; "
                              f"{self.describe_allowed()}")
        if self.choices is not None and isinstance(value, (str, int)) and not isinstance(value, bool):
            numeric_choice = any(isinstance(c, (int, float)) and not isinstance(c, bool) for c in self.choices)
            if value not in self.choices and not (numeric_choice and "float" in self.kinds
                                                  and isinstance(value, (int, float))):
                raise ConfigError(f"method {method!r}: option {self.name}={value!r} is not allowed; allowed: "
                                  f"{', '.join(map(repr, self.choices))}")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if self.low is not None and value < self.low:
                raise ConfigError(f"method {method!r}: option {self.name}={value!r} is below its minimum {self.low:g}")
            if self.high is not None and value > self.high:
                raise ConfigError(f"method {method!r}: option {self.name}={value!r} is above its maximum "
                                  f"{self.high:g}")

    def describe_allowed(self) -> str:
        """``"allowed: int or null, >= 1"`` and the like."""
        parts = [" or ".join(self.kinds) + (" or null" if self.nullable else "")]
        if self.choices is not None:
            parts.append("one of " + ", ".join(map(repr, self.choices)))
        if self.low is not None:
            parts.append(f">= {self.low:g}")
        if self.high is not None:
            parts.append(f"<= {self.high:g}")
        return "allowed: " + ", ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        """JSON form (``cortexflow methods list --json``)."""
        return {"name": self.name, "type": "|".join(self.kinds) + ("|null" if self.nullable else ""),
                "default": _json_default(self.default), "choices": list(self.choices) if self.choices else None,
                "min": self.low, "max": self.high, "help": self.help}

    def with_(self, **changes: Any) -> "Option":
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)


def _json_default(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_json_default(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _json_default(v) for k, v in value.items()}
    if dataclasses.is_dataclass(value):
        return _json_default(dataclasses.asdict(value))
    return repr(value)


#: One-line help of the fields that their class documents in a grouped numpydoc entry
#: (``lr, batch_size, ... : ...``), by class name and field, for classes whose docstrings live outside the
#: registry (the training settings, ``brain-diffuser-lite``). A grouped entry gives every name in it the same
#: text, which describes the group, not the option; these say what each option is.
FIELD_HELP: dict[str, dict[str, str]] = {
    "TrainingConfig": {
        "lr": "Adam learning rate.",
        "batch_size": "Mini-batch size.",
        "weight_decay": "L2 weight decay of Adam.",
        "epochs": "Maximum training epochs.",
        "patience": "Early stopping: epochs without validation improvement before training stops.",
        "lr_factor": "ReduceLROnPlateau: factor the learning rate is multiplied by when the validation loss stalls.",
        "lr_patience": "ReduceLROnPlateau: epochs without validation improvement before the learning rate drops.",
    },
    "CCCV1Config": {
        "dropout_encoder": "Dropout rate of the encoder (CCCV1's d).",
        "dropout_decoder": "Dropout rate of the decoder (CCCV1's dd).",
        "alpha": "Residual weight of the semantic enhancer.",
        "hidden_dim": "Width of the encoder's hidden layers (1024 in the CCCV1 reference configuration).",
        "embed_dim": "Width of the embedding (512 in the CCCV1 reference configuration).",
    },
    "BrainDiffuserLite": {
        "vae_epochs": "Maximum epochs of the stage-1 VAE (early stopping on an inner validation split).",
        "denoiser_epochs": "Maximum epochs of the stage-2 denoiser (early stopping on an inner validation split).",
        "patience": "Early stopping of both networks: epochs without validation improvement.",
    },
}

_REFERENCE = re.compile(r"^(As for|As in|Same as|See)\b")


@dataclass(frozen=True)
class _Entry:
    """One name of a numpydoc entry: its first sentence, and whether the entry documents several names at once
    or only points elsewhere (``As for :class:`X`.``)."""

    text: str
    shared: bool


def _docstring_entries(obj: Any, section: str = "Parameters") -> dict[str, _Entry]:
    """First sentence of each entry of a numpydoc section (``name : type`` then indented text), by name.

    The first sentence is cut at 140 characters. ``a, b : ...`` gives both
    names the same text, marked ``shared``, as is a text that starts ``As for``.
    """
    doc = inspect.getdoc(obj) or ""
    lines = doc.splitlines()
    out: dict[str, _Entry] = {}
    try:
        start = next(i for i, ln in enumerate(lines) if ln.strip() == section) + 2
    except StopIteration:
        return out
    i = start
    while i < len(lines):
        line = lines[i]
        if line and not line.startswith(" ") and i + 1 < len(lines) and set(lines[i + 1].strip()) == {"-"}:
            break  # next section
        if line and not line.startswith(" "):
            names = [n.strip() for n in line.split(":", 1)[0].split(",")]
            body = []
            j = i + 1
            while j < len(lines) and lines[j].startswith(" "):
                body.append(lines[j].strip())
                j += 1
            text = " ".join(body)
            cut = text.find(". ")
            text = text[: cut + 1] if 0 <= cut < 140 else (text if len(text) <= 140 else text[:137] + "...")
            shared = len(names) > 1 or bool(_REFERENCE.match(text))
            for n in names:
                if n.isidentifier():
                    out.setdefault(n, _Entry(text, shared))
        i += 1
    return out


def option_help(cls: type, sections: Sequence[str] = ("Parameters",)) -> dict[str, str]:
    """One line of help per parameter of ``cls``, from the numpydoc of ``cls`` and its bases.

    For each name, the nearest class (in method resolution order) that
    documents it alone wins; a grouped entry (``a, b : ...``) or a pointer
    (``As for :class:`X`.``) gives way to a base class's own entry or to
    :data:`FIELD_HELP`; its text is the last resort.
    """
    own: dict[str, str] = {}
    fallback: dict[str, str] = {}
    for klass in cls.__mro__:
        if klass is object:
            continue
        mapped = FIELD_HELP.get(klass.__name__, {})
        for section in sections:
            for name, entry in _docstring_entries(klass, section).items():
                if name in own:
                    continue
                if not entry.shared:
                    own[name] = entry.text
                elif name in mapped:
                    own[name] = mapped[name]
                else:
                    fallback.setdefault(name, entry.text)
    return {**fallback, **own}


def options_from_estimator(
    cls: type,
    *,
    exclude: Iterable[str] = (),
    choices: Mapping[str, Sequence] | None = None,
    ranges: Mapping[str, tuple[float | None, float | None]] | None = None,
) -> tuple[Option, ...]:
    """The options of an estimator class: its ``__init__`` keywords (typed from annotations and defaults).

    Parameters
    ----------
    cls : type
        Estimator class (scikit-learn style: every ``__init__`` keyword is a parameter).
    exclude : iterable of str
        Parameters that are not user options (``random_state``, the guard set...).
    choices, ranges : dict, optional
        Allowed values and inclusive (low, high) ranges by option name.
    """
    choices, ranges, skip = dict(choices or {}), dict(ranges or {}), set(exclude) | {"self"}
    helps = option_help(cls)
    out = []
    for p in inspect.signature(cls.__init__).parameters.values():
        if p.name in skip or p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
            continue
        default = None if p.default is inspect.Parameter.empty else p.default
        kinds, nullable = kinds_of_annotation(p.annotation, default)
        low, high = ranges.get(p.name, (None, None))
        ch = choices.get(p.name)
        out.append(Option(p.name, kinds, _json_default(default), nullable, tuple(ch) if ch is not None else None,
                          low, high, helps.get(p.name, "")))
    return tuple(out)


def options_from_dataclass(cls: type, *, exclude: Iterable[str] = (), section: str = "Attributes") -> tuple[Option, ...]:
    """The options of a configuration dataclass: one per field (typed from its annotation and default)."""
    skip = set(exclude)
    helps = option_help(cls, (section, "Parameters"))
    out = []
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default = f.default_factory()  # type: ignore[misc]
        else:
            default = None
        kinds, nullable = kinds_of_annotation(f.type, default)
        out.append(Option(f.name, kinds, _json_default(default), nullable, help=helps.get(f.name, "")))
    return tuple(out)
