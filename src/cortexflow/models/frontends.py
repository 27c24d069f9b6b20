"""EEG front-ends for CCCV1: modules from (channels x time) epochs to one flat feature vector.

The CLIP-guided encoder of CCCV1 is an MLP on a vector; these front-ends sit
in front of it (``CCCV1(frontend=...)``) and are trained with it, end to end.

* ``flatten``  : the raw samples, channels after one another (C * T features).
* ``shallow``  : ShallowConvNet (Schirrmeister et al. 2017): temporal
  convolution, spatial convolution across all channels, batch norm, square,
  average pooling, log -- a learnable filter-bank band-power extractor.
* ``eegnet``   : EEGNet-style (Lawhern et al. 2018): temporal convolution,
  depthwise spatial convolution, ELU, average pooling, separable
  convolution, ELU, average pooling.

Kernel and pooling lengths are given in seconds of the original designs (at
250 Hz for ShallowConvNet, 128 Hz for EEGNet) and converted with ``sfreq``,
then capped to the epoch length, so a front-end builds for any epoch shape.
Every front-end accepts (B, C, T) tensors, or (B, C * T) rows that it
reshapes, so the registered models also pass the generic model contract
(input_dim as an int means one channel of input_dim samples).

Registered models: ``eeg_flatten``, ``eeg_shallow``, ``eeg_eegnet``; their
builders take ``input_dim`` as ``(n_channels, n_times)`` (or an int) and the
front-end's keyword arguments.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from cortexflow.exceptions import ConfigError
from cortexflow.models.cccv1 import CCCV1
from cortexflow.models.registry import register_model

__all__ = [
    "EEGFrontend",
    "FlattenFrontend",
    "ShallowConvFrontend",
    "EEGNetFrontend",
    "FRONTENDS",
    "build_frontend",
    "build_eeg_model",
    "eeg_input_shape",
]


def eeg_input_shape(input_dim: Any) -> tuple[int, int]:
    """``(n_channels, n_times)`` from an int (one channel) or a pair."""
    if not hasattr(input_dim, "__len__"):
        try:
            return 1, int(input_dim)
        except (TypeError, ValueError):
            raise ConfigError(f"EEG input_dim must be an int or (n_channels, n_times); got {input_dim!r}") from None
    try:
        c, t = (int(v) for v in input_dim)
    except (TypeError, ValueError):
        raise ConfigError(f"EEG input_dim must be an int or (n_channels, n_times); got {input_dim!r}") from None
    if c < 1 or t < 1:
        raise ConfigError(f"EEG input shape must be positive; got {(c, t)}")
    return c, t


class EEGFrontend(nn.Module):
    """Base class: knows its input shape and its output width ``out_dim``."""

    def __init__(self, n_channels: int, n_times: int):
        super().__init__()
        self.n_channels = int(n_channels)
        self.n_times = int(n_times)
        self.out_dim = 0

    def _as_epochs(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2 and x.shape[1] == self.n_channels * self.n_times:
            x = x.reshape(x.shape[0], self.n_channels, self.n_times)
        if x.dim() != 3 or x.shape[1:] != (self.n_channels, self.n_times):
            raise ValueError(
                f"{type(self).__name__} expects input (B, {self.n_channels}, {self.n_times}) or "
                f"(B, {self.n_channels * self.n_times}); got {tuple(x.shape)}"
            )
        return x

    def _set_out_dim(self) -> None:
        with torch.no_grad():
            was = self.training
            self.eval()
            self.out_dim = int(self.features(torch.zeros(2, self.n_channels, self.n_times)).shape[1])
            self.train(was)

    def features(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(self._as_epochs(x))


class FlattenFrontend(EEGFrontend):
    """The raw samples as one vector (C * T features): CCCV1 on EEG with no learned front-end."""

    def __init__(self, n_channels: int, n_times: int, sfreq: float | None = None):
        super().__init__(n_channels, n_times)
        self.out_dim = self.n_channels * self.n_times

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], -1)


def _samples(seconds: float, sfreq: float, limit: int) -> int:
    return int(max(1, min(limit, round(seconds * sfreq))))


def _odd(k: int) -> int:
    """``k`` or ``k - 1``, whichever is odd (symmetric 'same' padding)."""
    return k if k % 2 else max(1, k - 1)


class ShallowConvFrontend(EEGFrontend):
    """ShallowConvNet-style band-power front-end.

    conv(1 -> F, (1, k_t)) -> conv(F -> F, (C, 1)) -> BatchNorm -> square ->
    AvgPool(1, pool, stride) -> log(clamp(., 1e-6)) -> Dropout -> flatten.

    Parameters
    ----------
    n_channels, n_times : int
    sfreq : float
        Sampling rate; the kernel (100 ms), pool (300 ms) and stride (60 ms)
        of the original design at 250 Hz are converted with it.
    n_filters : int
        Temporal and spatial filters (40 in the original).
    kernel_s, pool_s, stride_s : float
        Lengths in seconds.
    dropout : float
    """

    def __init__(
        self,
        n_channels: int,
        n_times: int,
        sfreq: float = 250.0,
        n_filters: int = 40,
        kernel_s: float = 0.1,
        pool_s: float = 0.3,
        stride_s: float = 0.06,
        dropout: float = 0.5,
    ):
        super().__init__(n_channels, n_times)
        k = _samples(kernel_s, sfreq, self.n_times)
        after = self.n_times - k + 1
        pool = _samples(pool_s, sfreq, after)
        stride = _samples(stride_s, sfreq, pool)
        self.temporal = nn.Conv2d(1, n_filters, (1, k))
        self.spatial = nn.Conv2d(n_filters, n_filters, (self.n_channels, 1), bias=False)
        self.bn = nn.BatchNorm2d(n_filters)
        self.pool = nn.AvgPool2d((1, pool), stride=(1, stride))
        self.drop = nn.Dropout(dropout)
        self.kernel, self.pool_size, self.stride = k, pool, stride
        self._set_out_dim()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        h = self.bn(self.spatial(self.temporal(x.unsqueeze(1))))
        h = torch.log(torch.clamp(self.pool(h * h), min=1e-6))
        return self.drop(h).flatten(1)


class EEGNetFrontend(EEGFrontend):
    """EEGNet-style compact convolutional front-end.

    conv(1 -> F1, (1, k1), same) -> BN -> depthwise conv(F1 -> F1*D, (C, 1)) ->
    BN -> ELU -> AvgPool(1, 4) -> Dropout -> depthwise conv (1, k2) + pointwise
    conv(-> F2) -> BN -> ELU -> AvgPool(1, 8) -> Dropout -> flatten.

    Parameters
    ----------
    sfreq : float
        Sampling rate; the temporal kernel is half a second (64 samples at
        128 Hz in the original), the separable kernel 16 samples at 128 Hz.
    f1, depth, f2 : int
        Temporal filters, spatial filters per temporal filter, pointwise filters.
    dropout : float
    """

    def __init__(
        self,
        n_channels: int,
        n_times: int,
        sfreq: float = 128.0,
        f1: int = 8,
        depth: int = 2,
        f2: int = 16,
        kernel_s: float = 0.5,
        separable_s: float = 0.125,
        dropout: float = 0.25,
    ):
        super().__init__(n_channels, n_times)
        k1 = _odd(_samples(kernel_s, sfreq, self.n_times))
        p1 = max(1, min(4, self.n_times))
        t1 = self.n_times // p1
        k2 = _odd(_samples(separable_s, sfreq, t1))
        p2 = max(1, min(8, t1))
        self.block1 = nn.Sequential(
            nn.Conv2d(1, f1, (1, k1), padding="same", bias=False),
            nn.BatchNorm2d(f1),
            nn.Conv2d(f1, f1 * depth, (self.n_channels, 1), groups=f1, bias=False),
            nn.BatchNorm2d(f1 * depth),
            nn.ELU(),
            nn.AvgPool2d((1, p1)),
            nn.Dropout(dropout),
        )
        self.block2 = nn.Sequential(
            nn.Conv2d(f1 * depth, f1 * depth, (1, k2), padding="same", groups=f1 * depth, bias=False),
            nn.Conv2d(f1 * depth, f2, 1, bias=False),
            nn.BatchNorm2d(f2),
            nn.ELU(),
            nn.AvgPool2d((1, p2)),
            nn.Dropout(dropout),
        )
        self._set_out_dim()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.block2(self.block1(x.unsqueeze(1))).flatten(1)


FRONTENDS: dict[str, Callable[..., EEGFrontend]] = {
    "flatten": FlattenFrontend,
    "shallow": ShallowConvFrontend,
    "eegnet": EEGNetFrontend,
}


def build_frontend(name: str, n_channels: int, n_times: int, **kwargs) -> EEGFrontend:
    """Build the front-end ``name`` (``flatten``, ``shallow`` or ``eegnet``) for (C, T) epochs."""
    try:
        cls = FRONTENDS[name]
    except KeyError:
        raise ConfigError(f"unknown EEG front-end {name!r}; allowed: {', '.join(sorted(FRONTENDS))}") from None
    try:
        return cls(n_channels, n_times, **kwargs)
    except TypeError as exc:
        raise ConfigError(f"bad argument for EEG front-end {name!r}: {exc}") from None


def build_eeg_model(name: str, input_dim: Any, output_shape: tuple[int, ...], config, **frontend_kwargs) -> nn.Module:
    """CCCV1 with the EEG front-end ``name`` feeding its CLIP-guided encoder.

    Parameters
    ----------
    name : str
        Front-end name (see :data:`FRONTENDS`).
    input_dim : int or (n_channels, n_times)
    output_shape : tuple of int
    config : CCCV1Config
        Encoder/decoder settings (dropouts, alpha, widths).
    **frontend_kwargs
        Passed to the front-end (``sfreq``, ``n_filters``, ``dropout``, ...).
    """
    c, t = eeg_input_shape(input_dim)
    fe = build_frontend(name, c, t, **frontend_kwargs)
    return CCCV1(
        fe.out_dim,
        dropout_encoder=config.dropout_encoder,
        dropout_decoder=config.dropout_decoder,
        alpha=config.alpha,
        hidden_dim=config.hidden_dim,
        embed_dim=config.embed_dim,
        output_shape=output_shape,
        frontend=fe,
    )


def _register(front: str) -> None:
    @register_model(f"eeg_{front}")
    def _builder(input_dim, output_shape, config, **frontend_kwargs):
        return build_eeg_model(front, input_dim, output_shape, config, **frontend_kwargs)

    _builder.__name__ = f"build_eeg_{front}"
    _builder.__doc__ = f"CCCV1 with the {front!r} EEG front-end; input_dim = (n_channels, n_times) or int."


for _name in FRONTENDS:
    _register(_name)
del _name
