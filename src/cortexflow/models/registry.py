"""Registry of network builders, by name (braindecode-style).

A builder takes ``(input_dim, output_shape, config)`` and returns an
``nn.Module`` with ``encode(x) -> (B, embed_dim)`` and ``forward(x) -> (B, *output_shape)``.
One contract test runs over every registered model.
"""

from __future__ import annotations

from typing import Callable

from torch import nn

from cortexflow.exceptions import ConfigError
from cortexflow.models.cccv1 import CCCV1

__all__ = ["MODELS", "register_model", "build_model", "list_models"]

Builder = Callable[..., nn.Module]
MODELS: dict[str, Builder] = {}


def register_model(name: str) -> Callable[[Builder], Builder]:
    """Decorator that registers a network builder under ``name``."""

    def deco(fn: Builder) -> Builder:
        if name in MODELS:
            raise ConfigError(f"model {name!r} is already registered")
        MODELS[name] = fn
        return fn

    return deco


def list_models() -> list[str]:
    """Registered model names, sorted."""
    return sorted(MODELS)


def build_model(name: str, input_dim: int, output_shape: tuple[int, ...], config) -> nn.Module:
    """Build the registered model ``name``."""
    try:
        builder = MODELS[name]
    except KeyError:
        raise ConfigError(f"unknown model {name!r}; registered models: {', '.join(list_models())}") from None
    return builder(input_dim=input_dim, output_shape=output_shape, config=config)


@register_model("cccv1")
def _build_cccv1(input_dim: int, output_shape: tuple[int, ...], config) -> nn.Module:
    return CCCV1(
        input_dim,
        dropout_encoder=config.dropout_encoder,
        dropout_decoder=config.dropout_decoder,
        alpha=config.alpha,
        hidden_dim=config.hidden_dim,
        embed_dim=config.embed_dim,
        output_shape=output_shape,
    )
