"""One training loop for every CortexFlow network.

Adam, ReduceLROnPlateau on the validation loss, gradient-norm clipping,
early stopping on an inner validation split carved from the training rows with
a fixed seed, and restoration of the best weights (a deep copy). The test split
never enters this module.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cortexflow.data.splits import inner_validation_split
from cortexflow.exceptions import ConfigError
from cortexflow.training.config import TrainingConfig
from cortexflow.training.devices import autocast, make_grad_scaler, resolve_amp, resolve_device
from cortexflow.utils.progress import progress_bar

__all__ = ["TrainResult", "train_model", "resolve_device", "make_adam", "LossTerm", "LossFn", "default_loss"]

logger = logging.getLogger(__name__)

# A loss term receives a dict with keys "x", "embedding", "pred", "target",
# "index" (row indices into the training arrays) and returns a scalar tensor.
LossTerm = Callable[[dict], torch.Tensor]
# compute_loss(model, batch) -> (training loss, pixel loss); batch holds "x", "target" and "index".
LossFn = Callable[[nn.Module, dict], "tuple[torch.Tensor, torch.Tensor]"]


@dataclass
class TrainResult:
    """What a training run returns besides the trained model."""

    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    best_val_loss: float = float("inf")
    stopped_epoch: int = 0
    seconds: float = 0.0
    device: str = "cpu"


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
    scaler = make_grad_scaler(dev, amp_dtype)
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
    tr = torch.as_tensor(tr_idx, device=dev, dtype=torch.long)
    va = torch.as_tensor(va_idx, device=dev, dtype=torch.long)

    params = list(model.parameters()) + list(term_modules.parameters())
    opt = make_adam(params, config, dev)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=config.lr_factor, patience=config.lr_patience)
    gen = torch.Generator()
    gen.manual_seed(seed)

    def total_loss(idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batch = {"x": Xt[idx], "target": Yt[idx], "index": idx}
        if compute_loss is not None:
            with autocast(dev, amp_dtype):
                return compute_loss(model, batch)
        return default_loss(model, batch, config=config, loss_terms=loss_terms, autocast_ctx=(dev, amp_dtype))

    result = TrainResult(device=str(dev))
    best_state = copy.deepcopy((model.state_dict(), term_modules.state_dict()))
    bad_epochs = 0
    bar = progress_bar(range(1, config.epochs + 1), progress=progress, desc="train", unit="epoch")
    for epoch in bar:
        model.train()
        term_modules.train()
        running, count = torch.zeros((), device=dev), 0  # summed on the device: no per-step host sync
        for b in _batches(len(tr), config.batch_size, gen):
            idx = tr[b.to(dev)]
            opt.zero_grad(set_to_none=True)
            loss, _ = total_loss(idx)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.unscale_(opt)
            else:
                loss.backward()
            if config.grad_clip > 0:
                nn.utils.clip_grad_norm_(params, config.grad_clip)
            if scaler is not None:
                scaler.step(opt)
                scaler.update()
            else:
                opt.step()
            running += loss.detach() * len(idx)
            count += len(idx)
        model.eval()
        term_modules.eval()
        with torch.no_grad():
            _, val_pix = total_loss(va)
            val = float(val_pix)
        sched.step(val)
        train_loss = float(running) / max(count, 1)
        result.history.append({"epoch": epoch, "train_loss": train_loss, "val_loss": val, "lr": opt.param_groups[0]["lr"]})
        bar.set_postfix(train=f"{train_loss:.4f}", val=f"{val:.4f}")
        if val < result.best_val_loss - 1e-7:
            result.best_val_loss, result.best_epoch, bad_epochs = val, epoch, 0
            best_state = copy.deepcopy((model.state_dict(), term_modules.state_dict()))
        else:
            bad_epochs += 1
        result.stopped_epoch = epoch
        if bad_epochs >= config.patience:
            logger.info("early stop at epoch %d (best %d, val %.5f)", epoch, result.best_epoch, result.best_val_loss)
            break
    bar.close()
    model.load_state_dict(best_state[0])
    term_modules.load_state_dict(best_state[1])
    model.eval()
    result.seconds = time.perf_counter() - t0
    return result
