"""Shared helpers of the torch baselines: one call into the project's training loop.

Every network of the baselines is trained by :func:`cortexflow.training.train_model`
(the one training loop of the project); :func:`train_network` only turns a few
keyword arguments into the :class:`~cortexflow.training.TrainingConfig` that the
loop reads (optimiser, early stopping, inner validation split).
"""

from __future__ import annotations

import logging
from typing import Mapping

import numpy as np
from sklearn.linear_model import RidgeCV
from torch import nn

from cortexflow.exceptions import ConfigError
from cortexflow.training.config import TrainingConfig
from cortexflow.training.seeding import seeded_generator
from cortexflow.training.trainer import LossFn, LossTerm, TrainResult, train_model

__all__ = ["train_network", "default_alphas", "fit_ridge_cv", "seeded_generator", "check_alphas"]

logger = logging.getLogger(__name__)


def train_network(
    model: nn.Module,
    X: np.ndarray,
    Y: np.ndarray,
    *,
    seed: int,
    epochs: int,
    patience: int,
    lr: float = 1e-3,
    batch_size: int = 16,
    weight_decay: float = 0.0,
    grad_clip: float = 1.0,
    val_fraction: float = 0.15,
    loss_terms: Mapping[str, LossTerm] | None = None,
    loss_weights: Mapping[str, float] | None = None,
    device: str = "cpu",
    progress: bool = False,
    name: str = "baseline",
    compute_loss: LossFn | None = None,
) -> TrainResult:
    """Train ``model`` (with ``encode``/``decode``) by :func:`cortexflow.training.train_model`.

    Early stopping and the learning-rate schedule use an inner validation split
    carved from the rows of ``X`` with ``seed``; nothing else is seen.

    Parameters
    ----------
    model : nn.Module
        Network with ``encode(x)`` and ``decode(embedding)``.
    X, Y : ndarray
        Inputs and targets of the training rows.
    seed : int
        Seeds the inner split and the mini-batch order.
    epochs, patience, lr, batch_size, weight_decay, grad_clip, val_fraction :
        Training settings (see :class:`~cortexflow.training.TrainingConfig`).
    loss_terms, loss_weights : mapping, optional
        Extra loss terms and their weights.
    device : str
        Torch device.
    progress : bool
        Per-epoch progress bar.
    name : str
        The network's name in logs.
    compute_loss : callable, optional
        The network's own loss (see :func:`~cortexflow.training.train_model`).

    Returns
    -------
    TrainResult
    """
    cfg = TrainingConfig(
        lr=lr,
        batch_size=batch_size,
        weight_decay=weight_decay,
        epochs=epochs,
        patience=patience,
        grad_clip=grad_clip,
        val_fraction=val_fraction,
        lr_patience=max(1, patience // 3),
        loss_weights=dict(loss_weights or {}),
    )
    logger.debug("training %s: %s", name, cfg)
    return train_model(model, X, Y, cfg, seed=seed, device=device, progress=progress, loss_terms=loss_terms,
                       compute_loss=compute_loss)


def default_alphas(n_alphas: int = 21) -> np.ndarray:
    """Log-spaced ridge penalties from 1e-3 to 1e7 (signals are z-scored, so X'X scales with n x p)."""
    return np.logspace(-3, 7, n_alphas)


def fit_ridge_cv(X: np.ndarray, Y: np.ndarray, alphas: np.ndarray | None = None, cv=None) -> RidgeCV:
    """RidgeCV with one penalty shared by all outputs, chosen on the rows given.

    With ``cv=None`` scikit-learn uses efficient leave-one-out (the
    eigendecomposition of the n x n Gram matrix when n < p), so the inner
    cross-validation costs about one fit.
    """
    alphas = default_alphas() if alphas is None else np.asarray(alphas, dtype=float)
    return RidgeCV(alphas=alphas, cv=cv).fit(X, Y)


def check_alphas(alphas) -> None:
    """Raise :class:`ConfigError` unless ``alphas`` is None or a non-empty 1-d grid of finite numbers > 0."""
    if alphas is None:
        return
    try:
        a = np.atleast_1d(np.asarray(alphas, dtype=float))
    except (TypeError, ValueError):
        a = np.array([np.nan])
    if a.ndim != 1 or not len(a) or not np.all(np.isfinite(a)) or np.any(a <= 0):
        raise ConfigError(f"alphas={alphas!r} is not allowed; allowed: None or a non-empty list of numbers > 0")
