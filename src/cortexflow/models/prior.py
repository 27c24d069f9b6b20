"""The image prior: a convolutional autoencoder (or VAE) with a unit-norm embedding.

The encoder maps an image of ``PriorConfig.image_shape`` ((H, W) grayscale or
(H, W, 3) RGB; 28x28 grayscale by default) to an L2-normalised vector (the
design's "CLIP-like" image space, 512-d by default); the decoder is
multi-resolution: it predicts the image at every level of the encoder's
pyramid, coarse to fine, each through its own sigmoid head, and training puts
a loss on every level (targets: the image area-averaged to that size).

The pyramid follows the image shape (:func:`pyramid_sizes`): stride-2 stages
halve the sides (``ceil(n / 2)``), at least two of them and more until the
coarsest grid is at most 8 pixels a side. For 28x28 that is 28 -> 14 -> 7
(the original layout: same modules, names, parameters and random draws, so
every 28x28 number is unchanged); 10x10 gives 10 -> 5 -> 3, 64x64 gives
64 -> 32 -> 16 -> 8. In the VAE variant the encoder also gives a
log-variance; training decodes a noisy sample (re-normalised), and the
embedding is the normalised mean.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn
import numpy as np

from cortexflow.data.validation import normalize_image_shape
from cortexflow.exceptions import ConfigError, CortexFlowError

__all__ = ["PriorConfig", "ImagePrior", "downsample_targets", "pyramid_sizes", "SCALES", "DEFAULT_IMAGE_SHAPE",
           "MAX_EMBED_DIM", "MAX_SEED"]

#: Side lengths of the decoder's outputs at 28x28, coarse to fine.
SCALES = (7, 14, 28)
#: Image shape of a prior unless told otherwise (the registered data sets).
DEFAULT_IMAGE_SHAPE = (28, 28)
#: The pyramid adds stride-2 stages until the coarsest side is at most this.
_COARSEST = 8
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
    image_shape : tuple of int
        Shape of one image: ``(H, W)`` grayscale or ``(H, W, 3)`` RGB, sides 8..256
        (``(H, W, 1)`` is read as ``(H, W)``). The network's layout follows it.
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
    image_shape: tuple[int, ...] = DEFAULT_IMAGE_SHAPE

    def __post_init__(self) -> None:
        try:
            shape = normalize_image_shape(self.image_shape, source="PriorConfig")
        except CortexFlowError as exc:
            raise ConfigError(str(exc)) from None
        object.__setattr__(self, "image_shape", shape)
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
        d["image_shape"] = list(self.image_shape)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "PriorConfig":
        """Inverse of :meth:`to_dict`."""
        d = dict(d)
        for k in ("widths", "scale_weights", "image_shape"):
            if k in d:
                d[k] = tuple(d[k])
        return cls().replace(**d)


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1), nn.BatchNorm2d(cout), nn.GELU())


def pyramid_sizes(image_shape: tuple[int, ...]) -> list[tuple[int, int]]:
    """(h, w) of every level of the prior's pyramid, coarse to fine, for one image of ``image_shape``.

    Each stride-2 stage maps a side ``n`` to ``ceil(n / 2)``; there are at
    least two stages, and more while the larger side exceeds 8.
    ``(28, 28)`` gives ``[(7, 7), (14, 14), (28, 28)]``.
    """
    h, w = int(image_shape[0]), int(image_shape[1])
    sizes = [(h, w)]
    while len(sizes) < 3 or max(sizes[-1]) > _COARSEST:
        ph, pw = sizes[-1]
        if (ph, pw) == (1, 1):
            break
        sizes.append((-(-ph // 2), -(-pw // 2)))
    return sizes[::-1]


def _level_name(size: tuple[int, int]) -> str:
    h, w = size
    return f"block{h}" if h == w else f"block{h}x{w}"


class ImagePrior(nn.Module):
    """Convolutional encoder to a unit-norm embedding, multi-resolution decoder back to the image.

    Parameters
    ----------
    config : PriorConfig

    Notes
    -----
    ``encode(x)`` takes images (n, H, W), (n, 1, H, W) or, for RGB,
    (n, H, W, 3) in [0, 1] and returns unit-norm embeddings (n, embed_dim);
    ``decode(z)`` returns images of ``config.image_shape`` (n, H, W) or
    (n, H, W, 3) in [0, 1]; ``decode_pyramid(z)`` the image at every level of
    :func:`pyramid_sizes`, coarse to fine (7x7, 14x14 and 28x28 at 28x28).

    Encoder channels: ``widths[0]`` at full size, ``widths[1]`` after the first
    stride-2 stage, ``widths[2]`` after the second and any further one; the
    decoder mirrors them, with one block per level (``block7``, ``block14``,
    ``block28`` at 28x28; ``block5x4`` ... for non-square images).
    """

    def __init__(self, config: PriorConfig | None = None):
        super().__init__()
        self.config = cfg = config or PriorConfig()
        w1, w2, w3 = cfg.widths
        self.image_shape = tuple(cfg.image_shape)
        self.channels = 3 if len(self.image_shape) == 3 else 1
        self.sizes = pyramid_sizes(self.image_shape)
        n_down = len(self.sizes) - 1
        # channels at each level, fine (index 0) to coarse
        chans = [w1, w2] + [w3] * (n_down - 1)
        stages = [_conv(self.channels, w1)] + [_conv(chans[i], chans[i + 1], stride=2) for i in range(n_down)]
        self.encoder = nn.Sequential(*stages, nn.Flatten())
        hc, wc = self.sizes[0]
        n_out = cfg.embed_dim * (2 if cfg.kind == "vae" else 1)
        self.to_embedding = nn.Linear(w3 * hc * wc, n_out)
        self.from_embedding = nn.Sequential(nn.Linear(cfg.embed_dim, w3 * hc * wc), nn.GELU())
        coarse_to_fine = chans[::-1]  # channels of the decoder's output at each level, coarse to fine
        self._blocks = []
        for level, size in enumerate(self.sizes):
            cin = w3 if level == 0 else coarse_to_fine[level - 1]
            name = _level_name(size)
            self.add_module(name, _conv(cin, coarse_to_fine[level]))
            self._blocks.append(name)
        self.heads = nn.ModuleList([nn.Conv2d(c, self.channels, 3, padding=1) for c in coarse_to_fine])
        # loss weight of each level: scale_weights for the three finest, the coarsest weight for any coarser one
        sw = cfg.scale_weights
        self.level_weights = tuple([sw[0]] * (len(self.sizes) - 3) + list(sw))

    def _as_batch(self, x: torch.Tensor) -> torch.Tensor:
        """(n, C, H, W) from (n, H, W), (n, 1, H, W) or channel-last (n, H, W, 3)."""
        if x.dim() == 3:
            return x.unsqueeze(1)
        if self.channels == 3 and x.dim() == 4 and x.shape[-1] == 3 and x.shape[1] != 3:
            return x.permute(0, 3, 1, 2)
        return x

    def _as_images(self, t: torch.Tensor) -> torch.Tensor:
        """(n, H, W) or channel-last (n, H, W, 3) from (n, C, H, W)."""
        return t.squeeze(1) if self.channels == 1 else t.permute(0, 2, 3, 1)

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
        """Images at every pyramid level, coarse to fine (7x7, 14x14, 28x28 at 28x28), in [0, 1], from embeddings."""
        hc, wc = self.sizes[0]
        h = self.from_embedding(F.normalize(z, dim=1)).view(len(z), self.config.widths[2], hc, wc)
        feats = []
        for level, name in enumerate(self._blocks):
            if level:
                prev, size = self.sizes[level - 1], self.sizes[level]
                if size == (2 * prev[0], 2 * prev[1]):
                    h = F.interpolate(h, scale_factor=2, mode="nearest")
                else:
                    h = F.interpolate(h, size=size, mode="nearest")
            h = getattr(self, name)(h)
            feats.append(h)
        return [self._as_images(torch.sigmoid(head(t))) for head, t in zip(self.heads, feats)]

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Images of ``config.image_shape`` in [0, 1] from embeddings (re-normalised first)."""
        return self.decode_pyramid(z)[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruction of ``x``."""
        return self.decode(self.encode(x))

    def loss(self, x: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        """Training loss of a batch: weighted MSE at each level (+ beta * KL for the VAE)."""
        mu, logvar = self.encode_stats(x)
        z = mu
        kl = None
        if logvar is not None:
            eps = torch.randn(mu.shape, generator=generator, dtype=mu.dtype, device=mu.device)
            z = mu + torch.exp(0.5 * logvar) * eps
            kl = -0.5 * torch.mean(1 + logvar - mu.pow(2) - logvar.exp())
        outs = self.decode_pyramid(z)
        targets = [self._as_images(t) for t in downsample_targets(self._as_batch(x), self.sizes, keep_channels=True)]
        names = [f"mse{h}" if h == w else f"mse{h}x{w}" for h, w in self.sizes]
        parts = {name: F.mse_loss(o, t) for name, o, t in zip(names, outs, targets)}
        total = sum(wt * parts[name] for wt, name in zip(self.level_weights, names))
        if kl is not None:
            total = total + self.config.beta * kl
            parts["kl"] = kl
        return total, {k: float(v.detach()) for k, v in parts.items()}


def downsample_targets(x: torch.Tensor, sizes: list[tuple[int, int]] | None = None, *,
                       keep_channels: bool = False) -> list[torch.Tensor]:
    """The images area-averaged to every pyramid size, the last being themselves: one target per level.

    Parameters
    ----------
    x : Tensor (n, H, W), or (n, C, H, W) with ``keep_channels=True``
    sizes : list of (h, w), optional
        Coarse to fine, the last (H, W); default :func:`pyramid_sizes` of x
        (7x7, 14x14, 28x28 at 28x28). A size that divides (H, W) is an average
        pool with that factor, any other an adaptive area average.
    """
    x4 = x if keep_channels else x.unsqueeze(1)
    H, W = x4.shape[-2:]
    sizes = pyramid_sizes((H, W)) if sizes is None else sizes
    out = []
    for h, w in sizes[:-1]:
        if H % h == 0 and W % w == 0 and H // h == W // w:
            t = F.avg_pool2d(x4, H // h)
        elif H % h == 0 and W % w == 0:
            t = F.avg_pool2d(x4, (H // h, W // w))
        else:
            t = F.adaptive_avg_pool2d(x4, (h, w))
        out.append(t if keep_channels else t.squeeze(1))
    return out + [x]
