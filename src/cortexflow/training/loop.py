"""The one epoch loop of CortexFlow's trainers.

:func:`run_epochs` owns what every trainer does once per epoch: run the
epoch's optimiser steps, validate, step each member's learning-rate plateau,
keep each member's best weights, stop members early, record each member's
history and show the progress bar. What differs between trainers is an
:class:`EpochSteps` object, the trainer's "epoch step":

* :func:`~cortexflow.training.trainer.train_model`: one member (a network and
  its trainable loss terms), validated on its inner split;
* :func:`~cortexflow.training.batched.train_batched`: K members stacked in one
  batched model, each with its own plateau and early stopping; a member that
  stops gets its best weights back and leaves the stack (:meth:`EpochSteps.drop`);
* :func:`~cortexflow.training.prior.train_prior`: one member without
  validation, so a fixed number of epochs and no early stopping; its cosine
  learning rate is stepped per optimiser step, inside the epoch step.

The loop addresses members by their row in the stack. At the start row r is
member r; after a :meth:`EpochSteps.drop` the remaining rows are renumbered
0..A-1 in their old order, and the loop keeps track of which member each row is.
Nothing here draws random numbers or touches a tensor: the numbers of a
training run are those of its epoch step.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from cortexflow.utils.progress import progress_bar

__all__ = ["TrainResult", "EpochSteps", "Plateau", "run_epochs", "IMPROVEMENT"]

logger = logging.getLogger(__name__)

#: A validation loss counts as an improvement when it is below the best one by more than this.
IMPROVEMENT = 1e-7


@dataclass
class TrainResult:
    """What a training run returns besides the trained model."""

    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    best_val_loss: float = float("inf")
    stopped_epoch: int = 0
    seconds: float = 0.0
    device: str = "cpu"


class Plateau:
    """PyTorch's ReduceLROnPlateau rules (mode min, relative threshold, no cool-down) for one member.

    Parameters
    ----------
    factor : float
        Multiplies the learning rate when the metric has not improved for more than ``patience`` epochs.
    patience : int
        Epochs without improvement tolerated before a reduction.
    threshold : float
        Relative improvement that counts.
    min_lr : float
        Lower bound of the learning rate.
    eps : float
        Reductions smaller than this are skipped.
    """

    def __init__(self, factor: float, patience: int, threshold: float = 1e-4, min_lr: float = 0.0, eps: float = 1e-8):
        self.factor, self.patience, self.threshold, self.min_lr, self.eps = factor, patience, threshold, min_lr, eps
        self.best = math.inf
        self.num_bad = 0

    def step(self, metric: float, lr: float) -> float:
        """Record this epoch's ``metric``; return the learning rate to use from now on (``lr`` or reduced)."""
        if metric < self.best * (1.0 - self.threshold):
            self.best, self.num_bad = metric, 0
        else:
            self.num_bad += 1
        if self.num_bad > self.patience:
            new_lr = max(lr * self.factor, self.min_lr)
            self.num_bad = 0
            if lr - new_lr > self.eps:
                return new_lr
        return lr


class EpochSteps:
    """What :func:`run_epochs` asks of a trainer for the A members still in its stack (rows 0..A-1).

    A subclass defines :meth:`train_epoch` and :meth:`lr`; one that validates
    defines :meth:`validate` and, to take part in the plateau schedule and early
    stopping, :meth:`set_lr`, :meth:`keep_best` and :meth:`finish`; one whose
    members leave a shared stack defines :meth:`drop`.
    """

    def train_epoch(self, epoch: int) -> Sequence[float]:
        """Run one epoch of optimiser steps; return each row's mean training loss."""
        raise NotImplementedError

    def validate(self) -> Sequence[float] | None:
        """Each row's validation loss, or None: this trainer does not validate (the default)."""
        return None

    def lr(self, row: int) -> float:
        """The learning rate of ``row`` now."""
        raise NotImplementedError

    def set_lr(self, row: int, lr: float) -> None:
        """Set the learning rate of ``row`` (the plateau schedule's decision)."""
        raise NotImplementedError

    def keep_best(self, rows: list[int]) -> None:
        """Remember the current weights of ``rows`` as their best (their validation loss improved)."""

    def finish(self, rows: list[int]) -> None:
        """``rows`` stop training: give each of their members its best weights."""

    def drop(self, keep: list[int]) -> None:
        """Keep only the rows ``keep`` (sorted, not empty) in the stack; they become rows 0..len(keep)-1."""


class _Book:
    """The per-member bookkeeping of :func:`run_epochs`: results, plateaus, epochs without improvement, rows."""

    def __init__(self, n_members: int, epochs: int, patience: int | None, plateau: tuple[float, int] | None,
                 device: str, label: Callable[[int], str] | None):
        self.results = [TrainResult(device=device) for _ in range(n_members)]
        self.plateaus = None if plateau is None else [Plateau(*plateau) for _ in range(n_members)]
        self.bad = [0] * n_members
        self.active = list(range(n_members))  # the member of each stack row
        self.epochs, self.patience, self.label = epochs, patience, label

    def record(self, steps: EpochSteps, epoch: int, train: Sequence[float],
               val: Sequence[float] | None) -> tuple[list[int], list[int]]:
        """Schedule, history and early stopping of one epoch; return the (improved, stopping) rows."""
        improved, stopping = [], []
        for r, i in enumerate(self.active):
            entry = {"epoch": epoch, "train_loss": train[r]}
            if val is not None:
                if self._validated(steps, r, i, epoch, val[r]):
                    improved.append(r)
                entry["val_loss"] = val[r]
            entry["lr"] = steps.lr(r)
            self.results[i].history.append(entry)
            self.results[i].stopped_epoch = epoch
            if self._stops(i, epoch):
                stopping.append(r)
        return improved, stopping

    def _validated(self, steps: EpochSteps, r: int, i: int, epoch: int, val: float) -> bool:
        """Step member ``i``'s plateau on ``val`` and track its best epoch; whether it improved."""
        if self.plateaus is not None:
            steps.set_lr(r, self.plateaus[i].step(val, steps.lr(r)))
        res = self.results[i]
        if val < res.best_val_loss - IMPROVEMENT:
            res.best_val_loss, res.best_epoch, self.bad[i] = val, epoch, 0
            return True
        self.bad[i] += 1
        return False

    def _stops(self, i: int, epoch: int) -> bool:
        """Whether member ``i`` stops after ``epoch`` (its patience ran out, or the last epoch)."""
        if self.patience is not None and self.bad[i] >= self.patience:
            res = self.results[i]
            logger.info("%searly stop at epoch %d (best %d, val %.5f)", self.label(i) if self.label else "",
                        epoch, res.best_epoch, res.best_val_loss)
            return True
        return epoch == self.epochs

    def retire(self, steps: EpochSteps, stopping: list[int]) -> bool:
        """Hand ``stopping`` rows their best weights and drop them; whether any member is left."""
        steps.finish(stopping)
        keep = [r for r in range(len(self.active)) if r not in stopping]
        if keep:
            steps.drop(keep)
        self.active = [self.active[r] for r in keep]
        return bool(keep)

    def postfix(self, train: Sequence[float], val: Sequence[float] | None, n_stopping: int) -> dict:
        """The progress bar's postfix: members left (when several), mean training and validation loss."""
        post = {"active": len(self.active) - n_stopping} if len(self.results) > 1 else {}
        post["train"] = f"{float(np.mean(train)):.4f}"
        if val is not None:
            post["val"] = f"{float(np.mean(val)):.4f}"
        return post


def run_epochs(
    steps: EpochSteps,
    n_members: int,
    epochs: int,
    *,
    patience: int | None = None,
    plateau: tuple[float, int] | None = None,
    progress: bool | None = False,
    desc: str = "train",
    device: str = "cpu",
    label: Callable[[int], str] | None = None,
) -> list[TrainResult]:
    """Train ``n_members`` members for at most ``epochs`` epochs with ``steps``; one result per member.

    Each epoch: :meth:`EpochSteps.train_epoch`, then :meth:`EpochSteps.validate`;
    with validation losses, each member's plateau (``plateau``) sets its
    learning rate, an improvement (by more than :data:`IMPROVEMENT`) makes
    it the member's best epoch (:meth:`EpochSteps.keep_best`), and
    ``patience`` epochs without one stop it. A member stops, too, after the
    last epoch; stopping members get their best weights back
    (:meth:`EpochSteps.finish`) and leave the stack (:meth:`EpochSteps.drop`).

    Parameters
    ----------
    steps : EpochSteps
        The trainer's epoch step.
    n_members : int
        Members in the stack at the start (1 for a single network).
    epochs : int
        Most epochs to run (every epoch without validation).
    patience : int, optional
        Epochs without improvement of the validation loss after which a
        member stops; None: no early stopping.
    plateau : (factor, patience), optional
        Each member's :class:`Plateau` on its validation loss; None: the loop
        leaves the learning rate to ``steps``.
    progress : bool, optional
        Per-epoch progress bar (members left, mean training and validation loss).
    desc : str
        Label of the progress bar.
    device : str
        Recorded in every :class:`TrainResult`.
    label : callable, optional
        ``label(member)``: prefix of a member's early-stopping log message.

    Returns
    -------
    list of TrainResult
        Per member: the history (``epoch``, ``train_loss``, ``val_loss`` when
        validated, ``lr`` per epoch), best and stopping epochs, best
        validation loss; ``seconds`` is left to the caller.
    """
    book = _Book(n_members, epochs, patience, plateau, device, label)
    bar = progress_bar(range(1, epochs + 1), progress=progress, desc=desc, unit="epoch")
    for epoch in bar:
        train = steps.train_epoch(epoch)
        val = steps.validate()
        improved, stopping = book.record(steps, epoch, train, val)
        if improved:
            steps.keep_best(improved)
        bar.set_postfix(**book.postfix(train, val, len(stopping)))
        if stopping and not book.retire(steps, stopping):
            break
    bar.close()
    if book.active:  # no epoch at all: the members keep the weights they started with
        steps.finish(list(range(len(book.active))))
    return book.results
