"""Typed, serialisable training configurations with per-data-set presets (the settings the CCCV1 design document gives).

>>> cfg = get_config("vangerven")
>>> cfg.lr, cfg.batch_size
(0.0005, 12)
>>> get_config("auto", n_train=500).pattern
'medium'
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
from dataclasses import dataclass, field, fields
from typing import Any

from cortexflow.exceptions import ConfigError

__all__ = ["TrainingConfig", "CCCV1Config", "PRESETS", "get_config", "pattern_for_size"]


@dataclass(frozen=True)
class TrainingConfig:
    """How a network is trained, whatever the network: optimiser, schedule, early stopping, batches, inner split.

    :func:`cortexflow.training.train_model` reads only these fields, so every
    model (CCCV1 and the baselines alike) describes its training with one.
    :class:`CCCV1Config` is a ``TrainingConfig`` with CCCV1's own model fields on top.

    Attributes
    ----------
    lr, batch_size, weight_decay, epochs, patience :
        Adam learning rate, mini-batch size, L2 weight decay, maximum epochs and
        early-stopping patience (epochs without validation improvement).
    grad_clip : float
        Gradient-norm clipping threshold (0 turns clipping off).
    val_fraction : float
        Share of training rows carved out as the inner validation split.
    lr_factor, lr_patience : float, int
        ReduceLROnPlateau settings on the validation loss.
    loss_weights : dict
        Weights of extra loss terms beside the pixel MSE (empty by default).
    """

    lr: float = 3e-4
    batch_size: int = 8
    weight_decay: float = 1e-8
    epochs: int = 200
    patience: int = 25
    grad_clip: float = 0.5
    val_fraction: float = 0.15
    lr_factor: float = 0.5
    lr_patience: int = 8
    loss_weights: dict = field(default_factory=dict)

    def __post_init__(self):
        name = type(self).__name__
        for f in fields(self):  # types first: every range check below compares numbers
            value = getattr(self, f.name)
            object.__setattr__(self, f.name, _check_type(f.name, value, _FIELD_TYPES[f.type], name))
        for key, (ok, allowed) in self._ranges().items():
            if not ok:
                raise ConfigError(f"{name}.{key}={getattr(self, key)!r} is out of range; allowed: {allowed}")
        for k, w in self.loss_weights.items():
            if not isinstance(k, str):
                raise ConfigError(f"{name}.loss_weights key {k!r} is not a string (a loss-term name)")
            if isinstance(w, bool) or not isinstance(w, numbers.Real) or not math.isfinite(w) or w < 0:
                raise ConfigError(f"{name}.loss_weights[{k!r}]={w!r} is not a finite number >= 0")

    def _ranges(self) -> dict[str, tuple[bool, str]]:
        return {
            "lr": (self.lr > 0, "> 0"),
            "batch_size": (self.batch_size >= 1, "an int >= 1"),
            "weight_decay": (self.weight_decay >= 0, ">= 0"),
            "epochs": (self.epochs >= 1, "an int >= 1"),
            "patience": (self.patience >= 1, "an int >= 1"),
            "grad_clip": (self.grad_clip >= 0, ">= 0 (0 turns clipping off)"),
            "val_fraction": (0 < self.val_fraction < 1, "0 < value < 1"),
            "lr_factor": (0 < self.lr_factor < 1, "0 < value < 1 (the learning rate is multiplied by it)"),
            "lr_patience": (self.lr_patience >= 0, "an int >= 0"),
        }

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-serialisable)."""
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]):
        """Build from a dict; unknown keys are an error naming the allowed ones."""
        allowed = {f.name for f in fields(cls)}
        unknown = set(d) - allowed
        if unknown:
            raise ConfigError(f"unknown {cls.__name__} key(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
        return cls(**d)

    def replace(self, **overrides: Any):
        """Copy with some fields overridden (values given as strings are converted)."""
        allowed = {f.name: f for f in fields(self)}
        clean = {}
        for k, v in overrides.items():
            if k not in allowed:
                raise ConfigError(f"unknown {type(self).__name__} key {k!r}; allowed: {sorted(allowed)}")
            clean[k] = _coerce(v, type(getattr(self, k)), k)
        return dataclasses.replace(self, **clean)

    @property
    def training(self) -> "TrainingConfig":
        """The training settings alone (a plain :class:`TrainingConfig`)."""
        return TrainingConfig(**{f.name: getattr(self, f.name) for f in fields(TrainingConfig)})


@dataclass(frozen=True)
class CCCV1Config(TrainingConfig):
    """Every setting of one CCCV1 run: CCCV1's model fields on top of its :class:`TrainingConfig`.

    The training fields (``lr``, ``batch_size``, ``weight_decay``, ``epochs``,
    ``patience``, ``grad_clip``, ``val_fraction``, ``lr_factor``,
    ``lr_patience``, ``loss_weights``) are those of :class:`TrainingConfig`;
    :attr:`training` returns them alone.

    Attributes
    ----------
    pattern : str
        Name of the preset it came from (``small``, ``medium``, ``large``, or a dataset).
    dropout_encoder, dropout_decoder, alpha : float
        Architecture settings ``d``, ``dd`` and the enhancer's residual weight.
    hidden_dim, embed_dim : int
        Width of the encoder and of the embedding (1024 and 512 in the CCCV1 reference configuration).
    model : str
        Registered network name.
    """

    pattern: str = "small"
    dropout_encoder: float = 0.06
    dropout_decoder: float = 0.02
    alpha: float = 0.1
    hidden_dim: int = 1024
    embed_dim: int = 512
    model: str = "cccv1"

    def _ranges(self) -> dict[str, tuple[bool, str]]:
        return {
            "dropout_encoder": (0 <= self.dropout_encoder < 1, "0 <= value < 1"),
            "dropout_decoder": (0 <= self.dropout_decoder < 1, "0 <= value < 1"),
            "alpha": (self.alpha >= 0, ">= 0"),
            **super()._ranges(),
            "hidden_dim": (self.hidden_dim >= 1, "an int >= 1"),
            "embed_dim": (self.embed_dim >= 1, "an int >= 1"),
            "pattern": (bool(self.pattern), "a non-empty name"),
            "model": (bool(self.model), "a registered network name"),
        }


_FIELD_TYPES = {"str": str, "float": float, "int": int, "dict": dict}


def _check_type(name: str, value: Any, typ: type, owner: str = "CCCV1Config") -> Any:
    """Return ``value`` as ``typ`` (an int for int fields, a float for float fields) or raise ConfigError."""
    kind = {int: "an integer", float: "a finite number", str: "a string", dict: "a dict (JSON object)"}[typ]
    if typ is int:
        ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
        if not ok and isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value) \
                and float(value).is_integer():
            ok = True  # 50.0 is 50
        if ok:
            return int(value)
    elif typ is float:
        if isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
    elif isinstance(value, typ):
        return value
    raise ConfigError(f"{owner}.{name}={value!r} is not {kind}")


def _coerce(value: Any, typ: type, name: str) -> Any:
    """Read a command-line string as the field's type; other values pass through to the type check."""
    if not isinstance(value, str) or typ is str:
        return value
    try:
        if typ is bool:
            return value.lower() in {"1", "true", "yes", "on"}
        if typ is dict:
            return json.loads(value)
        return float(value) if typ in (int, float) else typ(value)
    except ValueError:
        raise ConfigError(f"cannot read {name}={value!r} as {typ.__name__}") from None


SMALL = CCCV1Config(pattern="small", dropout_encoder=0.06, dropout_decoder=0.02, alpha=0.1, lr=3e-4,
                    batch_size=8, weight_decay=1e-8, epochs=200, patience=25)
MEDIUM = CCCV1Config(pattern="medium", dropout_encoder=0.05, dropout_decoder=0.02, alpha=0.08, lr=8e-4,
                     batch_size=20, weight_decay=5e-7, epochs=120, patience=15, lr_patience=5)
LARGE = CCCV1Config(pattern="large", dropout_encoder=0.04, dropout_decoder=0.02, alpha=0.05, lr=1e-3,
                    batch_size=32, weight_decay=1e-6, epochs=100, patience=12, lr_patience=4)

PRESETS: dict[str, CCCV1Config] = {
    "small": SMALL,
    "medium": MEDIUM,
    "large": LARGE,
    # the concrete per-data-set choices of the CCCV1 design document
    "miyawaki": SMALL.replace(pattern="miyawaki"),
    "vangerven": CCCV1Config(pattern="vangerven", dropout_encoder=0.05, dropout_decoder=0.015, alpha=0.08,
                             lr=5e-4, batch_size=12, weight_decay=5e-8, epochs=150, patience=20, lr_patience=7),
    "crell": MEDIUM.replace(pattern="crell"),
    "mindbigdata": LARGE.replace(pattern="mindbigdata"),
}


def pattern_for_size(n_train: int) -> str:
    """The preset chosen from the number of training rows: small (< 200), medium (200-800) or large (> 800)."""
    if n_train < 200:
        return "small"
    if n_train <= 800:
        return "medium"
    return "large"


def get_config(
    config: "str | CCCV1Config | dict | None" = "auto",
    *,
    n_train: int | None = None,
    dataset: str | None = None,
    **overrides: Any,
) -> CCCV1Config:
    """Resolve a configuration.

    Parameters
    ----------
    config : "auto", preset name, dict or CCCV1Config
        ``"auto"`` picks the dataset's preset when ``dataset`` is a known name,
        otherwise the size pattern of ``n_train``.
    n_train : int, optional
        Number of training rows (for ``"auto"``).
    dataset : str, optional
        Dataset name (for ``"auto"``).
    **overrides
        Field values that replace the preset's.
    """
    if config is None or config == "auto":
        if dataset is not None and dataset in PRESETS:
            cfg = PRESETS[dataset]
        elif n_train is not None:
            cfg = PRESETS[pattern_for_size(n_train)]
        else:
            cfg = PRESETS["small"]
    elif isinstance(config, CCCV1Config):
        cfg = config
    elif isinstance(config, dict):
        cfg = CCCV1Config.from_dict(config)
    elif isinstance(config, str):
        if config not in PRESETS:
            raise ConfigError(f"unknown configuration {config!r}; allowed: 'auto', {', '.join(sorted(PRESETS))}")
        cfg = PRESETS[config]
    else:
        raise ConfigError(f"config must be 'auto', a preset name, a dict or a CCCV1Config; got {type(config).__name__}")
    return cfg.replace(**overrides) if overrides else cfg
