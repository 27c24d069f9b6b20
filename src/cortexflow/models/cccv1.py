"""The CCCV1 network (CortexFlow-CLIP-CNN V1), as the design document describes it.

Encoder  : Linear(d_in, 1024)+LN+SiLU+Dropout(d) -> Linear(1024, 1024)+LN+SiLU+Dropout(0.7 d)
           -> Linear(1024, 512)+LN+SiLU+Dropout(0.5 d) -> Linear(512, 512)+LN+Tanh -> L2 norm
Enhancer : e + alpha * Tanh(Linear(256, 512)(SiLU(Linear(512, 256)(e)))) -> L2 norm
Decoder  : Linear(512, 512)+LN+SiLU+Dropout(dd) -> Linear(512, n_pixels)+Sigmoid -> output_shape

The decoder's last layer has ``prod(output_shape)`` outputs for any image shape
(H x W for grayscale, H x W x C for RGB; the estimator builds it with the flat
``(prod,)`` and reshapes); for 28 x 28 grayscale that is the 784 of the design.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["StreamDropout", "CLIPGuidedEncoder", "SemanticEnhancer", "CLIPGuidedDecoder", "CCCV1"]


class StreamDropout(nn.Dropout):
    """``nn.Dropout`` with its mask drawn by explicit operations: ``bernoulli_(1 - p)``, ``div_(1 - p)``, multiply.

    The result is the same inverted dropout as ``nn.Dropout``; spelling the
    mask out (rather than leaving it to PyTorch's internal, version- and
    device-specific dropout kernels) lets the batched trainer
    (:mod:`cortexflow.training.batched`) draw the identical mask for each
    member from that member's own random stream. Checkpoints are unaffected
    (dropout has no parameters).

    Attributes
    ----------
    generator : torch.Generator or None
        The stream the masks are drawn from (on the input's device); ``None``
        uses PyTorch's global generator. Estimators set it for the length of
        a fit (see :mod:`cortexflow.training.seeding`).
    """

    generator: "torch.Generator | None" = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if self.p == 1.0:
            return x * 0.0
        noise = torch.empty_like(x).bernoulli_(1.0 - self.p, generator=self.generator)
        noise.div_(1.0 - self.p)
        return x * noise


class CLIPGuidedEncoder(nn.Module):
    """MLP from a brain-signal vector to a unit-norm embedding, with progressive dropout.

    The name is the CCCV1 design's; there is no CLIP model inside. The embedding is
    "CLIP-like" only in being 512-d and L2-normalised (the ``cccv1-prior`` method of
    :mod:`cortexflow.priors` trains it into an image prior's embedding space).
    """

    def __init__(self, input_dim: int, dropout: float = 0.06, hidden_dim: int = 1024, embed_dim: int = 512):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(input_dim, hidden_dim),
            nn.LayerNorm(hidden_dim),
            nn.SiLU(),
            StreamDropout(dropout),
            nn.Linear(hidden_dim, hidden_dim),
            nn.LayerNorm(hidden_dim),
            nn.SiLU(),
            StreamDropout(dropout * 0.7),
            nn.Linear(hidden_dim, embed_dim),
            nn.LayerNorm(embed_dim),
            nn.SiLU(),
            StreamDropout(dropout * 0.5),
            nn.Linear(embed_dim, embed_dim),
            nn.LayerNorm(embed_dim),
            nn.Tanh(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.net(x), dim=-1)


class SemanticEnhancer(nn.Module):
    """Residual refinement ``e + alpha * enhance(e)``, re-normalised to unit length."""

    def __init__(self, embed_dim: int = 512, hidden_dim: int = 256, alpha: float = 0.1):
        super().__init__()
        self.alpha = float(alpha)
        self.net = nn.Sequential(
            nn.Linear(embed_dim, hidden_dim), nn.SiLU(), nn.Linear(hidden_dim, embed_dim), nn.Tanh()
        )

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        return F.normalize(e + self.alpha * self.net(e), dim=-1)


class CLIPGuidedDecoder(nn.Module):
    """Embedding to image: Linear+LN+SiLU+Dropout, then Linear+Sigmoid, reshaped.

    An MLP (no convolution and no CLIP, despite the design's name).
    """

    def __init__(self, embed_dim: int = 512, dropout: float = 0.02, output_shape: tuple[int, ...] = (1, 28, 28)):
        super().__init__()
        self.output_shape = tuple(output_shape)
        n_out = math.prod(self.output_shape)
        self.net = nn.Sequential(
            nn.Linear(embed_dim, embed_dim),
            nn.LayerNorm(embed_dim),
            nn.SiLU(),
            StreamDropout(dropout),
            nn.Linear(embed_dim, n_out),
            nn.Sigmoid(),
        )

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        return self.net(e).reshape(e.shape[0], *self.output_shape)


class CCCV1(nn.Module):
    """CortexFlow-CLIP-CNN V1: encoder, semantic enhancer and decoder.

    Parameters
    ----------
    input_dim : int
        Features per input vector (after the optional front-end).
    dropout_encoder, dropout_decoder : float
        ``d`` and ``dd`` of the CCCV1 design document.
    alpha : float
        Residual weight of the semantic enhancer.
    output_shape : tuple of int
        Shape of one reconstruction, ``(1, 28, 28)`` by default.
    frontend : nn.Module, optional
        Maps raw input (for example EEG of shape (channels, times)) to a flat
        vector of ``input_dim`` features before the encoder.
    """

    def __init__(
        self,
        input_dim: int,
        dropout_encoder: float = 0.06,
        dropout_decoder: float = 0.02,
        alpha: float = 0.1,
        hidden_dim: int = 1024,
        embed_dim: int = 512,
        output_shape: tuple[int, ...] = (1, 28, 28),
        frontend: nn.Module | None = None,
    ):
        super().__init__()
        self.input_dim = int(input_dim)
        self.embed_dim = int(embed_dim)
        self.frontend = frontend
        self.encoder = CLIPGuidedEncoder(input_dim, dropout_encoder, hidden_dim, embed_dim)
        self.enhancer = SemanticEnhancer(embed_dim, embed_dim // 2, alpha)
        self.decoder = CLIPGuidedDecoder(embed_dim, dropout_decoder, output_shape)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Return the enhanced, unit-norm 512-d embedding of ``x``."""
        if self.frontend is not None:
            x = self.frontend(x)
        return self.enhancer(self.encoder(x))

    def decode(self, e: torch.Tensor) -> torch.Tensor:
        """Return images in [0, 1] from embeddings."""
        return self.decoder(e)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))
