"""The image prior: a convolutional autoencoder (or VAE) with a unit-norm embedding.

The encoder maps a 28x28 image to an L2-normalised vector (the design's
"CLIP-like" image space, 512-d by default); the decoder is multi-resolution:
it predicts a 7x7 image, then 14x14, then 28x28, each through its own
sigmoid head, and training puts a loss on every scale (targets: the image
area-averaged to that size). In the VAE variant the encoder also gives a
log-variance; training decodes a noisy sample (re-normalised), and the
embedding is the normalised mean.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn
import numpy as np

from cortexflow.exceptions import ConfigError

__all__ = ["PriorConfig", "ImagePrior", "downsample_targets", "SCALES", "MAX_EMBED_DIM", "MAX_SEED"]

#: Side lengths of the decoder's outputs, coarse to fine.
SCALES = (7, 14, 28)
#: Largest embedding: 8,192 dimensions already give a decoder of ~30 M weights per width-64 stage (far above 784 pixels).
MAX_EMBED_DIM = 8192
#: Seeds are 0 .. 2**31 - 1 (the range of ``cortexflow.models.base.seed_from_random_state``).
MAX_SEED = 2**31 - 1


@dataclass(frozen=True)
class PriorConfig:
    """Settings of an image prior and of its training.

    Attributes
    ----------
    kind : {"ae", "vae"}
        Autoencoder or variational autoencoder.
    embed_dim : int
        Size of the unit-norm embedding (512 by default, the design's image space).
    widths : tuple of int
        Channels of the encoder's three conv stages (28, 14, 7 pixels); the
        decoder mirrors them.
    epochs : int
        Passes over the corpus.
    lr : float
        Adam learning rate (cosine-decayed to 5 % over the epochs).
    batch_size : int
    weight_decay : float
    scale_weights : tuple of float
        Loss weight of the 7x7, 14x14 and 28x28 outputs.
    beta : float
        Weight of the KL term (``kind="vae"``), per latent dimension and image.
    seed : int
        Initial weights and batch order (own generator; the global RNG is left as it was).
    max_images : int or None
        Train on the first ``max_images`` kept corpus images only (tests, quick runs).
    """

    kind: str = "ae"
    embed_dim: int = 512
    widths: tuple[int, int, int] = (16, 32, 64)
    epochs: int = 8
    lr: float = 2e-3
    batch_size: int = 128
    weight_decay: float = 0.0
    scale_weights: tuple[float, float, float] = (0.25, 0.5, 1.0)
    beta: float = 1e-3
    seed: int = 0
    max_images: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("ae", "vae"):
            raise ConfigError(f"PriorConfig.kind={self.kind!r}; allowed: 'ae', 'vae'")
        for name in ("embed_dim", "epochs", "batch_size", "seed"):
            value = getattr(self, name)
            ok = not isinstance(value, bool) and isinstance(value, (int, np.integer, float, np.floating))
            if not ok or (isinstance(value, (float, np.floating)) and not (np.isfinite(value) and value == int(value))):
                raise ConfigError(f"PriorConfig.{name}={value!r} must be an integer")
            object.__setattr__(self, name, int(value))
        if not 2 <= int(self.embed_dim) <= MAX_EMBED_DIM:
            raise ConfigError(f"PriorConfig.embed_dim={self.embed_dim!r} must be in 2..{MAX_EMBED_DIM}")
        if not 0 <= int(self.seed) <= MAX_SEED:
            raise ConfigError(f"PriorConfig.seed={self.seed!r} must be in 0..{MAX_SEED}")
        if self.max_images is not None and (isinstance(self.max_images, bool) or int(self.max_images) < 1):
            raise ConfigError(f"PriorConfig.max_images={self.max_images!r} must be None or a positive integer")
        if len(self.widths) != 3 or min(self.widths) < 1:
            raise ConfigError(f"PriorConfig.widths={self.widths!r} must be three positive channel counts")
        if len(self.scale_weights) != 3 or min(self.scale_weights) < 0:
            raise ConfigError(f"PriorConfig.scale_weights={self.scale_weights!r} must be three weights >= 0")
        if int(self.epochs) < 1 or int(self.batch_size) < 1 or not self.lr > 0:
            raise ConfigError(f"PriorConfig: epochs={self.epochs}, batch_size={self.batch_size}, lr={self.lr} must be positive")
        if self.beta < 0:
            raise ConfigError(f"PriorConfig.beta={self.beta!r} must be >= 0")
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        object.__setattr__(self, "scale_weights", tuple(float(w) for w in self.scale_weights))

    def replace(self, **changes) -> "PriorConfig":
        """A copy with ``changes`` applied (unknown keys raise :class:`ConfigError`)."""
        names = {f.name for f in fields(self)}
        bad = sorted(set(changes) - names)
        if bad:
            raise ConfigError(f"unknown PriorConfig field(s) {bad}; allowed: {sorted(names)}")
        return PriorConfig(**{**asdict(self), **changes})

    def to_dict(self) -> dict:
        """JSON-serialisable dict."""
        d = asdict(self)
        d["widths"], d["scale_weights"] = list(self.widths), list(self.scale_weights)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "PriorConfig":
        """Inverse of :meth:`to_dict`."""
        d = dict(d)
        for k in ("widths", "scale_weights"):
            if k in d:
                d[k] = tuple(d[k])
        return cls().replace(**d)


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1), nn.BatchNorm2d(cout), nn.GELU())


class ImagePrior(nn.Module):
    """Convolutional encoder to a unit-norm embedding, multi-resolution decoder back to the image.

    Parameters
    ----------
    config : PriorConfig

    Notes
    -----
    ``encode(x)`` takes images (n, 28, 28) or (n, 1, 28, 28) in [0, 1] and
    returns unit-norm embeddings (n, embed_dim); ``decode(z)`` returns the
    28x28 images in [0, 1]; ``decode_pyramid(z)`` the 7x7, 14x14 and 28x28 ones.
    """

    def __init__(self, config: PriorConfig | None = None):
        super().__init__()
        self.config = cfg = config or PriorConfig()
        w1, w2, w3 = cfg.widths
        self.encoder = nn.Sequential(_conv(1, w1), _conv(w1, w2, stride=2), _conv(w2, w3, stride=2), nn.Flatten())
        n_out = cfg.embed_dim * (2 if cfg.kind == "vae" else 1)
        self.to_embedding = nn.Linear(w3 * 49, n_out)
        self.from_embedding = nn.Sequential(nn.Linear(cfg.embed_dim, w3 * 49), nn.GELU())
        self.block7 = _conv(w3, w3)
        self.block14 = _conv(w3, w2)
        self.block28 = _conv(w2, w1)
        self.heads = nn.ModuleList([nn.Conv2d(w3, 1, 3, padding=1), nn.Conv2d(w2, 1, 3, padding=1), nn.Conv2d(w1, 1, 3, padding=1)])

    @staticmethod
    def _as_batch(x: torch.Tensor) -> torch.Tensor:
        return x.unsqueeze(1) if x.dim() == 3 else x

    def encode_stats(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Un-normalised mean (and log-variance for the VAE) of the embedding."""
        h = self.to_embedding(self.encoder(self._as_batch(x)))
        if self.config.kind == "vae":
            mu, logvar = h.chunk(2, dim=1)
            return mu, logvar.clamp(-10.0, 5.0)
        return h, None

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Unit-norm embeddings (n, embed_dim) of images in [0, 1]."""
        return F.normalize(self.encode_stats(x)[0], dim=1)

    def decode_pyramid(self, z: torch.Tensor) -> list[torch.Tensor]:
        """Images at 7x7, 14x14 and 28x28 (each (n, 28|14|7, ...) in [0, 1]) from embeddings."""
        h = self.from_embedding(F.normalize(z, dim=1)).view(len(z), self.config.widths[2], 7, 7)
        h7 = self.block7(h)
        h14 = self.block14(F.interpolate(h7, scale_factor=2, mode="nearest"))
        h28 = self.block28(F.interpolate(h14, scale_factor=2, mode="nearest"))
        return [torch.sigmoid(head(t)).squeeze(1) for head, t in zip(self.heads, (h7, h14, h28))]

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """28x28 images in [0, 1] from embeddings (re-normalised first)."""
        return self.decode_pyramid(z)[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruction of ``x`` (n, 28, 28)."""
        return self.decode(self.encode(x))

    def loss(self, x: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        """Training loss of a batch: weighted MSE at each scale (+ beta * KL for the VAE)."""
        mu, logvar = self.encode_stats(x)
        z = mu
        kl = None
        if logvar is not None:
            eps = torch.randn(mu.shape, generator=generator, dtype=mu.dtype, device=mu.device)
            z = mu + torch.exp(0.5 * logvar) * eps
            kl = -0.5 * torch.mean(1 + logvar - mu.pow(2) - logvar.exp())
        outs = self.decode_pyramid(z)
        targets = downsample_targets(self._as_batch(x).squeeze(1))
        parts = {f"mse{s}": F.mse_loss(o, t) for s, o, t in zip(SCALES, outs, targets)}
        total = sum(w * parts[f"mse{s}"] for w, s in zip(self.config.scale_weights, SCALES))
        if kl is not None:
            total = total + self.config.beta * kl
            parts["kl"] = kl
        return total, {k: float(v.detach()) for k, v in parts.items()}


def downsample_targets(x: torch.Tensor) -> list[torch.Tensor]:
    """The images (n, 28, 28) area-averaged to 7x7 and 14x14, and themselves: one target per scale."""
    x4 = x.unsqueeze(1)
    return [F.avg_pool2d(x4, 4).squeeze(1), F.avg_pool2d(x4, 2).squeeze(1), x]

