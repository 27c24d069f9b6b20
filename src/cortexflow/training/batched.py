"""Batched training: many small CCCV1 networks trained together as one batched model.

A benchmark trains the same method on many (fold, seed) pairs. Trained one by
one, each small network pays Python and dispatch overhead per layer and per
optimiser tensor. Here the K members of a group are stacked along a leading
dimension and trained together:

* every ``nn.Linear`` becomes one ``torch.baddbmm`` over the K members (its
  weight-gradient written into a persistent buffer, member by member on CPU),
  every ``nn.LayerNorm`` a normalisation followed by a per-member affine,
  dropout draws each member's mask from that member's own random stream;
* each member keeps its own training rows (members may have different numbers
  of rows: batches are padded and masked), its own inner validation split and
  mini-batch order (both from its seed, exactly as :func:`train_model` draws
  them), its own initial weights (drawn by the estimator's own preparation
  step, :meth:`CCCV1Decoder._prepare_fit`, which :func:`fit_many` calls for
  every member), and its own optimiser state;
* Adam runs with one parameter group per member (the fused implementation when
  the device supports it), so each member has its own step count and learning
  rate; gradients are clipped per member by that member's own global norm;
* the epochs, each member's plateau schedule (PyTorch's ReduceLROnPlateau
  rules), early stopping, best weights and history are those of the shared
  loop (:func:`cortexflow.training.loop.run_epochs`, the loop of
  :func:`~cortexflow.training.trainer.train_model` too), with K members: a
  member that stops keeps its best weights, leaves the stack, and costs nothing
  afterwards. This module gives the loop its epoch step (:class:`_StackSteps`:
  the stacked forward, backward and optimiser steps, the validation, the
  best copies and the compaction of the stack).

Dropout masks come from one random stream per member, started where the
sequential path's stream starts (on CPU: the global generator's state right
after the member's weights were initialised; on CUDA: a CUDA generator seeded
with the member's seed; see :mod:`cortexflow.training.seeding`), and are drawn with the shapes and operations of the
network's :class:`~cortexflow.models.cccv1.StreamDropout`. The batched path
therefore reproduces sequential training up to floating-point summation
order, dropout included (tested on CPU), and a member's result does not depend
on which other members share its stack, so a group may be split over worker
processes and an interrupted group resumes with the same results.

The members need not be plain CCCV1 networks: a :class:`MemberStack` names
which of their parameters are stacked (those that require gradients; frozen
parts are shared) and gives the per-member loss. ``cccv1-prior`` ensembles
train this way (:mod:`cortexflow.training.prior_members`: CCCV1's encoder
into an image prior's embedding space, alignment losses, the frozen prior
decoder run once for all members).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cortexflow.data.splits import inner_validation_split
from cortexflow.exceptions import ConfigError, DataValidationError
from cortexflow.models.cccv1 import CCCV1, SemanticEnhancer
from cortexflow.models.estimator import CCCV1Decoder
from cortexflow.training.config import CCCV1Config
from cortexflow.training.devices import autocast, make_grad_scaler, resolve_amp, resolve_device
from cortexflow.training.seeding import dropout_generator
from cortexflow.training.loop import EpochSteps, TrainResult, run_epochs
from cortexflow.training.trainer import make_adam

__all__ = ["BatchedNotSupported", "supports_batched", "train_batched", "fit_many", "MemberStack", "batched_encode",
           "DEFAULT_MAX_GROUP"]

logger = logging.getLogger(__name__)

#: Members trained in one stack at most; larger requests are split into groups.
DEFAULT_MAX_GROUP = 32

_ACTIVATIONS = {nn.SiLU: F.silu, nn.Tanh: torch.tanh, nn.Sigmoid: torch.sigmoid, nn.ReLU: F.relu, nn.GELU: F.gelu}


class BatchedNotSupported(ConfigError):
    """The model or the options cannot be trained on the batched path."""


def supports_batched(model: nn.Module) -> bool:
    """Whether :func:`train_batched` can train ``model`` (a CCCV1 without front-end)."""
    if type(model) is not CCCV1 or model.frontend is not None:
        return False
    for seq in (model.encoder.net, model.enhancer.net, model.decoder.net):
        for layer in seq:
            if not isinstance(layer, (nn.Linear, nn.LayerNorm, nn.Dropout, *_ACTIVATIONS)):
                return False
    return True


# --------------------------------------------------------------------------- forward
def _weight_grad(x: torch.Tensor, g: torch.Tensor, out: torch.Tensor) -> None:
    """``out[k] = x[k].T @ g[k]`` for every member k, written into ``out``."""
    if g.device.type == "cpu" and x.dtype == out.dtype:
        # PyTorch's CPU bmm handles this short-inner-dimension shape several
        # times slower than one mm per member
        xt = x.transpose(1, 2)
        for k in range(out.shape[0]):
            torch.mm(xt[k], g[k], out=out[k])
    elif x.dtype == out.dtype:
        torch.bmm(x.transpose(1, 2), g, out=out)
    else:
        out.copy_(torch.bmm(x.transpose(1, 2), g))


class _DeferredWeightGrads:
    """Linear-weight gradients that wait for the members' gradient-clipping coefficients.

    Clipping needs each member's total gradient norm before it can scale the
    gradients. Computing the weight gradients first and scaling them after
    reads and writes every weight-gradient element twice more (the norm, then
    the scaling): on a CPU that is about 13 % of a CCCV1 step. A linear
    layer's weight gradient ``x.T @ g`` has the squared Frobenius norm
    ``sum((x @ x.T) * (g @ g.T))``, computed from two B x B Gram matrices
    (B = mini-batch rows), so the backward pass records ``(x, g)`` and the
    norm, and :meth:`finish` writes ``x.T @ (c * g)`` once the coefficient
    ``c`` is known. The result equals clip-after-compute up to floating-point
    rounding of the norm.
    """

    def __init__(self):
        self.items: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self.sq_norm: torch.Tensor | None = None

    def add(self, x: torch.Tensor, g: torch.Tensor, out: torch.Tensor) -> None:
        xf, gf = x.float(), g.float()
        sq = (torch.bmm(xf, xf.transpose(1, 2)) * torch.bmm(gf, gf.transpose(1, 2))).sum((1, 2))
        self.sq_norm = sq if self.sq_norm is None else self.sq_norm + sq
        self.items.append((x, g, out))

    def finish(self, coef: torch.Tensor) -> None:
        """Write every recorded weight gradient scaled by ``coef`` (one value per member)."""
        for x, g, out in self.items:
            _weight_grad(x, g * coef.view(-1, 1, 1).to(g.dtype), out)
        self.items.clear()
        self.sq_norm = None


class _GroupedLinear(torch.autograd.Function):
    """``y[k] = x[k] @ w[k] + b[k]`` for K members at once.

    The forward is one ``baddbmm``; the weight gradient is written by
    :func:`_weight_grad`. When a persistent buffer ``gw_buf`` is given, the
    weight gradient is written into it (no allocation per step) and the caller
    keeps that buffer as the parameter's ``.grad``; with ``deferred`` as well,
    it is only recorded there (see :class:`_DeferredWeightGrads`).

    Under autocast the product runs in the autocast dtype; gradients of the
    parameters come back in the parameters' dtype.
    """

    @staticmethod
    def forward(ctx, x, w, b, gw_buf, deferred):
        dev = x.device.type
        dt = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else None
        ctx.w_dtype, ctx.has_bias, ctx.gw_buf, ctx.deferred = w.dtype, b is not None, gw_buf, deferred
        if dt is not None:
            x, w, b = x.to(dt), w.to(dt), (b.to(dt) if b is not None else None)
        ctx.save_for_backward(x, w)
        with torch.autocast(device_type=dev, enabled=False):
            return torch.bmm(x, w) if b is None else torch.baddbmm(b.unsqueeze(1), x, w)

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        g = g.to(w.dtype)
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            gx = torch.bmm(g, w.transpose(1, 2))
        if ctx.needs_input_grad[1]:
            out = ctx.gw_buf if ctx.gw_buf is not None else torch.empty(w.shape, dtype=ctx.w_dtype, device=w.device)
            if ctx.deferred is not None and ctx.gw_buf is not None:
                ctx.deferred.add(x, g, out)
            else:
                _weight_grad(x, g, out)
            gw = None if ctx.gw_buf is not None else out
        if ctx.has_bias and ctx.needs_input_grad[2]:
            gb = g.sum(1).to(ctx.w_dtype)
        return gx, gw, gb, None, None


def _member_dropout(h: torch.Tensor, p: float, streams: Sequence[tuple[torch.Generator, int]]) -> torch.Tensor:
    """Dropout with member r's mask drawn from ``streams[r] = (generator, rows)`` over its first ``rows`` rows.

    The operations are those of :class:`~cortexflow.models.cccv1.StreamDropout`
    (``bernoulli_(1 - p)``, ``div_(1 - p)``, multiply), and each member's draw
    has the shape of the sequential trainer's draw, so the same generator
    state gives the same mask.
    """
    noise = torch.zeros_like(h)
    for r, (gen, rows) in enumerate(streams):
        if rows:
            noise[r, :rows].bernoulli_(1.0 - p, generator=gen)
    noise.div_(1.0 - p)
    return h * noise


def _run_sequential(seq: nn.Sequential, prefix: str, P: dict[str, torch.Tensor], h: torch.Tensor,
                    training: bool, G: dict[str, torch.Tensor] | None = None,
                    deferred: _DeferredWeightGrads | None = None, streams=None) -> torch.Tensor:
    """Apply the layers of ``seq`` to ``h`` (K, B, F) with stacked parameters ``P``.

    ``G`` maps linear-weight names to persistent gradient buffers and
    ``deferred`` collects their deferred computation (see :class:`_GroupedLinear`);
    ``streams`` gives each member's dropout generator and rows (see :func:`_member_dropout`).
    """
    for i, layer in enumerate(seq):
        name = f"{prefix}.{i}"
        if isinstance(layer, nn.Linear):
            # weight stored transposed, (K, in, out), so that its gradient is contiguous
            wname = name + ".weight"
            h = _GroupedLinear.apply(h, P[wname], P[name + ".bias"] if layer.bias is not None else None,
                                     G.get(wname) if G else None, deferred)
        elif isinstance(layer, nn.LayerNorm):
            h = F.layer_norm(h, layer.normalized_shape, eps=layer.eps)
            if layer.elementwise_affine:
                h = torch.addcmul(P[name + ".bias"].unsqueeze(1), h, P[name + ".weight"].unsqueeze(1))
        elif isinstance(layer, nn.Dropout):
            if training and layer.p > 0:
                h = (_member_dropout(h, layer.p, streams) if streams is not None
                     else F.dropout(h, layer.p, training=True))
        else:
            h = _ACTIVATIONS[type(layer)](h)
    return h


def batched_encode(encoder: nn.Sequential, enhancer: SemanticEnhancer, prefixes: tuple[str, str],
                   P: dict[str, torch.Tensor], x: torch.Tensor, training: bool,
                   G: dict[str, torch.Tensor] | None = None,
                   deferred: _DeferredWeightGrads | None = None, streams=None) -> torch.Tensor:
    """CCCV1's encoder and semantic enhancer on (K, B, D) inputs with stacked parameters: (K, B, embed_dim).

    ``encoder`` is the :class:`~cortexflow.models.cccv1.CLIPGuidedEncoder`'s
    ``net``, ``enhancer`` the :class:`~cortexflow.models.cccv1.SemanticEnhancer`;
    ``prefixes`` are the names of their ``net`` in ``P`` (``"encoder.net"``,
    ``"enhancer.net"`` for a :class:`~cortexflow.models.cccv1.CCCV1`).
    ``G``, ``deferred`` and ``streams`` as for :func:`_run_sequential`.
    """
    e = F.normalize(_run_sequential(encoder, prefixes[0], P, x, training, G, deferred, streams), dim=-1)
    r = _run_sequential(enhancer.net, prefixes[1], P, e, training, G, deferred, streams)
    return F.normalize(e + enhancer.alpha * r, dim=-1)


def _batched_forward(model: CCCV1, P: dict[str, torch.Tensor], x: torch.Tensor, training: bool,
                     G: dict[str, torch.Tensor] | None = None,
                     deferred: _DeferredWeightGrads | None = None, streams=None) -> torch.Tensor:
    """(K, B, D) inputs to (K, B, n_out) outputs (flat)."""
    e = batched_encode(model.encoder.net, model.enhancer, ("encoder.net", "enhancer.net"), P, x, training, G,
                       deferred, streams)
    return _run_sequential(model.decoder.net, "decoder.net", P, e, training, G, deferred, streams)


def _arch_signature(model: nn.Module) -> tuple:
    """Shapes and hyper-parameters that the batched forward takes from the first member."""
    shapes = tuple((k, tuple(v.shape)) for k, v in model.state_dict().items())
    hyper = tuple((name, getattr(mod, "p", None), getattr(mod, "eps", None), getattr(mod, "alpha", None))
                  for name, mod in model.named_modules())
    return shapes, hyper


def _linear_weight_names(model: nn.Module) -> set[str]:
    return {f"{name}.weight" for name, mod in model.named_modules() if isinstance(mod, nn.Linear)}


def _grad_buffers(P: dict[str, torch.Tensor], views: list[list[torch.Tensor]],
                  names: list[str]) -> dict[str, torch.Tensor]:
    """Persistent gradient buffers of all stacked parameters, installed once as their ``.grad``.

    Member ``r``'s optimiser views get ``buffer[r]`` as their ``.grad``, so the
    per-step work does not re-attach hundreds of gradients. Linear weights are
    written by :class:`_GroupedLinear` (no accumulation); the other buffers are
    accumulated into by autograd and zeroed before each step.
    """
    G = {}
    for n in names:
        G[n] = torch.zeros_like(P[n], memory_format=torch.contiguous_format)
        P[n].grad = G[n]
    for r, vs in enumerate(views):
        for n, v in zip(names, vs):
            v.grad = G[n][r]
    return G


def _to_stack(p: torch.Tensor, transpose: bool) -> torch.Tensor:
    p = p.detach()
    return p.T.contiguous() if transpose else p


@dataclass
class _Member:
    """What one member brings to the stack: its seed, inner split, batch-order and dropout streams."""

    index: int
    seed: int
    tr: np.ndarray
    va: np.ndarray
    gen: torch.Generator
    dropout_gen: torch.Generator
    perm: torch.Tensor | None = None


def _member_groups(views: list[list[torch.Tensor]], lrs: list[float]) -> list[dict]:
    """One Adam parameter group per member, with that member's learning rate."""
    return [{"params": v, "lr": lr} for v, lr in zip(views, lrs)]


def _fused(device: torch.device, fused_adam: bool | None) -> bool:
    """Fused Adam by default on CPU and CUDA (the stacked parameters are float32)."""
    return device.type in {"cpu", "cuda"} if fused_adam is None else bool(fused_adam)


class MemberStack:
    """How :func:`train_batched` sees K member networks of one architecture: what is stacked, and the loss.

    The parameters of ``template`` that require gradients are stacked (one
    slice per member, trained); the others (frozen parts, for example a fixed
    read-out or a frozen image decoder) are used from ``template`` for every
    member, so they must be the same in every member. Linear weights are
    stacked transposed (see :func:`_run_sequential`). Subclasses define
    :meth:`loss`.

    Parameters
    ----------
    template : nn.Module
        Member 0.
    """

    def __init__(self, template: nn.Module):
        self.template = template
        #: Names of the stacked (trained) parameters, in the template's order.
        self.names = [n for n, p in template.named_parameters() if p.requires_grad]
        #: The stacked linear weights (stored as (K, in, out)).
        self.transposed = _linear_weight_names(template) & set(self.names)

    def loss(self, P: dict[str, torch.Tensor], batch: dict, *, training: bool,
             autocast_ctx: tuple[torch.device, "torch.dtype | None"], G: dict[str, torch.Tensor] | None = None,
             deferred: "_DeferredWeightGrads | None" = None, streams=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-member ``(loss, pixel_loss)``, each of shape (A,), for the A members in the stack.

        Parameters
        ----------
        P : dict of str to Tensor
            The stacked parameters (A, ...), by name (:attr:`names`).
        batch : dict
            ``"x"`` (A, B, D) inputs, ``"target"`` (A, B, n_out) targets,
            ``"index"`` (A, B) the rows' indices into each member's training
            arrays, ``"mask"`` (A, B) 1 for real rows and 0 for padding, and
            ``"rows"`` (list of int) each member's number of real rows (its
            first ones).
        training : bool
            Training step (dropout on) or validation (no gradients).
        autocast_ctx : (device, dtype or None)
            The mixed-precision context of the forward pass.
        G, deferred, streams :
            Gradient buffers, deferred weight gradients and dropout streams
            (see :func:`_run_sequential`); None in validation.

        Returns
        -------
        (loss, pixel_loss) : tuple of Tensor (A,)
            The optimiser minimises ``loss``; early stopping and the learning
            rate schedule watch ``pixel_loss`` on the validation rows (as in
            :func:`~cortexflow.training.trainer.train_model`).
        """
        raise NotImplementedError


class _CCCV1Stack(MemberStack):
    """Plain :class:`~cortexflow.models.cccv1.CCCV1` members: the pixel MSE of the whole network."""

    def loss(self, P, batch, *, training, autocast_ctx, G=None, deferred=None, streams=None):
        with autocast(*autocast_ctx):
            pred = _batched_forward(self.template, P, batch["x"], training, G, deferred, streams)
        sq = (pred.float() - batch["target"]).pow(2).mean(-1)  # (A, B)
        mask = batch["mask"]
        per_member = (sq * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return per_member, per_member


def train_batched(
    models: Sequence[nn.Module],
    Xs: Sequence[np.ndarray],
    Ys: Sequence[np.ndarray],
    config: CCCV1Config,
    seeds: Sequence[int],
    *,
    device: "str | torch.device | None" = "auto",
    amp: str = "off",
    progress: bool | None = False,
    fused_adam: bool | None = None,
    rng_states: Sequence[torch.Tensor] | None = None,
    val_indices: Sequence[tuple[np.ndarray, np.ndarray]] | None = None,
    stack: MemberStack | None = None,
) -> list[TrainResult]:
    """Train K models of the same architecture together, each in place, as :func:`train_model` would.

    Parameters
    ----------
    models : sequence of CCCV1 (or of the modules ``stack`` describes)
        Same architecture (same input width and output size), already
        initialised; each is trained in place and ends with its best weights,
        in eval mode, on CPU.
    Xs, Ys : sequences of ndarray
        Member k's preprocessed training inputs (n_k, D) and targets (n_k, n_out).
    config : CCCV1Config
        Shared optimiser, schedule and early-stopping settings.
    seeds : sequence of int
        Member k's seed: it draws the inner validation split and the
        mini-batch order exactly as :func:`train_model` does.
    device : str or torch.device
        ``"auto"``, ``"cpu"`` or ``"cuda"``.
    amp : {"off", "auto", "bf16", "fp16"}
        Mixed precision for the forward pass (see :mod:`cortexflow.training.devices`).
    progress : bool, optional
        Per-epoch progress bar showing how many members are still training.
    fused_adam : bool, optional
        Use PyTorch's fused Adam (default: on CPU and CUDA).
    rng_states : sequence of torch.Tensor, optional
        Member k's CPU dropout stream: the state of PyTorch's global CPU
        generator right after its weights were initialised (what the
        sequential trainer's dropout would continue from). Default: a
        generator seeded with the member's seed. On CUDA the stream is the
        CUDA generator seeded with the member's seed
        (see :func:`cortexflow.training.seeding.dropout_generator`).
    val_indices : sequence of (ndarray, ndarray), optional
        Member k's inner (training, validation) rows; default: drawn from its
        seed as :func:`train_model` draws them.
    stack : MemberStack, optional
        Which parameters of the members are trained and their loss, for
        members other than plain CCCV1 networks (for example
        :mod:`cortexflow.priors.cccv1_prior`'s); default: CCCV1 networks
        trained on the pixel MSE.

    Returns
    -------
    list of TrainResult
        One per member; ``seconds`` is the group's wall time divided by K.

    Raises
    ------
    BatchedNotSupported
        A model that is not a plain CCCV1, or members whose shapes differ.
    """
    K = len(models)
    if not (K == len(Xs) == len(Ys) == len(seeds)) or K == 0:
        raise ConfigError("train_batched needs as many models, Xs, Ys and seeds (>= 1); "
                          f"got {K}, {len(Xs)}, {len(Ys)}, {len(seeds)}")
    if stack is None:
        for m in models:
            if not supports_batched(m):
                raise BatchedNotSupported(f"{type(m).__name__} cannot be trained on the batched path; "
                                          "only CCCV1 without front-end")
        stack = _CCCV1Stack(models[0])
    if len({_arch_signature(m) for m in models}) != 1:
        raise BatchedNotSupported("batched members must share one architecture (input width, output size, widths, "
                                  "dropout rates, alpha); train differing configurations in separate calls")
    t0 = time.perf_counter()
    dev = resolve_device(device)
    amp_dtype = resolve_amp(amp, dev)
    stack.template.to(dev)  # its frozen parts (if any) serve every member on the device
    D = int(np.asarray(Xs[0]).shape[1])
    n_out = int(np.asarray(Ys[0]).reshape(len(Ys[0]), -1).shape[1])

    # ---- data: padded per-member arrays on the device
    n_max = max(len(x) for x in Xs)
    Xpad = torch.zeros(K, n_max, D, dtype=torch.float32)
    Ypad = torch.zeros(K, n_max, n_out, dtype=torch.float32)
    for k in range(K):
        x = np.asarray(Xs[k], dtype=np.float32)
        if x.shape[1] != D:
            raise DataValidationError(f"member {k} has {x.shape[1]} features; member 0 has {D}")
        Xpad[k, : len(x)] = torch.from_numpy(x)
        Ypad[k, : len(x)] = torch.from_numpy(np.asarray(Ys[k], dtype=np.float32).reshape(len(x), -1))
    Xpad, Ypad = Xpad.to(dev), Ypad.to(dev)

    members: list[_Member] = []
    for k in range(K):
        if val_indices is not None:
            tr, va = (np.asarray(a) for a in val_indices[k])
        else:
            tr, va = inner_validation_split(len(Xs[k]), config.val_fraction, int(seeds[k]))
        gen = torch.Generator()
        gen.manual_seed(int(seeds[k]))
        dropout_gen = dropout_generator(dev, int(seeds[k]), rng_states[k] if rng_states is not None else None)
        members.append(_Member(k, int(seeds[k]), tr, va, gen, dropout_gen))

    steps = _StackSteps(list(models), stack, members, Xpad, Ypad, config, dev, amp_dtype, fused_adam)
    results = run_epochs(steps, K, config.epochs, patience=config.patience,
                         plateau=(config.lr_factor, config.lr_patience), progress=progress, desc=f"train x{K}",
                         device=str(dev), label=lambda i: f"member {i} (seed {members[i].seed}): ")
    seconds = time.perf_counter() - t0
    for res, model in zip(results, models):
        res.seconds = seconds / K
        model.cpu().eval()
    return results


class _StackSteps(EpochSteps):
    """The epoch step of :func:`train_batched`: the members still in the stack, trained as one batched model.

    Holds the stacked parameters ``P`` (a leading member dimension), their
    best copies, the persistent gradient buffers, the optimiser (one group per
    member) and the padded data of the rows still in the stack; row r is
    member ``active[r]``.

    Parameters
    ----------
    models : list of nn.Module
        The members' own modules (their best weights are written back when they stop).
    stack : MemberStack
        What is stacked and the per-member loss.
    members : list of _Member
        Each member's seed, inner split and random streams.
    Xpad, Ypad : Tensor (K, n_max, D), (K, n_max, n_out)
        The members' training arrays, padded, on the device.
    config : CCCV1Config
    device : torch.device
    amp_dtype : torch.dtype or None
        fp16 trains with a gradient scaler.
    fused_adam : bool or None
        See :func:`train_batched`.
    """

    def __init__(self, models: list[nn.Module], stack: MemberStack, members: list[_Member], Xpad: torch.Tensor,
                 Ypad: torch.Tensor, config: CCCV1Config, device: torch.device, amp_dtype, fused_adam: bool | None):
        self.models, self.stack, self.members, self.Xpad, self.Ypad = models, stack, members, Xpad, Ypad
        self.config, self.dev, self.amp_dtype, self.fused_adam = config, device, amp_dtype, fused_adam
        self.scaler = make_grad_scaler(device, amp_dtype)
        self.names, self.linear_weights = stack.names, stack.transposed
        K = len(models)
        with torch.no_grad():
            self.P = {n: torch.stack([_to_stack(dict(m.named_parameters())[n], n in self.linear_weights)
                                      for m in models]).to(device) for n in self.names}
        for t in self.P.values():
            t.requires_grad_(True)
        self.best = {n: t.detach().clone() for n, t in self.P.items()}
        self.views = [[self.P[n].detach()[k] for n in self.names] for k in range(K)]
        self._install_grads()
        # clipping folded into the weight-gradient computation (not with fp16's gradient
        # scaler, whose unscale_ must see finished gradients)
        self.deferred = _DeferredWeightGrads() if config.grad_clip > 0 and self.scaler is None else None
        self.opt = make_adam(_member_groups(self.views, [config.lr] * K), config, device,
                             fused=_fused(device, fused_adam))
        self.active = list(range(K))  # member index per stack row

    def _install_grads(self) -> None:
        self.G = _grad_buffers(self.P, self.views, self.names)
        self.accumulated = [self.G[n] for n in self.names if n not in self.linear_weights]  # zeroed before each backward

    def _epoch_order(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """This epoch's row indices and masks (A, n_steps * bs), on the device, and the rows per step (A, n_steps).

        Member k follows its own permutation; the whole epoch is built once and moved to the device once.
        """
        A, bs = len(self.active), self.config.batch_size
        n_steps = max(math.ceil(len(self.members[i].tr) / bs) for i in self.active)
        ep_idx = torch.zeros(A, n_steps * bs, dtype=torch.long)
        ep_mask = torch.zeros(A, n_steps * bs)
        for r, i in enumerate(self.active):
            m = self.members[i]
            m.perm = torch.randperm(len(m.tr), generator=m.gen)
            ep_idx[r, : len(m.tr)] = torch.as_tensor(m.tr)[m.perm]
            ep_mask[r, : len(m.tr)] = 1.0
        steps_rows = ep_mask.view(A, n_steps, bs).sum(2)  # on the CPU
        return ep_idx.to(self.dev), ep_mask.to(self.dev), steps_rows

    def train_epoch(self, epoch: int) -> list[float]:
        """One epoch of mini-batches for every row; each row's mean training loss."""
        A, bs = len(self.active), self.config.batch_size
        ep_idx, ep_mask, steps_rows = self._epoch_order()
        running = torch.zeros(A, device=self.dev)
        counts = torch.zeros(A, device=self.dev)
        for s in range(steps_rows.shape[1]):
            idx, mask = ep_idx[:, s * bs : (s + 1) * bs], ep_mask[:, s * bs : (s + 1) * bs]
            per_member = self._step(idx, mask, [int(steps_rows[r, s]) for r in range(A)])
            n_rows = mask.sum(1)
            running += per_member.detach().float() * n_rows
            counts += n_rows
        return (running / counts.clamp(min=1.0)).cpu().tolist()

    def _step(self, idx: torch.Tensor, mask: torch.Tensor, step_rows: list[int]) -> torch.Tensor:
        """One optimiser step of every row on its rows ``idx`` (A, B); the per-member losses (A,)."""
        P, G, names, opt, scaler = self.P, self.G, self.names, self.opt, self.scaler
        A = len(self.active)
        idle = [r for r in range(A) if step_rows[r] == 0]  # members whose epoch has ended
        rows = torch.arange(A, device=self.dev).unsqueeze(1)
        batch = {"x": self.Xpad[rows, idx], "target": self.Ypad[rows, idx], "index": idx, "mask": mask,
                 "rows": step_rows}
        for g in self.accumulated:
            g.zero_()
        streams = [(self.members[i].dropout_gen, step_rows[r]) for r, i in enumerate(self.active)]
        per_member, _ = self.stack.loss(P, batch, training=True, autocast_ctx=(self.dev, self.amp_dtype), G=G,
                                        deferred=self.deferred, streams=streams)
        total = per_member.sum()
        if scaler is not None:
            scaler.scale(total).backward()
        else:
            total.backward()
        if any(P[n].grad is not G[n] for n in names):  # pragma: no cover - autograd replaced a buffer
            raise RuntimeError("batched training: a gradient buffer was replaced during backward")
        for r in idle:  # no step (and no Adam step count) for a member without rows in this step
            for v in self.views[r]:
                v.grad = None
        if scaler is not None:
            scaler.unscale_(opt)
        self._clip(A)
        if scaler is not None:
            scaler.step(opt)
            scaler.update()
        else:
            opt.step()
        for r in idle:
            for n, v in zip(names, self.views[r]):
                v.grad = G[n][r]
        return per_member

    def _clip(self, A: int) -> None:
        """Clip each member's gradients by its own global norm (when deferred, the weight gradients are written now)."""
        clip, deferred, accumulated = self.config.grad_clip, self.deferred, self.accumulated
        if deferred is not None:  # clip with the Gram norms, then write the weight gradients once
            with torch.no_grad():
                sq = deferred.sq_norm + torch.stack(
                    [torch.linalg.vector_norm(g.reshape(A, -1), dim=1).float() ** 2 for g in accumulated]).sum(0)
                coef = (clip / (sq.sqrt() + 1e-6)).clamp(max=1.0)
                deferred.finish(coef)
                for g in accumulated:
                    g.mul_(coef.view(A, *([1] * (g.dim() - 1))).to(g.dtype))
        elif clip > 0:
            with torch.no_grad():
                norms = torch.stack([torch.linalg.vector_norm(g.reshape(A, -1), dim=1) for g in self.G.values()])
                coef = (clip / (torch.linalg.vector_norm(norms.float(), dim=0) + 1e-6)).clamp(max=1.0)
                for g in self.G.values():
                    g.mul_(coef.view(A, *([1] * (g.dim() - 1))).to(g.dtype))

    def validate(self) -> list[float]:
        """Each row's pixel loss on its member's inner validation rows."""
        A = len(self.active)
        with torch.no_grad():
            nv = max(len(self.members[i].va) for i in self.active)
            vidx = torch.zeros(A, nv, dtype=torch.long)
            vmask = torch.zeros(A, nv)
            for r, i in enumerate(self.active):
                va = self.members[i].va
                vidx[r, : len(va)] = torch.as_tensor(va)
                vmask[r, : len(va)] = 1.0
            vidx, vmask = vidx.to(self.dev), vmask.to(self.dev)
            rows = torch.arange(A, device=self.dev).unsqueeze(1)
            vbatch = {"x": self.Xpad[rows, vidx], "target": self.Ypad[rows, vidx], "index": vidx, "mask": vmask,
                      "rows": [len(self.members[i].va) for i in self.active]}
            _, vpix = self.stack.loss({n: t.detach() for n, t in self.P.items()}, vbatch, training=False,
                                      autocast_ctx=(self.dev, self.amp_dtype))
            return vpix.cpu().tolist()

    def lr(self, row: int) -> float:
        return self.opt.param_groups[row]["lr"]

    def set_lr(self, row: int, lr: float) -> None:
        self.opt.param_groups[row]["lr"] = lr

    def keep_best(self, rows: list[int]) -> None:
        """Copy the weights of ``rows`` into their best copies (one copy per parameter)."""
        with torch.no_grad():
            if len(rows) == len(self.active):
                for n in self.names:
                    self.best[n].copy_(self.P[n].detach())
            else:
                ri = torch.as_tensor(rows, device=self.dev)
                for n in self.names:
                    self.best[n].index_copy_(0, ri, self.P[n].detach().index_select(0, ri))

    def finish(self, rows: list[int]) -> None:
        """Hand the best weights of ``rows`` back to their members' own modules."""
        for r in rows:
            params = dict(self.models[self.active[r]].named_parameters())
            with torch.no_grad():
                for n in self.names:
                    w = self.best[n][r]
                    params[n].copy_((w.T if n in self.linear_weights else w).to(params[n].device))

    def drop(self, keep: list[int]) -> None:
        """Keep only the rows ``keep``, carrying their optimiser state."""
        self.P, self.best, self.views, self.opt, self.Xpad, self.Ypad = _compact(
            self.P, self.best, self.views, self.opt, self.Xpad, self.Ypad, keep, self.names, self.config, self.dev,
            self.fused_adam)
        self._install_grads()
        self.active = [self.active[r] for r in keep]


def _compact(P, best, views, opt, Xpad, Ypad, keep, names, config, dev, fused_adam):
    """Drop finished members from the stack, carrying the optimiser state of the rest."""
    ki = torch.as_tensor(keep, device=dev)
    with torch.no_grad():
        newP = {n: P[n].detach().index_select(0, ki).clone().requires_grad_(True) for n in names}
        newbest = {n: best[n].index_select(0, ki) for n in names}
    newviews = [[newP[n].detach()[j] for n in names] for j in range(len(keep))]
    newopt = make_adam(_member_groups(newviews, [opt.param_groups[r]["lr"] for r in keep]), config, dev,
                       fused=_fused(dev, fused_adam))
    for j, r in enumerate(keep):
        for old, new in zip(views[r], newviews[j]):
            if old in opt.state:
                newopt.state[new] = opt.state[old]
    return newP, newbest, newviews, newopt, Xpad.index_select(0, ki), Ypad.index_select(0, ki)


# ----------------------------------------------------------------------- decoders
def _config_key(cfg: CCCV1Config) -> str:
    return cfg.to_json()


def fit_many(
    Xs: Sequence[np.ndarray],
    Ys: Sequence[np.ndarray],
    seeds: Sequence[int],
    *,
    config="auto",
    dataset: str | None = None,
    device: str = "auto",
    amp: str = "off",
    progress: bool | None = False,
    max_group: int | None = None,
    metadata: dict | None = None,
    fused_adam: bool | None = None,
) -> list:
    """Fit one :class:`~cortexflow.models.estimator.CCCV1Decoder` per (X, Y, seed), batched.

    Each returned decoder is what ``CCCV1Decoder(config, dataset, random_state=seed).fit(X, Y)``
    would give, trained on the batched path: the same preprocessing (scalers
    fitted on that member's rows), the same initial weights, inner split,
    batch order and dropout masks; only floating-point summation order differs.

    Parameters
    ----------
    Xs, Ys : sequences of array-like
        Raw training signals (n_k, n_features) and targets (n_k, ...) per member.
    seeds : sequence of int
        ``random_state`` per member.
    config : "auto", str, dict, CCCV1Config, or a sequence of them
        As for :class:`CCCV1Decoder`; a sequence gives one per member.
        Members whose resolved configurations differ train in separate stacks.
    dataset, device :
        As for :class:`CCCV1Decoder`.
    amp : str
        Mixed precision (see :mod:`cortexflow.training.devices`).
    progress : bool, optional
        Progress bars.
    max_group : int, optional
        Largest stack trained at once (default :data:`DEFAULT_MAX_GROUP`).
    metadata : dict, optional
        Stored in every decoder (and its checkpoints).
    fused_adam : bool, optional
        See :func:`train_batched`.

    Returns
    -------
    list of CCCV1Decoder
        Fitted, in the order of the inputs.
    """

    if not (len(Xs) == len(Ys) == len(seeds)):
        raise ConfigError(f"fit_many needs as many Xs, Ys and seeds; got {len(Xs)}, {len(Ys)}, {len(seeds)}")
    max_group = int(max_group or DEFAULT_MAX_GROUP)
    if max_group < 1:
        raise ConfigError(f"max_group={max_group} must be >= 1")
    if isinstance(config, (list, tuple)):
        if len(config) != len(Xs):
            raise ConfigError(f"fit_many got {len(config)} configs for {len(Xs)} members")
        configs = list(config)
    else:
        configs = [config] * len(Xs)
    decs, prepared = [], []
    for X, Y, seed, config in zip(Xs, Ys, seeds, configs):
        dec = CCCV1Decoder(config=config, dataset=dataset, random_state=int(seed), device=device, progress=False,
                           amp=amp)
        prep = dec._prepare_fit(X, Y, metadata=metadata)  # the preparation step of CCCV1Decoder.fit itself
        if dec.config_.loss_weights or prep.loss_terms:
            raise BatchedNotSupported("extra loss terms are not supported on the batched path; use train-mode sequential")
        if not supports_batched(dec.model_):
            raise BatchedNotSupported(f"model {dec.config_.model!r} has no batched path; use train-mode sequential")
        decs.append(dec)
        prepared.append(prep)
    # group members that share a configuration and shapes
    groups: dict[tuple, list[int]] = {}
    for i, dec in enumerate(decs):
        key = (_config_key(dec.config_), dec.n_features_in_, dec.output_shape_)
        groups.setdefault(key, []).append(i)
    for idxs in groups.values():
        for start in range(0, len(idxs), max_group):
            chunk = idxs[start : start + max_group]
            results = train_batched(
                [decs[i].model_ for i in chunk], [prepared[i].X for i in chunk], [prepared[i].Y for i in chunk],
                decs[chunk[0]].config_, [prepared[i].seed for i in chunk], device=device, amp=amp,
                progress=progress, fused_adam=fused_adam, rng_states=[prepared[i].init_state for i in chunk],
                val_indices=[prepared[i].val_index for i in chunk],
            )
            for i, res in zip(chunk, results):
                decs[i].history_ = res.history
                decs[i].train_result_ = res
    return decs
