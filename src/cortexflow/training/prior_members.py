"""``cccv1-prior`` ensemble members trained together by the batched trainer.

:class:`~cortexflow.priors.cccv1_prior.CCCV1PriorDecoder` with ``n_members > 1``
trains its members here in one loop (:func:`cortexflow.training.batched.train_batched`
with a :class:`PriorMemberStack`): the members' deep-encoder weights, gates
and InfoNCE temperatures are stacked along a leading dimension; the fixed
ridge read-out and the frozen prior decoder are shared, the decoder turning
all members' embeddings into images in one call. Each member keeps its own
inner validation split, mini-batch order, dropout stream, optimiser state,
learning-rate schedule and early stopping (the shared epoch loop's,
:mod:`cortexflow.training.loop`), drawn from its seed exactly as the
sequential path (:func:`~cortexflow.training.trainer.train_model`) draws
them, so a member equals the one trained alone up to floating-point
summation order (tested on CPU). The alignment terms are the estimator's own
(:class:`~cortexflow.priors.cccv1_prior.EmbeddingAlignment`), applied per
member with :func:`torch.func.vmap`.

Supported: the MLP encoder (``encoder="mlp"``) with or without the ridge
read-out, the decoder frozen (no ``fine_tune_decoder`` phase).
"""

from __future__ import annotations

import logging
from typing import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

from cortexflow.models.cccv1 import CLIPGuidedEncoder, SemanticEnhancer
from cortexflow.training.batched import BatchedNotSupported, MemberStack, batched_encode, train_batched
from cortexflow.training.config import CCCV1Config
from cortexflow.training.devices import autocast
from cortexflow.training.trainer import TrainResult

__all__ = ["PriorMemberStack", "train_prior_members"]

logger = logging.getLogger(__name__)

#: Name of the InfoNCE temperature inside a member (``nn.ModuleDict(net=..., infonce=...)``).
_TEMPERATURE = "infonce.alignment.temperature.logit_scale"


class PriorMemberStack(MemberStack):
    """How the batched trainer sees ``cccv1-prior`` members.

    A member is ``nn.ModuleDict({"net": PriorBrainNet, "infonce": _InfoNCETerm})``
    as :class:`~cortexflow.priors.cccv1_prior.CCCV1PriorDecoder` builds it: the
    net's encoder is either a ``LinearSkipEncoder`` (``linear`` fixed,
    ``deep`` = CCCV1's encoder and semantic enhancer, a learned ``gate``) or
    the deep encoder alone; its decoder is the frozen prior decoder.

    Parameters
    ----------
    template : nn.ModuleDict
        Member 0; its frozen parts (read-out, decoder) serve every member.
    loss_weights : mapping of str to float
        Weights of ``prior_cosine`` and ``prior_infonce`` (default 1 each), as
        :func:`~cortexflow.training.trainer.default_loss` weighs loss terms.

    Raises
    ------
    BatchedNotSupported
        An encoder other than CCCV1's MLP encoder with its semantic enhancer.
    """

    def __init__(self, template: nn.ModuleDict, loss_weights: Mapping[str, float]):
        super().__init__(template)
        net = template["net"]
        enc = net.encoder
        skip = isinstance(getattr(enc, "deep", None), nn.Module)
        deep, prefix = (enc.deep, "net.encoder.deep") if skip else (enc, "net.encoder")
        if not (isinstance(deep, nn.Sequential) and len(deep) == 2 and isinstance(deep[0], CLIPGuidedEncoder)
                and isinstance(deep[1], SemanticEnhancer)):
            raise BatchedNotSupported(f"{type(deep).__name__} encoder has no batched path; only CCCV1's MLP encoder")
        self.encoder_net, self.enhancer = deep[0].net, deep[1]
        self.prefixes = (f"{prefix}.0.net", f"{prefix}.1.net")
        self.linear = enc.linear if skip else None
        self.gate = "net.encoder.gate" if skip else None
        self.decoder = net.decoder
        self.infonce = template["infonce"]
        self.alignment = self.infonce.alignment
        self.terms = {"prior_cosine": vmap(self._cosine), "prior_infonce": vmap(self._infonce)}
        self.weights = {name: float(loss_weights.get(name, 1.0)) for name in self.terms}

    def _cosine(self, emb: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """The member's ``1 - cosine`` term (the estimator's own)."""
        return self.alignment.cosine({"embedding": emb, "index": index})

    def _infonce(self, emb: torch.Tensor, index: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
        """The member's InfoNCE term: the estimator's own, with the member's temperature."""
        return functional_call(self.infonce, {"alignment.temperature.logit_scale": logit_scale},
                               ({"embedding": emb, "index": index},))

    def embed(self, P: dict[str, torch.Tensor], x: torch.Tensor, training: bool, G=None, deferred=None,
              streams=None) -> torch.Tensor:
        """Unit-norm brain embeddings (A, B, d) of (A, B, D) inputs with the stacked parameters ``P``."""
        h = batched_encode(self.encoder_net, self.enhancer, self.prefixes, P, x, training, G, deferred, streams)
        if self.linear is None:
            return h
        return F.normalize(self.linear(x) + P[self.gate].view(-1, 1, 1) * h, dim=-1)

    def loss(self, P, batch, *, training, autocast_ctx, G=None, deferred=None, streams=None):
        rows = batch["rows"]
        n = rows[0]
        if any(r != n for r in rows):
            raise BatchedNotSupported(f"cccv1-prior members must share their rows per step; got {rows}")
        x, y, index = batch["x"][:, :n], batch["target"][:, :n], batch["index"][:, :n]
        A = len(x)
        with autocast(*autocast_ctx):
            emb = self.embed(P, x, training, G, deferred, streams)
            pred = self.decoder(emb.reshape(A * n, -1)).reshape(A, n, -1)
        emb, pred = emb.float(), pred.float()
        pix = (pred - y).pow(2).mean((1, 2))
        if not training:  # validation watches the pixel loss only
            return pix, pix
        loss = pix
        for name, term in self.terms.items():
            args = (emb, index, P[_TEMPERATURE]) if name == "prior_infonce" else (emb, index)
            loss = loss + self.weights[name] * term(*args)
        return loss, pix


def _same_frozen_parts(members: Sequence[nn.ModuleDict]) -> bool:
    """Whether every member's frozen parameters and buffers equal member 0's (the stack uses member 0's)."""
    ref = members[0].state_dict()
    trained = {n for n, p in members[0].named_parameters() if p.requires_grad}
    for m in members[1:]:
        state = m.state_dict()
        if state.keys() != ref.keys() or any(
                k not in trained and not torch.equal(state[k], ref[k]) for k in ref):
            return False
    return True


def train_prior_members(
    members: Sequence[nn.ModuleDict],
    X: np.ndarray,
    Y: np.ndarray,
    config: CCCV1Config,
    seeds: Sequence[int],
    generators: Sequence[torch.Generator],
    *,
    device: "str | torch.device | None" = "auto",
    amp: str = "off",
    progress: bool | None = False,
) -> list[TrainResult]:
    """Train ``cccv1-prior`` members together on the same rows, each in place, as the sequential path would.

    Parameters
    ----------
    members : sequence of nn.ModuleDict
        ``{"net": PriorBrainNet, "infonce": _InfoNCETerm}`` per member (see
        :class:`PriorMemberStack`), initialised; frozen parts equal in all.
    X : ndarray (n, D)
        Scaled training signals.
    Y : ndarray (n, P)
        Flat training images (P = H * W [* 3]) (the alignment targets are inside the members).
    config : CCCV1Config
        Optimiser, schedule, early stopping, batch size and ``loss_weights``.
    seeds : sequence of int
        Member seeds: inner split and batch order, as ``train_model(seed=...)``.
    generators : sequence of torch.Generator
        Each member's CPU stream right after its weights were drawn: its
        dropout masks continue it (on CUDA: a CUDA generator seeded with the
        seed, see :func:`cortexflow.training.seeding.dropout_generator`).
    device, amp, progress :
        As for :func:`~cortexflow.training.batched.train_batched`.

    Returns
    -------
    list of TrainResult
        One per member; the members end with their best weights, in eval mode, on CPU.

    Raises
    ------
    BatchedNotSupported
        Members whose encoder has no batched path, or whose frozen parts differ.
    """
    if not _same_frozen_parts(members):
        raise BatchedNotSupported("cccv1-prior members differ in their frozen parts (read-out or decoder); "
                                  "train them one after another")
    stack = PriorMemberStack(members[0], config.loss_weights)
    K = len(members)
    return train_batched(list(members), [X] * K, [Y] * K, config, seeds, device=device, amp=amp, progress=progress,
                         rng_states=[g.get_state() for g in generators], stack=stack)
