"""Shared helpers of the torch baselines: one call into the project's training loop.

Every network of the baselines is trained by :func:`cortexflow.training.train_model`
(the one training loop of the project); :func:`train_network` only turns a few
keyword arguments into the :class:`~cortexflow.training.TrainingConfig` that the
loop reads (optimiser, early stopping, inner validation split).

The ridge helpers choose one penalty for all targets: :func:`fit_ridge_cv` is
scikit-learn's ``RidgeCV`` (efficient leave-one-out) up to
:data:`LEAN_MIN_ELEMENTS` training values and :func:`fit_ridge_gcv_lean` above
(float32, one eigendecomposition shared by every target and penalty, GCV);
docs/scale.md, "NSD-size data".
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np
import scipy.linalg
from scipy.linalg import blas as _blas
from sklearn.linear_model import RidgeCV
from torch import nn

from cortexflow.data.preprocessing import SignalScaler
from cortexflow.exceptions import ConfigError
from cortexflow.training.config import TrainingConfig
from cortexflow.training.seeding import seeded_generator
from cortexflow.training.trainer import LossFn, LossTerm, TrainResult, train_model

__all__ = [
    "train_network",
    "default_alphas",
    "fit_ridge_cv",
    "fit_ridge_gcv_lean",
    "GramBasis",
    "block_out_of_fold",
    "uses_lean_path",
    "fit_signal_scaler_lean",
    "transform_in_chunks",
    "LEAN_MIN_ELEMENTS",
    "seeded_generator",
    "check_alphas",
]

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


#: :func:`fit_ridge_cv` takes the lean path (:func:`fit_ridge_gcv_lean`) when the training matrix has more
#: elements than this (n_samples x n_features; 2**26 = 256 MiB of float32) and ``cv`` is None. Every registered
#: data set lies far below it (vangerven 90 x 3,092; miyawaki 440 x 967), so their numbers are the ones
#: scikit-learn's RidgeCV gives.
LEAN_MIN_ELEMENTS = 2**26

#: Values per row (or column) chunk of the lean path (16 Mi float32 values = 64 MiB).
_CHUNK_VALUES = 2**24


def uses_lean_path(shape: tuple[int, ...], cv=None) -> bool:
    """True when :func:`fit_ridge_cv` fits a training matrix of ``shape`` by the lean path."""
    return cv is None and int(shape[0]) * int(np.prod(shape[1:], dtype=np.int64)) > LEAN_MIN_ELEMENTS


def fit_ridge_cv(X: np.ndarray, Y: np.ndarray, alphas: np.ndarray | None = None, cv=None) -> RidgeCV:
    """RidgeCV with one penalty shared by all outputs, chosen on the rows given.

    With ``cv=None`` scikit-learn uses efficient leave-one-out (the
    eigendecomposition of the n x n Gram matrix when n < p), so the inner
    cross-validation costs about one fit. Above :data:`LEAN_MIN_ELEMENTS`
    (``cv=None`` only) the fit goes through :func:`fit_ridge_gcv_lean`
    instead: float32, one eigendecomposition of the smaller Gram matrix,
    penalty by generalised cross-validation (see there).
    """
    alphas = default_alphas() if alphas is None else np.asarray(alphas, dtype=float)
    if uses_lean_path(np.shape(X), cv):
        return fit_ridge_gcv_lean(X, Y, alphas)
    return RidgeCV(alphas=alphas, cv=cv).fit(X, Y)


def _row_chunks(n: int, width: int) -> list[slice]:
    step = max(1, _CHUNK_VALUES // max(1, width))
    return [slice(i, min(n, i + step)) for i in range(0, n, step)]


def transform_in_chunks(transform: Callable[[np.ndarray], np.ndarray], X: np.ndarray,
                        dtype=np.float32) -> np.ndarray:
    """``transform(X)`` computed on row chunks into one ``dtype`` array (no full-size temporaries).

    For a row-wise transform (such as :meth:`SignalScaler.transform`) the
    result equals ``transform(X).astype(dtype)`` exactly.
    """
    out = np.empty(np.shape(X), dtype=dtype)
    for sl in _row_chunks(len(X), int(np.prod(np.shape(X)[1:], dtype=np.int64))):
        out[sl] = transform(X[sl])
    return out


def fit_signal_scaler_lean(X: np.ndarray):
    """A :class:`~cortexflow.data.preprocessing.SignalScaler` fitted row block by row block.

    ``SignalScaler().fit(X)`` holds a float64 copy of ``X`` and a float64
    temporary of the same size (7 GB for 27,000 x 16,000); this fit holds
    one float64 block of rows at a time and reads ``X`` in its memory order
    (two passes: the means, then the squared deviations from them). Mean and
    standard deviation are float64 as there (the same two-pass formula;
    results may differ from the full fit in the last bits).
    """
    X2 = np.asarray(X).reshape(len(X), -1)
    n, p = X2.shape
    chunks = _row_chunks(n, p)
    total = np.zeros(p)
    for sl in chunks:
        total += X2[sl].sum(axis=0, dtype=np.float64)
    mean = total / max(n, 1)
    sq = np.zeros(p)
    for sl in chunks:
        dev = np.asarray(X2[sl], dtype=np.float64) - mean
        sq += np.einsum("ij,ij->j", dev, dev)
    std = np.sqrt(sq / max(n, 1))
    scaler = SignalScaler()
    return SignalScaler.from_state({"params": scaler.get_params(), "mean_": mean.tolist(),
                                    "scale_": np.where(std > 0, std, 1.0).tolist()})


def _eigh_upper(M: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues and eigenvectors of the symmetric ``M`` (upper triangle read; ``M`` is overwritten).

    LAPACK's divide-and-conquer driver (``syevd``): for all eigenvectors
    it is several times faster than SciPy's default (``syevr``; 4.1 s vs 27 s
    for a 4,000 x 4,000 float32 Gram matrix, 29 s for 8,000 x 8,000, on the
    project's 2-core CPU; 16,000 x 16,000 in about 4 minutes). ``M`` is
    overwritten (no second p x p copy at NSD size).
    """
    try:
        return scipy.linalg.eigh(M, lower=False, overwrite_a=True, check_finite=False, driver="evd")
    except np.linalg.LinAlgError as exc:  # pragma: no cover - LAPACK's syevd did not converge
        raise np.linalg.LinAlgError(f"the {len(M)} x {len(M)} Gram matrix of the ridge fit could not be "
                                    f"decomposed ({exc}); check the signals for constant or duplicated "
                                    "columns, or pass cv=5 to use scikit-learn's solver") from exc


def fit_ridge_gcv_lean(
    X: np.ndarray,
    Y: np.ndarray,
    alphas: np.ndarray | None = None,
    *,
    transform: Callable[[np.ndarray], np.ndarray] | None = None,
    return_basis: bool = False,
    basis: "GramBasis | None" = None,
) -> "RidgeCV | tuple[RidgeCV, GramBasis | None]":
    """Ridge for many targets, one penalty for all, chosen by GCV from ONE eigendecomposition (float32).

    The smaller of the two Gram matrices of the centred design is formed in
    float32, block by block (``Xc' Xc``, p x p, when n >= p; ``Xc Xc'``,
    n x n, when n < p), and decomposed once: ``V diag(s^2) V'``. The targets
    are projected onto that basis once (``B = U' Yc``, with ``U = Xc V / s``).
    Every penalty ``a`` of the grid is then scored by generalised
    cross-validation in O(rank) operations::

        g_j = a / (s_j^2 + a)
        RSS(a) = ||Yc - U U' Yc||^2 + sum_j g_j^2 ||B_j||^2
        df(a) = 1 + sum_j (1 - g_j)                    (1: the unpenalised intercept)
        GCV(a) = RSS(a) / (n t) / (1 - df(a) / n)^2   (t: number of targets)

    and the weights of the chosen penalty are ``V diag(1 / (s^2 + a)) V' Xc' Yc``
    (primal) or ``Xc' U diag(1 / (s^2 + a)) U' Yc`` (dual).

    GCV is leave-one-out's rotation-invariant form (it replaces each row's
    leverage ``h_ii`` by the mean ``tr(H) / n``); exact leave-one-out, the
    criterion of scikit-learn's ``RidgeCV``, costs ``n x rank x t``
    operations per penalty (about 21 x 1.8e12 at 27,000 x 16,000 -> 4,096
    pixels) and GCV almost nothing. Both criteria pick the same grid point
    when the leverages are even (tests/test_ridge_solver.py compares the two).

    Parameters
    ----------
    X : ndarray (n, p)
        Training rows; float32 or float64, a memory map is read block by block.
    Y : ndarray (n,) or (n, t)
        Targets.
    alphas : array-like, optional
        Penalty grid (default :func:`default_alphas`).
    transform : callable, optional
        Applied to each block of rows of ``X`` before use (for example
        ``SignalScaler.transform``), so that the transformed matrix is never
        held whole when n >= p.
    return_basis : bool
        Also return the decomposition (primal path only, else None) as a
        :class:`GramBasis`, for exact out-of-fold predictions at the chosen
        penalty (:func:`block_out_of_fold`) without a second decomposition.
    basis : GramBasis, optional
        The decomposition returned by an earlier fit on the same ``X`` (and
        ``transform``): reused, so a second set of targets costs one pass
        over ``X`` for ``Xc' Y`` instead of a new Gram matrix and eigendecomposition.

    Returns
    -------
    sklearn.linear_model.RidgeCV
        Fitted attributes set as ``RidgeCV.fit`` sets them: ``alpha_``,
        ``best_score_`` (minus the GCV mean squared error), ``coef_``
        (float64, (t, p) or (p,)), ``intercept_``, ``n_features_in_``;
        ``predict`` works as usual. Also ``gcv_scores_`` (GCV MSE per alpha)
        and ``lean_path_ = "primal"`` or ``"dual"``.
    """
    alphas = default_alphas() if alphas is None else np.asarray(alphas, dtype=float)
    X = X if isinstance(X, np.ndarray) else np.asarray(X)
    Y = np.asarray(Y)
    one_target = Y.ndim == 1
    Y2 = Y.reshape(len(Y), -1)
    n, p = X.shape
    t = Y2.shape[1]
    if len(Y2) != n:
        raise ValueError(f"X has {n} rows but Y has {len(Y2)}")
    if n < 2:
        raise ValueError(f"ridge needs at least 2 training rows; got {n}")

    def rows(sl: slice) -> np.ndarray:
        block = X[sl] if transform is None else transform(X[sl])
        return np.asarray(block, dtype=np.float32)

    if basis is not None and (basis.n_rows != n or len(basis.x_mean) != p):
        raise ValueError(f"basis of a {basis.n_rows} x {len(basis.x_mean)} fit given for X of shape {(n, p)}")
    t0 = time.perf_counter()
    # means (float64) and centred targets (float32)
    if basis is not None:
        x_mean = basis.x_mean
    else:
        x_mean = np.zeros(p)
        for sl in _row_chunks(n, p):
            x_mean += rows(sl).sum(axis=0, dtype=np.float64)
        x_mean /= n
    y_mean = Y2.mean(axis=0, dtype=np.float64)
    Yc = (Y2 - y_mean).astype(np.float32)
    y_ss = float(np.einsum("ij,ij->", Yc, Yc, dtype=np.float64))
    mu32 = x_mean.astype(np.float32)
    if basis is not None:  # primal, the decomposition of an earlier fit on the same X: only Xc' Yc is new
        lean = "primal"
        XtY = np.zeros((p, t), dtype=np.float32)
        for sl in _row_chunks(n, p):
            XtY += (rows(sl) - mu32).T @ Yc[sl]
        t_gram = t_eig = time.perf_counter()
        lam, V = basis.eigvals, basis.eigvecs
    elif n >= p:  # primal: C = Xc' Xc (p x p) and Xc' Yc, one pass over the rows
        lean = "primal"
        C = np.zeros((p, p), dtype=np.float32, order="F")
        XtY = np.zeros((p, t), dtype=np.float32)
        for sl in _row_chunks(n, p):
            A = rows(sl) - mu32
            C = _blas.ssyrk(1.0, A.T, beta=1.0, c=C, trans=0, lower=0, overwrite_c=1)  # C += A' A (upper)
            XtY += A.T @ Yc[sl]
        del A
        t_gram = time.perf_counter()
        lam, V = _eigh_upper(C)
        t_eig = time.perf_counter()
        del C
        lam = np.clip(lam.astype(np.float64), 0.0, None)
    else:  # dual: K = Xc Xc' (n x n)
        lean = "dual"
        Xc = np.empty((n, p), dtype=np.float32)
        for sl in _row_chunks(n, p):
            Xc[sl] = rows(sl) - mu32
        K = np.zeros((n, n), dtype=np.float32, order="F")
        step = max(1, _CHUNK_VALUES // n)
        for j in range(0, p, step):
            K = _blas.ssyrk(1.0, np.asfortranarray(Xc[:, j:j + step]), beta=1.0, c=K, trans=0, lower=0,
                            overwrite_c=1)  # K += A A' (upper)
        t_gram = time.perf_counter()
        lam, U = _eigh_upper(K)
        t_eig = time.perf_counter()
        del K
        lam = np.clip(lam.astype(np.float64), 0.0, None)
        B = (U.T @ Yc).astype(np.float64)
        keep = lam > lam.max(initial=0.0) * n * np.finfo(np.float32).eps
        b_all = np.einsum("ij,ij->i", B, B)
        b = np.where(keep, b_all, 0.0)
    if lean == "primal":
        Q = (V.T @ XtY).astype(np.float64)  # = diag(s) U' Yc
        del XtY
        keep = lam > lam.max(initial=0.0) * p * np.finfo(np.float32).eps
        b = np.zeros(p)
        b[keep] = np.einsum("ij,ij->i", Q[keep], Q[keep]) / lam[keep]  # ||B_j||^2
    lam_k, b_k = lam[keep], b[keep]
    # the residual outside the kept eigenvectors: in the dual U is a whole basis of R^n, so it is the part of Yc
    # on the dropped eigenvectors (summed directly: the difference ||Yc||^2 - sum_j ||B_j||^2 would be float
    # rounding where the ridge interpolates); then, with g = 1 - f written as a / (s^2 + a) so that nothing
    # cancels at small penalties: RSS = ||Yp||^2 + sum_j g_j^2 ||B_j||^2 and n - df = (n - 1 - rank) + sum_j g_j
    yp_ss = float(b_all[~keep].sum()) if lean == "dual" else max(y_ss - float(b_k.sum()), 0.0)
    scores = np.empty(len(alphas))
    for i, a in enumerate(alphas):
        g = a / (lam_k + a)
        rss = yp_ss + float(np.sum(g * g * b_k))
        resid_df = (n - 1 - len(lam_k)) + float(g.sum())
        scores[i] = rss / (n * t) / max(resid_df / n, np.finfo(float).tiny) ** 2
    best = int(np.argmin(scores))
    alpha = float(alphas[best])
    d = 1.0 / (lam + alpha)  # every direction (the dropped ones carry next to nothing: s_j ~ 0)
    basis = None
    if lean == "primal":
        W = V @ (Q * d[:, None]).astype(np.float32)  # (p, t)
        if return_basis:
            basis = GramBasis(x_mean=x_mean, eigvals=lam, eigvecs=V, n_rows=n, alpha=alpha)
        del V, Q
    else:
        A_dual = U @ (B * d[:, None]).astype(np.float32)  # (n, t)
        del U, B
        W = np.empty((p, t), dtype=np.float32)
        step = max(1, _CHUNK_VALUES // n)
        for j in range(0, p, step):
            W[j:j + step] = Xc[:, j:j + step].T @ A_dual
        del Xc, A_dual
    coef = W.T.astype(np.float64)
    intercept = y_mean - coef @ x_mean
    model = RidgeCV(alphas=alphas)
    model.alpha_ = alpha
    model.best_score_ = -float(scores[best])
    model.gcv_scores_ = scores
    model.lean_path_ = lean
    model.coef_ = coef[0] if one_target else coef
    model.intercept_ = float(intercept[0]) if one_target else intercept
    model.n_features_in_ = p
    logger.info("lean ridge (%s, %d x %d -> %d targets): alpha %.3g; means + Gram %.1f s, eigendecomposition "
                "%.1f s, penalty and weights %.1f s", lean, n, p, t, alpha, t_gram - t0, t_eig - t_gram,
                time.perf_counter() - t_eig)
    return (model, basis) if return_basis else model


@dataclass
class GramBasis:
    """The eigendecomposition of the centred training Gram matrix kept by :func:`fit_ridge_gcv_lean`.

    Attributes
    ----------
    x_mean : ndarray (p,)
        Column means of the training rows (float64).
    eigvals, eigvecs : ndarray (p,), ndarray (p, p)
        ``Xc' Xc = eigvecs diag(eigvals) eigvecs'`` (float64 values, float32 vectors).
    n_rows : int
        Training rows.
    alpha : float
        The penalty the fit chose.
    """

    x_mean: np.ndarray
    eigvals: np.ndarray
    eigvecs: np.ndarray
    n_rows: int
    alpha: float


def block_out_of_fold(model: RidgeCV, basis: GramBasis, X: np.ndarray, Y: np.ndarray,
                      folds: Sequence[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Out-of-fold predictions of ridge at ``basis.alpha`` for each held-out block, from the full fit only.

    Refitting ridge (penalised weights, unpenalised intercept) without the
    rows ``te`` changes their residuals to ``(I - H_te)^-1 r_te``, where
    ``r_te`` are the full fit's residuals and ``H_te = 1/n + Xc_te (Xc' Xc +
    alpha I)^-1 Xc_te'`` is the block of the hat matrix (the block form of
    the leave-one-out identity; exact for penalised least squares). With the
    decomposition of the full fit this costs one ``(m, p) x (p, p)`` product
    per block of ``m`` rows instead of a new fit; the result equals
    ``Ridge(alpha).fit(X[tr], Y[tr]).predict(X[te])`` up to float32 rounding
    (tests/test_ridge_solver.py). ``folds`` must partition the rows; ``X``
    is the matrix the fit saw (transformed), float32 or float64.

    Returns
    -------
    ndarray, shape of ``Y`` (float64)
    """
    Y2 = np.asarray(Y, dtype=np.float64).reshape(len(Y), -1)
    oof = np.empty_like(Y2)
    d = 1.0 / (basis.eigvals + basis.alpha)
    mu32 = basis.x_mean.astype(np.float32)
    for _, te in folds:
        Xte = np.asarray(X[te], dtype=np.float32)
        P = ((Xte - mu32) @ basis.eigvecs).astype(np.float64)  # (m, p)
        H = (P * d) @ P.T + 1.0 / basis.n_rows
        resid = Y2[te] - np.asarray(model.predict(Xte), dtype=np.float64).reshape(len(te), -1)
        oof[te] = Y2[te] - np.linalg.solve(np.eye(len(te)) - H, resid)
    return oof.reshape(np.shape(Y))


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
