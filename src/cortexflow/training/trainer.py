"""Training of one CortexFlow network: :func:`train_model`.

Adam, a plateau schedule on the validation loss (PyTorch's ReduceLROnPlateau
rules), gradient-norm clipping, early stopping on an inner validation split
carved from the training rows with a fixed seed, and restoration of the best
weights (a deep copy). The epochs, the schedule, early stopping and the best
weights are the shared loop's (:func:`cortexflow.training.loop.run_epochs`,
a single member); this module gives it the epoch step (:class:`_ModelSteps`).
The test split never enters this module.
"""

from __future__ import annotations

import copy
import logging
import time
from typing import Callable, Iterable, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cortexflow.data.splits import inner_validation_split
from cortexflow.exceptions import ConfigError
from cortexflow.training.config import TrainingConfig
from cortexflow.training.devices import autocast, make_grad_scaler, resolve_amp, resolve_device
from cortexflow.training.loop import EpochSteps, TrainResult, run_epochs

__all__ = ["TrainResult", "train_model", "resolve_device", "make_adam", "LossTerm", "LossFn", "default_loss"]

logger = logging.getLogger(__name__)

# A loss term receives a dict with keys "x", "embedding", "pred", "target",
# "index" (row indices into the training arrays) and returns a scalar tensor.
LossTerm = Callable[[dict], torch.Tensor]
# compute_loss(model, batch) -> (training loss, pixel loss); batch holds "x", "target" and "index".
LossFn = Callable[[nn.Module, dict], "tuple[torch.Tensor, torch.Tensor]"]


def make_adam(params: Iterable, config: TrainingConfig, device: torch.device, *,
              fused: bool | None = None) -> torch.optim.Adam:
    """Adam with the fused kernel where the device has one, else PyTorch's default implementation.

    ``params`` are tensors or parameter groups (dicts with ``"params"`` and,
    for example, their own ``"lr"``: the batched trainer gives each member one
    group). ``fused=None`` uses the fused kernel on CPU and CUDA when every
    parameter is float32; ``True``/``False`` forces the choice (``True`` still
    falls back where the device has no fused kernel).

    On CPU, PyTorch's default Adam is the per-tensor loop; the fused kernel
    (CPU since PyTorch 2.4, and CUDA) updates every parameter in one pass. On
    the project's 2-core CPU (one thread) it cut the optimiser step of the
    vangerven CCCV1 network from 63 to 7.5 ms and the CPU time of a whole
    vangerven fit by half (``benchmarks/bench_train.py``). It is element-wise, so
    training stays deterministic for a given seed; its results differ from the
    loop implementation's only by floating-point rounding.
    """
    params = list(params)
    tensors = [t for p in params for t in (p["params"] if isinstance(p, dict) else [p])]
    if fused is None:
        fused = device.type in {"cpu", "cuda"} and all(t.dtype == torch.float32 for t in tensors)
    if fused:
        try:
            return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay, fused=True)
        except (RuntimeError, ValueError) as exc:  # older PyTorch: no fused Adam on this device
            logger.debug("fused Adam unavailable on %s (%s); using the default implementation", device, exc)
    return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)


def default_loss(model: nn.Module, batch: dict, *, config: TrainingConfig,
                 loss_terms: Mapping[str, LossTerm] | None = None,
                 autocast_ctx: tuple[torch.device, "torch.dtype | None"] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The default loss of :func:`train_model`: pixel MSE of ``decode(encode(x))`` plus weighted ``loss_terms``.

    Returns
    -------
    (loss, pixel_loss) : tuple of scalar tensors
    """
    x, y = batch["x"], batch["target"]
    dev, amp_dtype = autocast_ctx if autocast_ctx is not None else (x.device, None)
    with autocast(dev, amp_dtype):
        emb = model.encode(x)
        pred = model.decode(emb)
    emb, pred = emb.float(), pred.float()
    pix = F.mse_loss(pred, y.reshape(pred.shape))
    loss = pix
    if loss_terms:
        out = {"x": x, "embedding": emb, "pred": pred, "target": y, "index": batch["index"]}
        for name, term in loss_terms.items():
            loss = loss + float(config.loss_weights.get(name, 1.0)) * term(out)
    return loss, pix


def _batches(n: int, batch_size: int, gen: torch.Generator):
    perm = torch.randperm(n, generator=gen)
    for start in range(0, n, batch_size):
        yield perm[start : start + batch_size]


def train_model(
    model: nn.Module,
    X: np.ndarray,
    Y: np.ndarray,
    config: TrainingConfig,
    *,
    seed: int = 0,
    device: str | torch.device | None = "auto",
    progress: bool | None = False,
    loss_terms: Mapping[str, LossTerm] | None = None,
    val_index: tuple[np.ndarray, np.ndarray] | None = None,
    amp: str = "off",
    compute_loss: LossFn | None = None,
) -> TrainResult:
    """Train ``model`` in place on (X, Y) with early stopping on an inner split.

    Parameters
    ----------
    model : nn.Module
        Has ``encode`` and ``decode`` (see :mod:`cortexflow.models.registry`),
        unless ``compute_loss`` is given.
    X : ndarray, shape (n, ...)
        Preprocessed training inputs.
    Y : ndarray, shape (n, *output_shape)
        Training targets in [0, 1].
    config : TrainingConfig
        Optimiser, schedule, early-stopping, batch and inner-split settings
        (a :class:`~cortexflow.training.CCCV1Config` is one).
    seed : int
        Seeds the inner split and the mini-batch order, nothing else (dropout draws from
        the model's own generators, see :mod:`cortexflow.training.seeding`).
    device : str or torch.device
        ``"auto"``, ``"cpu"`` or ``"cuda"``.
    progress : bool, optional
        Per-epoch progress bar with train and validation loss.
    loss_terms : mapping of name to callable, optional
        Extra loss terms, weighted by ``config.loss_weights[name]`` (default 1).
        Terms that are ``nn.Module`` have their parameters trained too.
    val_index : (train_idx, val_idx), optional
        Use this inner split instead of drawing one.
    amp : {"off", "auto", "bf16", "fp16"}
        Mixed precision of the forward pass (see :mod:`cortexflow.training.devices`):
        the loss is computed in float32, parameters and optimiser state stay
        float32, and fp16 uses a gradient scaler.
    compute_loss : callable, optional
        ``compute_loss(model, batch) -> (loss, pixel_loss)`` with ``batch`` a
        dict of ``"x"``, ``"target"`` (the rows' inputs and targets) and
        ``"index"``: replaces the default loss (:func:`default_loss`, the
        pixel MSE of ``decode(encode(x))``). The optimiser minimises ``loss``;
        early stopping and the schedule watch ``pixel_loss`` on the inner
        validation rows. It runs under the autocast context of ``amp``. Not
        combinable with ``loss_terms`` (add them inside ``compute_loss``).

    Returns
    -------
    TrainResult
    """
    if compute_loss is not None and loss_terms:
        raise ConfigError("train_model: give loss_terms or compute_loss, not both (add the terms inside compute_loss)")
    t0 = time.perf_counter()
    dev = resolve_device(device)
    amp_dtype = resolve_amp(amp, dev)
    loss_terms = dict(loss_terms or {})
    term_modules = nn.ModuleDict({k: v for k, v in loss_terms.items() if isinstance(v, nn.Module)})
    model.to(dev)
    term_modules.to(dev)

    if val_index is None:
        tr_idx, va_idx = inner_validation_split(len(X), config.val_fraction, seed)
    else:
        tr_idx, va_idx = (np.asarray(a) for a in val_index)
    Xt = torch.as_tensor(np.asarray(X, dtype=np.float32), device=dev)
    Yt = torch.as_tensor(np.asarray(Y, dtype=np.float32), device=dev)

    def total_loss(idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batch = {"x": Xt[idx], "target": Yt[idx], "index": idx}
        if compute_loss is not None:
            with autocast(dev, amp_dtype):
                return compute_loss(model, batch)
        return default_loss(model, batch, config=config, loss_terms=loss_terms, autocast_ctx=(dev, amp_dtype))

    steps = _ModelSteps(model, term_modules, total_loss, config, tr_idx, va_idx, seed, dev, amp_dtype)
    (result,) = run_epochs(steps, 1, config.epochs, patience=config.patience,
                           plateau=(config.lr_factor, config.lr_patience), progress=progress, desc="train",
                           device=str(dev))
    model.eval()
    result.seconds = time.perf_counter() - t0
    return result


class _ModelSteps(EpochSteps):
    """The epoch step of :func:`train_model`: one network and its trainable loss terms, one member.

    Parameters
    ----------
    model, term_modules : nn.Module
        The network and the loss terms that are modules (trained too), on ``device``.
    total_loss : callable
        ``total_loss(rows) -> (loss, pixel_loss)`` of the training rows ``rows`` (a device tensor).
    config : TrainingConfig
    tr_idx, va_idx : ndarray
        The inner training and validation rows.
    seed : int
        Seeds the mini-batch order.
    device : torch.device
    amp_dtype : torch.dtype or None
        fp16 trains with a gradient scaler.
    """

    def __init__(self, model: nn.Module, term_modules: nn.ModuleDict, total_loss: Callable, config: TrainingConfig,
                 tr_idx: np.ndarray, va_idx: np.ndarray, seed: int, device: torch.device, amp_dtype):
        self.model, self.terms, self.total_loss, self.config, self.device = model, term_modules, total_loss, config, device
        self.tr = torch.as_tensor(tr_idx, device=device, dtype=torch.long)
        self.va = torch.as_tensor(va_idx, device=device, dtype=torch.long)
        self.scaler = make_grad_scaler(device, amp_dtype)
        self.params = list(model.parameters()) + list(term_modules.parameters())
        self.opt = make_adam(self.params, config, device)
        self.gen = torch.Generator()
        self.gen.manual_seed(seed)
        self.best = copy.deepcopy(self._state())

    def _state(self) -> tuple[dict, dict]:
        return self.model.state_dict(), self.terms.state_dict()

    def train_epoch(self, epoch: int) -> list[float]:
        """One pass over the inner training rows in this epoch's random order; the mean training loss."""
        self.model.train()
        self.terms.train()
        running, count = torch.zeros((), device=self.device), 0  # summed on the device: no per-step host sync
        for b in _batches(len(self.tr), self.config.batch_size, self.gen):
            idx = self.tr[b.to(self.device)]
            loss = self._step(idx)
            running += loss.detach() * len(idx)
            count += len(idx)
        return [float(running) / max(count, 1)]

    def _step(self, idx: torch.Tensor) -> torch.Tensor:
        """One optimiser step on the rows ``idx`` (gradient clipping, fp16 scaling); its loss."""
        opt, scaler = self.opt, self.scaler
        opt.zero_grad(set_to_none=True)
        loss, _ = self.total_loss(idx)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
        else:
            loss.backward()
        if self.config.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.params, self.config.grad_clip)
        if scaler is not None:
            scaler.step(opt)
            scaler.update()
        else:
            opt.step()
        return loss

    def validate(self) -> list[float]:
        """The pixel loss on the inner validation rows."""
        self.model.eval()
        self.terms.eval()
        with torch.no_grad():
            _, val_pix = self.total_loss(self.va)
            return [float(val_pix)]

    def lr(self, row: int) -> float:
        return self.opt.param_groups[0]["lr"]

    def set_lr(self, row: int, lr: float) -> None:
        self.opt.param_groups[0]["lr"] = lr

    def keep_best(self, rows: list[int]) -> None:
        self.best = copy.deepcopy(self._state())

    def finish(self, rows: list[int]) -> None:
        self.model.load_state_dict(self.best[0])
        self.terms.load_state_dict(self.best[1])
