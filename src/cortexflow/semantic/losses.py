"""CLIP-style alignment losses between brain embeddings and image-encoder embeddings.

:func:`clip_infonce` is the symmetric InfoNCE of CLIP (Radford et al. 2021):
for a batch of B pairs, logits ``s * z_i . t_j`` with a learnable scale
``s = exp(logit_scale)`` clamped at 100, cross-entropy over rows (brain ->
image) and over columns (image -> brain), averaged. ``positives`` spreads the targets over several
matches (for example every image of the same class). A batch that holds the
same stimulus twice (miyawaki repeats its 20 images) needs no such mask: the
duplicates' target embeddings are identical, so their logits are equal and the
summed hard-label loss equals the soft-label one exactly (a test checks this).

:class:`SemanticGuidance` holds one projection head per encoder layer
(multi-scale guidance: an intermediate block's pooled features and the final
pooled features of the encoder), a learnable temperature per layer, and the
training stimuli's embeddings, centred on their training mean and unit-normed.
Its two loss terms, ``semantic_infonce`` and ``semantic_cosine``, plug into
:func:`cortexflow.training.train_model` through ``loss_terms`` and are weighted
by ``config.loss_weights``; they read the rows of the current batch through the
``index`` key, which counts rows of the training arrays given to ``train_model``.
"""

from __future__ import annotations

import math
from typing import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cortexflow.exceptions import ConfigError

__all__ = [
    "clip_infonce",
    "LearnableTemperature",
    "SemanticGuidance",
    "SemanticInfoNCETerm",
    "SemanticCosineTerm",
    "duplicate_groups",
    "INIT_TEMPERATURE",
    "MAX_LOGIT_SCALE",
]

INIT_TEMPERATURE = 0.07  # CLIP's initial temperature
MAX_LOGIT_SCALE = 100.0  # CLIP clamps exp(logit_scale) at 100


def clip_infonce(z: torch.Tensor, t: torch.Tensor, logit_scale: torch.Tensor | float,
                 positives: torch.Tensor | None = None) -> torch.Tensor:
    """Symmetric InfoNCE between two batches of embeddings.

    Parameters
    ----------
    z, t : Tensor, shape (B, d)
        Paired embeddings (row i of ``z`` goes with row i of ``t``); they are
        L2-normalised here.
    logit_scale : Tensor or float
        Multiplier of the cosine similarities (1 / temperature).
    positives : bool Tensor, shape (B, B), optional
        ``positives[i, j]`` is True when z_i and t_j show the same stimulus.
        Default: the identity (only the paired row is positive). The diagonal
        must be True.

    Returns
    -------
    Tensor
        Scalar: ``(CE(rows) + CE(columns)) / 2``.
    """
    if z.shape != t.shape or z.ndim != 2:
        raise ValueError(f"z and t must have the same (B, d) shape; got {tuple(z.shape)} and {tuple(t.shape)}")
    z = F.normalize(z, dim=-1)
    t = F.normalize(t, dim=-1)
    logits = logit_scale * (z @ t.T)
    if positives is None:
        labels = torch.arange(len(z), device=z.device)
        return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))
    p = positives.to(logits.dtype)
    rows = p / p.sum(dim=1, keepdim=True)
    cols = p.T / p.T.sum(dim=1, keepdim=True)
    loss_r = -(rows * F.log_softmax(logits, dim=1)).sum(dim=1).mean()
    loss_c = -(cols * F.log_softmax(logits.T, dim=1)).sum(dim=1).mean()
    return 0.5 * (loss_r + loss_c)


class LearnableTemperature(nn.Module):
    """``exp(logit_scale)``, initialised at 1 / 0.07 and clamped at 100 (as in CLIP)."""

    def __init__(self, init_temperature: float = INIT_TEMPERATURE, max_scale: float = MAX_LOGIT_SCALE):
        super().__init__()
        if not 0 < init_temperature:
            raise ConfigError(f"init_temperature={init_temperature} must be > 0")
        self.max_log = math.log(max_scale)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / init_temperature)))

    def forward(self) -> torch.Tensor:
        return self.logit_scale.clamp(max=self.max_log).exp()


def duplicate_groups(images: np.ndarray) -> np.ndarray:
    """Integer id per row; rows holding byte-identical images share an id."""
    a = np.ascontiguousarray(np.asarray(images, dtype=np.float32).reshape(len(images), -1))
    _, ids = np.unique(a, axis=0, return_inverse=True)
    return ids.reshape(-1).astype(np.int64)


class SemanticGuidance(nn.Module):
    """Projection heads, temperatures and target embeddings for multi-scale CLIP-style guidance.

    Parameters
    ----------
    embed_dim : int
        Width of the brain embedding (CCCV1: 512).
    targets : mapping of layer name to ndarray, shape (n_train, d_layer)
        Encoder embeddings of the training stimuli, in the row order of the
        training arrays.
    layer_weights : mapping of layer name to float, optional
        Relative weight of each layer in both losses (default 1 each); they
        are normalised to sum to 1.
    hidden_dim : int
        Width of the hidden layer of each projection head.
    groups : ndarray of int, shape (n_train,), optional
        Rows with equal ids are positives of each other in the InfoNCE (for
        example class labels, for class-level contrast). Default: every row is
        its own group (CLIP's pairing; exact duplicate stimuli need nothing more).
    center : ndarray per layer, optional
        Subtracted from targets before normalising; default the mean of
        ``targets`` (the training stimuli's mean embedding).
    """

    def __init__(self, embed_dim: int, targets: Mapping[str, np.ndarray],
                 layer_weights: Mapping[str, float] | None = None, *, hidden_dim: int = 512,
                 groups: np.ndarray | None = None, center: Mapping[str, np.ndarray] | None = None):
        super().__init__()
        if not targets:
            raise ConfigError("SemanticGuidance needs at least one target layer")
        self.layer_names = list(targets)
        n = {len(v) for v in targets.values()}
        if len(n) != 1:
            raise ConfigError(f"target layers have different numbers of rows: {sorted(n)}")
        (self.n_rows,) = n
        weights = {ly: float((layer_weights or {}).get(ly, 1.0)) for ly in self.layer_names}
        if any(w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
            raise ConfigError(f"layer weights must be >= 0 with a positive sum; got {weights}")
        total = sum(weights.values())
        self.layer_weights = {ly: w / total for ly, w in weights.items()}
        self.heads = nn.ModuleDict()
        self.temperatures = nn.ModuleDict()
        for i, ly in enumerate(self.layer_names):
            t = np.asarray(targets[ly], dtype=np.float32)
            mu = np.asarray(center[ly], dtype=np.float32) if center is not None else t.mean(axis=0)
            tc = torch.from_numpy(t - mu)
            self.register_buffer(f"target_{i}", F.normalize(tc, dim=-1))
            d = t.shape[1]
            self.heads[ly] = nn.Sequential(nn.Linear(embed_dim, hidden_dim), nn.SiLU(), nn.Linear(hidden_dim, d))
            self.temperatures[ly] = LearnableTemperature()
        g = np.arange(self.n_rows) if groups is None else np.asarray(groups)
        if len(g) != self.n_rows:
            raise ConfigError(f"groups has {len(g)} rows but targets have {self.n_rows}")
        self.register_buffer("groups", torch.as_tensor(g, dtype=torch.long))

    def target(self, layer: str) -> torch.Tensor:
        """Centred, unit-norm target embeddings of every training row for ``layer``."""
        return getattr(self, f"target_{self.layer_names.index(layer)}")

    def project(self, embedding: torch.Tensor) -> dict[str, torch.Tensor]:
        """Map brain embeddings into each layer's space (unit-norm)."""
        return {ly: F.normalize(self.heads[ly](embedding), dim=-1) for ly in self.layer_names}

    def infonce(self, out: dict) -> torch.Tensor:
        """Layer-weighted symmetric InfoNCE of a batch (``out`` from the trainer)."""
        idx = out["index"]
        proj = self.project(out["embedding"])
        g = self.groups[idx]
        pos = g[:, None] == g[None, :]
        loss = 0.0
        for ly, w in self.layer_weights.items():
            loss = loss + w * clip_infonce(proj[ly], self.target(ly)[idx], self.temperatures[ly](), pos)
        return loss

    def cosine(self, out: dict) -> torch.Tensor:
        """Layer-weighted mean of ``1 - cos(projection, target)`` over the batch."""
        idx = out["index"]
        proj = self.project(out["embedding"])
        loss = 0.0
        for ly, w in self.layer_weights.items():
            loss = loss + w * (1.0 - (proj[ly] * self.target(ly)[idx]).sum(dim=-1)).mean()
        return loss

    def terms(self) -> dict[str, nn.Module]:
        """The two loss terms for ``train_model(loss_terms=...)``; they share this module's parameters."""
        return {"semantic_infonce": SemanticInfoNCETerm(self), "semantic_cosine": SemanticCosineTerm(self)}


class SemanticInfoNCETerm(nn.Module):
    """Loss term ``semantic_infonce`` (trained: the heads and temperatures of its guidance)."""

    def __init__(self, guidance: SemanticGuidance):
        super().__init__()
        self.guidance = guidance

    def forward(self, out: dict) -> torch.Tensor:
        return self.guidance.infonce(out)


class SemanticCosineTerm(nn.Module):
    """Loss term ``semantic_cosine``: ``1 - cosine`` between projection and target."""

    def __init__(self, guidance: SemanticGuidance):
        super().__init__()
        self.guidance = guidance

    def forward(self, out: dict) -> torch.Tensor:
        return self.guidance.cosine(out)
