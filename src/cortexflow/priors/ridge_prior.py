"""``ridge-prior``: ridge from brain signals to an image prior's embedding, decoded by the prior."""

from __future__ import annotations

import logging
from typing import Any, Mapping

import numpy as np
from sklearn.linear_model import Ridge
from sklearn.utils import TransformerTags
from sklearn.utils.validation import check_is_fitted

from cortexflow.baselines._common import (GramBasis, block_out_of_fold, default_alphas, fit_ridge_cv,
                                          fit_ridge_gcv_lean, fit_signal_scaler_lean, transform_in_chunks,
                                          uses_lean_path)
from cortexflow.data.preprocessing import SignalScaler
from cortexflow.data.splits import stimulus_groups
from cortexflow.exceptions import ConfigError
from cortexflow.registry.methods import register_method
from cortexflow.registry.sklearn_notes import TRANSFORMER_CHECKS, images_only
from cortexflow.models.base import BaseDecoder
from cortexflow.data.corpora import default_prior, get_corpus_info, list_corpora
from cortexflow.data.guard import DEFAULT_THRESHOLD
from cortexflow.models.prior import PriorConfig
from cortexflow.priors.backed import PriorBacked
from cortexflow.priors.persistence import load_decoder_state, save_decoder_state
from cortexflow.training.prior import FittedPrior, fine_tune_prior

__all__ = [
    "RidgePriorDecoder",
    "RIDGE_PRIOR_CONFIG",
    "resolve_prior_corpus",
    "resolve_prior_config",
    "requested_prior",
    "prior_report_info",
    "check_decoding",
    "inner_group_folds",
    "DECODINGS",
]

logger = logging.getLogger(__name__)

#: Prior of ``ridge-prior`` when none is given: a 16-d autoencoder, chosen by 10-fold CV of the
#: vangerven training rows over 16/32/512-d AEs and a 32-d VAE (docs/priors.md): ridge from ~100
#: rows predicts 16 coordinates better than 32 or 512.
RIDGE_PRIOR_CONFIG = PriorConfig(embed_dim=16)


def resolve_prior_corpus(prior: str | None, dataset: str | None) -> str:
    """The corpus to use: ``prior`` if given, else the data set's default.

    Raises
    ------
    ConfigError
        Unknown corpus, or no ``prior`` for a data set without a default (a
        user's file); the message lists the registered corpora.
    """
    if prior is not None:
        get_corpus_info(prior)
        return prior
    name = default_prior(dataset)
    if name is None:
        raise ConfigError(
            f"data set {dataset!r} has no default image prior; pass prior=NAME (on the command line "
            f"--set METHOD:prior=NAME) with one of the registered corpora: {', '.join(list_corpora())}"
        )
    return name


def resolve_prior_config(prior_config: PriorConfig | Mapping[str, Any] | None, default: PriorConfig | None = None,
                         **overrides: Any) -> PriorConfig:
    """A :class:`PriorConfig` from a config, a dict of fields, or None (``default``, else ``PriorConfig()``);
    ``overrides`` that are not None are applied on top."""
    if isinstance(prior_config, PriorConfig):
        cfg = prior_config
    elif prior_config is None:
        cfg = default or PriorConfig()
    elif isinstance(prior_config, Mapping):
        cfg = PriorConfig.from_dict(dict(prior_config))
    else:
        raise ConfigError(f"prior_config must be a PriorConfig, a dict or None; got {type(prior_config).__name__}")
    changes = {k: v for k, v in overrides.items() if v is not None}
    return cfg.replace(**changes) if changes else cfg


def requested_prior(est: Any) -> tuple[str, PriorConfig]:
    """The corpus and prior configuration a prior-backed estimator asks for, from its parameters (no I/O)."""
    corpus = resolve_prior_corpus(est.prior, getattr(est, "dataset", None))
    own = getattr(est, "_requested_prior_config", None)
    return corpus, (own() if callable(own) else resolve_prior_config(est.prior_config))


def prior_report_info(prior: FittedPrior) -> dict[str, Any]:
    """The JSON-serialisable facts about a prior that the benchmark report shows."""
    info = prior.info
    return {
        "prior_corpus": info["corpus"],
        "prior_n_images": int(info["n_images"]),
        "prior_n_dropped": int(info["n_dropped"]),
        "prior_threshold": float(info["threshold"]),
        "prior_cache_key": info["cache_key"],
        "prior_kind": prior.config.kind,
        "prior_embed_dim": prior.embed_dim,
        "prior_recon_mse": float(info["recon_mse"]),
        "prior_fine_tuned": "fine_tuned" in info,
    }


#: Candidate weights of the pixel ridge image for ``pixel_blend="auto"``.
BLEND_GRID = (0.0, 0.25, 0.5, 0.75, 1.0)
#: Above this many training rows the candidates of ``residual_scale="auto"`` and ``pixel_blend="auto"`` are
#: ranked on a seeded subset of this many rows (each row is decoded on its own there); every registered data
#: set has fewer rows, so its numbers do not depend on it.
RANKING_MAX_ROWS = 1000
#: Up to this many rows, grouped posterior-mean decoding (fitting only) calls the decoder once per row;
#: above, once per 64 rows (the same images up to float rounding of the batched convolutions; much faster).
ROW_BY_ROW_MAX = 256
DECODINGS = ("hybrid", "prior", "corpus-knn")


def check_decoding(decoding: str, knn: Any, pixel_blend: Any) -> None:
    """Check the decoding options of a prior method (``ConfigError`` naming the value and the allowed ones)."""
    if decoding not in DECODINGS:
        raise ConfigError(f"decoding={decoding!r}; allowed: {', '.join(map(repr, DECODINGS))}")
    if isinstance(knn, bool) or not isinstance(knn, (int, np.integer)) or knn < 1:
        raise ConfigError(f"knn={knn!r} must be an integer >= 1")
    if pixel_blend != "auto":
        try:
            w = float(pixel_blend)
        except (TypeError, ValueError):
            w = float("nan")
        if not 0 <= w <= 1:
            raise ConfigError(f"pixel_blend={pixel_blend!r} must be 'auto' or a number in [0, 1]")


def inner_group_folds(groups: np.ndarray, rng: np.random.Generator, n_folds: int = 10):
    """Inner K-fold over the training rows in which rows of one image group stay together.

    With every image distinct this is ``np.array_split(rng.permutation(n), min(10, n))``.
    """
    ids = np.unique(groups)
    folds = []
    for chunk in np.array_split(rng.permutation(len(ids)), min(n_folds, len(ids))):
        test = np.isin(groups, ids[chunk])
        folds.append((np.flatnonzero(~test), np.flatnonzero(test)))
    return folds


def _ranking_rows(n: int, rng: np.random.Generator) -> "slice | np.ndarray":
    """All rows, or a seeded sorted subset of :data:`RANKING_MAX_ROWS` of them above that (drawn only then)."""
    if n <= RANKING_MAX_ROWS:
        return slice(None)
    return np.sort(rng.choice(n, size=RANKING_MAX_ROWS, replace=False))


class RidgePriorDecoder(PriorBacked, BaseDecoder,
                        prior_config_default=":data:`RIDGE_PRIOR_CONFIG`, a 16-d AE"):
    """Ridge regression from brain signal to an image prior's embedding, decoded by the prior.

    Signals are z-scored with training-row statistics; the targets are the
    prior's unit-norm embeddings of the training stimuli; one ridge penalty
    shared by all embedding dimensions is chosen by cross-validation on the
    training rows (efficient leave-one-out by default, as in
    :class:`~cortexflow.baselines.ridge.RidgeDecoder`). A prediction is
    turned into an image by ``decoding`` (default ``"hybrid"``, below).

    Posterior-mean decoding (``residual_scale``): a point estimate of the
    embedding decodes to one sharp image, which is costly under pixel MSE
    when the estimate is off. Instead each prediction is decoded at
    ``z_hat + c * r_j`` for the out-of-fold residuals ``r_j`` of the training
    rows (10-fold inside the training rows; rows that show the same image
    stay in one fold) and the images are averaged: an
    approximation of the mean image under the embedding's uncertainty.
    ``c = 0`` is the plain decode; ``"auto"`` chooses ``c`` from
    ``residual_grid`` by the pixel MSE of the training rows' own out-of-fold
    predictions (each decoded with the residuals of rows showing other
    images); in ``"hybrid"`` decoding ``c`` is chosen for the posterior-mean
    image alone, before it is averaged with the corpus neighbours.

    Parameters
    ----------
    {prior_parameters}
    alpha : float or array-like, optional
        Fixed penalty, or a grid to choose from; 21 values from 1e-3 to 1e7 when omitted.
    cv : int or None
        ``None``: efficient leave-one-out; an int: K-fold on the training rows.
    embed_dim : int, optional
        Embedding size of the prior; overrides ``prior_config.embed_dim``.
    prior_kind : str, optional
        Kind of prior network, ``"ae"`` or ``"vae"``; overrides ``prior_config.kind``.
    prior_epochs : int, optional
        Training epochs of the prior; overrides ``prior_config.epochs``.
    residual_scale : float or "auto"
        Scale ``c`` of the residuals added before decoding (see above).
    residual_grid : sequence of float
        Candidates of ``c`` for ``"auto"``.
    n_samples : int
        Residuals averaged per prediction (a seeded subset when there are more; half as many
        when ``"auto"`` ranks the candidates).
    decoding : {"hybrid", "prior", "corpus-knn"}
        ``"prior"``: the prior's decoder (posterior mean, see above);
        ``"corpus-knn"``: the mean of the ``knn`` guarded corpus images whose
        prior embeddings are closest (cosine) to the predicted embedding;
        ``"hybrid"`` (default): the mean of those two images, two estimates of
        the same posterior mean (one from the prior's decoder, one from real
        corpus images).
    knn : int
        Corpus images averaged by ``"corpus-knn"`` and ``"hybrid"``.
    pixel_blend : float or "auto"
        Weight ``w`` of a pixel ridge image (ridge from the same z-scored
        signals to the pixels) averaged with the prior's image:
        ``(1 - w) * prior_image + w * pixel_image``. 0 (default) is off;
        ``"auto"`` chooses ``w`` from (0, 0.25, 0.5, 0.75, 1) by the pixel MSE
        of the training rows' out-of-fold images (stacking).
    fine_tune_epochs : int
        Fine-tune (a copy of) the prior on the training stimuli for this many
        epochs before encoding them (0 = off).
    fine_tune_lr : float
        Learning rate of that fine-tuning.
    random_state : int
        Seed of the fine-tuning (the prior itself is seeded by ``prior_config.seed``).
    progress : bool, optional
        Progress bar of a prior training.

    Attributes
    ----------
    prior_ : FittedPrior
    corpus_ : str
    alpha_ : float
    residual_scale_ : float
        The ``c`` used (chosen or given).
    residuals_ : ndarray (n_train, embed_dim)
        Out-of-fold residuals of the training rows' embeddings (rows showing
        the same image share an inner fold).
    corpus_images_, corpus_embeddings_ : ndarray
        The guarded corpus and its prior embeddings (``"corpus-knn"``, ``"hybrid"``).
    pixel_blend_ : float
        The pixel ridge weight used (chosen or given).
    pixel_ridge_ : RidgeCV or None
        The pixel ridge (when ``pixel_blend_ != 0`` or ``pixel_blend`` is ``"auto"``).
    residual_cv_mse_, blend_cv_mse_ : dict
        Out-of-fold MSE of each candidate ``c`` / pixel weight (when chosen by ``"auto"``).
    scaler_ : SignalScaler
    ridge_ : sklearn.linear_model.RidgeCV
    n_features_in_ : int
    report_info_ : dict
        Prior corpus, images, duplicates dropped, cache key (for the benchmark report).
    """

    _min_train_rows = 3

    def __init__(
        self,
        prior: str | None = None,
        dataset: str | None = None,
        alpha=None,
        cv: int | None = None,
        prior_config: PriorConfig | Mapping[str, Any] | None = None,
        embed_dim: int | None = None,
        prior_kind: str | None = None,
        prior_epochs: int | None = None,
        residual_scale: float | str = "auto",
        residual_grid=(0.0, 0.25, 0.5, 0.75),
        n_samples: int = 32,
        fine_tune_epochs: int = 0,
        fine_tune_lr: float = 3e-4,
        decoding: str = "hybrid",
        knn: int = 10,
        pixel_blend: float | str = 0.0,
        stimuli: np.ndarray | None = None,
        threshold: float = DEFAULT_THRESHOLD,
        random_state: int = 0,
        data_dir=None,
        cache_dir=None,
        progress: bool | None = None,
    ):
        self._set_prior_params(prior=prior, dataset=dataset, stimuli=stimuli, prior_config=prior_config,
                               threshold=threshold, data_dir=data_dir, cache_dir=cache_dir)
        self.alpha = alpha
        self.cv = cv
        self.embed_dim = embed_dim
        self.prior_kind = prior_kind
        self.prior_epochs = prior_epochs
        self.residual_scale = residual_scale
        self.residual_grid = residual_grid
        self.n_samples = n_samples
        self.fine_tune_epochs = fine_tune_epochs
        self.fine_tune_lr = fine_tune_lr
        self.decoding = decoding
        self.knn = knn
        self.pixel_blend = pixel_blend
        self.random_state = random_state
        self.progress = progress

    def _requested_prior_config(self) -> PriorConfig:
        """The prior configuration asked for: ``prior_config`` (default :data:`RIDGE_PRIOR_CONFIG`) and its shortcuts."""
        return resolve_prior_config(self.prior_config, RIDGE_PRIOR_CONFIG, embed_dim=self.embed_dim,
                                    kind=self.prior_kind, epochs=self.prior_epochs)

    def kept_corpus_images(self) -> np.ndarray | None:
        """The guarded corpus images this fitted model draws neighbours from (None when its decoding uses none)."""
        return getattr(self, "corpus_images_", None)

    def _check_params(self) -> None:
        """The parameter checks that need no data (run by every checkpoint load, see cortexflow.models.checkpoint)."""
        super()._check_params()
        self._check_prior_params()
        check_decoding(self.decoding, self.knn, self.pixel_blend)
        self._alphas()
        if self.residual_scale != "auto" and not (isinstance(self.residual_scale, (int, float, np.number))
                                                   and not isinstance(self.residual_scale, bool)
                                                   and np.isfinite(self.residual_scale) and self.residual_scale >= 0):
            raise ConfigError(f"residual_scale={self.residual_scale!r} must be 'auto' or a number >= 0")

    def _alphas(self) -> np.ndarray:
        if self.alpha is None:
            return default_alphas()
        alphas = np.atleast_1d(np.asarray(self.alpha, dtype=float))
        if alphas.ndim != 1 or len(alphas) == 0 or not np.all(np.isfinite(alphas)) or np.any(alphas <= 0):
            raise ConfigError(f"alpha={self.alpha!r} must be a positive number or a 1-d grid of them")
        return alphas

    def fit(self, X, Y) -> "RidgePriorDecoder":
        """Fit the scaler and the ridge on the training rows (``prior`` must be a fitted prior: no I/O)."""
        X, Y = self._validate_fit_input(X, Y)
        Y = Y.astype(np.float32)
        alphas = self._alphas()
        check_decoding(self.decoding, self.knn, self.pixel_blend)
        prior = self._fitted_prior(Y.shape[1:])  # handed in by cortexflow.methods.build: no I/O here
        self.corpus_ = str(prior.info["corpus"])
        corpus_images = getattr(prior, "corpus_images", None)
        if self.fine_tune_epochs:
            prior = fine_tune_prior(prior, Y, epochs=int(self.fine_tune_epochs), lr=float(self.fine_tune_lr),
                                    seed=self._seed(), progress=self.progress)
            prior.corpus_images = corpus_images
        self.prior_ = prior
        targets = prior.encode_images(Y).astype(np.float64)
        basis = None
        if uses_lean_path(np.shape(X), self.cv):  # large data: one float32 copy, one decomposition (docs/scale.md)
            self.scaler_ = fit_signal_scaler_lean(X)
            A = transform_in_chunks(self.scaler_.transform, X)
            self.ridge_, basis = fit_ridge_gcv_lean(A, targets, alphas, return_basis=True)
        else:
            self.scaler_ = SignalScaler().fit(X)
            A = self.scaler_.transform(X).astype(np.float64)
            self.ridge_ = fit_ridge_cv(A, targets, alphas, self.cv)
        self.alpha_ = float(self.ridge_.alpha_)
        if len(alphas) > 1 and self.alpha_ in (alphas.min(), alphas.max()):
            logger.warning("ridge-prior penalty %.3g lies at the edge of the grid [%.3g, %.3g]",
                           self.alpha_, alphas.min(), alphas.max())
        self._fit_decoding(A, targets, Y, basis)
        self.report_info_ = {**prior_report_info(prior), "alpha": self.alpha_, "residual_scale": self.residual_scale_,
                             "decoding": self.decoding, "pixel_blend": self.pixel_blend_}
        return self

    # ------------------------------------------------------------- decoding
    def _fit_decoding(self, A: np.ndarray, T: np.ndarray, Y: np.ndarray, basis: GramBasis | None = None) -> None:
        """Everything the decoding needs, from the training rows only.

        ``A`` z-scored training signals, ``T`` the prior's embeddings of the
        training stimuli ``Y``, ``ridge_`` / ``alpha_`` already fitted. Sets
        ``residuals_``, ``residual_scale_``, the guarded corpus and its
        embeddings (``corpus-knn`` and ``hybrid``), ``pixel_blend_`` and
        ``pixel_ridge_``. Rows that show the same image fall in the same inner
        fold, so the residuals describe the error on an image not seen in training.
        ``basis`` (the lean path's decomposition) gives the out-of-fold
        predictions without refitting (:func:`~cortexflow.baselines._common.block_out_of_fold`).
        """
        for stale in ("corpus_images_", "corpus_embeddings_", "residual_cv_mse_", "blend_cv_mse_"):
            self.__dict__.pop(stale, None)  # left by an earlier fit with other options
        rng = np.random.default_rng(self._seed())
        groups = stimulus_groups(Y)
        folds = inner_group_folds(groups, rng)
        oof = self._out_of_fold(A, T, folds, self.ridge_, basis)
        self.residuals_ = (T - oof).astype(np.float32)
        if self.decoding in ("corpus-knn", "hybrid"):
            images = getattr(self.prior_, "corpus_images", None)
            if images is None:
                raise ConfigError(f"decoding={self.decoding!r} draws corpus neighbours, but the fitted prior holds no "
                                  "corpus images (prior.corpus_images: set by cortexflow.methods.build.resolve_prior); "
                                  "allowed without them: decoding='prior'")
            self.corpus_images_ = images
            self.corpus_embeddings_ = self.prior_.encode_images(images)
        rank_rows = _ranking_rows(len(Y), rng)
        self.residual_scale_ = 0.0 if self.decoding == "corpus-knn" else self._choose_scale(oof, Y, groups, rng,
                                                                                             rank_rows)
        self.pixel_blend_, self.pixel_ridge_ = 0.0, None
        if self.pixel_blend != 0:
            self._fit_pixel_blend(A, Y, folds, oof, groups, rng, basis, rank_rows)

    def _out_of_fold(self, A: np.ndarray, T: np.ndarray, folds: list[tuple[np.ndarray, np.ndarray]], ridge=None,
                     basis: GramBasis | None = None) -> np.ndarray:
        """Out-of-fold ridge predictions of ``T`` over ``folds`` at the penalty of ``ridge`` (default ``ridge_``)."""
        ridge = self.ridge_ if ridge is None else ridge
        if basis is not None:
            return block_out_of_fold(ridge, basis, A, T, folds)
        oof = np.zeros_like(T)
        for tr, te in folds:
            oof[te] = Ridge(alpha=float(ridge.alpha_)).fit(A[tr], T[tr]).predict(A[te])
        return oof

    def _decode_mean(self, Z: np.ndarray, scale: float, rng: np.random.Generator, groups: np.ndarray | None = None,
                     cap: int | None = None, row_groups: np.ndarray | None = None) -> np.ndarray:
        """Mean decoded image of each row of ``Z`` over ``Z + scale * residual`` samples.

        Without ``groups`` (prediction) every row uses the same seeded subset
        of residuals, so a row's image does not depend on the other rows
        predicted with it. With ``groups`` (the training rows' image groups,
        one per residual; used while fitting) row ``i`` uses only residuals
        of rows showing another image than ``row_groups[i]`` (default:
        ``groups``, when ``Z`` holds every training row).
        """
        if scale == 0:
            return self.prior_.decode_embeddings(Z.astype(np.float32))
        R, n = self.residuals_, len(self.residuals_)
        k = int(cap or self.n_samples)
        shape = self.prior_.image_shape
        out = np.empty((len(Z), *shape), dtype=np.float32)
        if groups is None:
            pool = rng.choice(n, size=k, replace=False) if n > k else np.arange(n)
            for start in range(0, len(Z), 64):  # rows in chunks: one decoder call per chunk
                z = Z[start:start + 64]
                samples = (z[:, None, :] + scale * R[pool][None]).reshape(-1, Z.shape[1]).astype(np.float32)
                out[start:start + len(z)] = self.prior_.decode_embeddings(samples).reshape(len(z), len(pool), *shape).mean(1)
            return out
        row_groups = groups if row_groups is None else row_groups
        pools = []
        for i in range(len(Z)):  # every row's residual pool first (the same draws in the same order)
            pool = np.flatnonzero(groups != row_groups[i])
            pools.append(rng.choice(pool, size=k, replace=False) if len(pool) > k else pool)
        if len(Z) <= ROW_BY_ROW_MAX:  # one decoder call per row (the registered data sets' numbers)
            for i, (z, pool) in enumerate(zip(Z, pools)):
                out[i] = self.prior_.decode_embeddings((z[None] + scale * R[pool]).astype(np.float32)).mean(axis=0)
            return out
        for start in range(0, len(Z), 64):  # large data: 64 rows' samples per decoder call
            chunk = range(start, min(start + 64, len(Z)))
            samples = np.concatenate([Z[i][None] + scale * R[pools[i]] for i in chunk]).astype(np.float32)
            images = self.prior_.decode_embeddings(samples)
            ends = np.cumsum([len(pools[i]) for i in chunk])
            for i, part in zip(chunk, np.split(images, ends[:-1])):
                out[i] = part.mean(axis=0)
        return out

    def _corpus_knn(self, Z: np.ndarray) -> np.ndarray:
        """Mean of the ``knn`` guarded corpus images whose embeddings are closest (cosine) to each row of ``Z``."""
        Zn = Z / np.maximum(np.linalg.norm(Z, axis=1, keepdims=True), 1e-12)
        sims = Zn.astype(np.float32) @ self.corpus_embeddings_.T
        k = min(int(self.knn), sims.shape[1])
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        return self.corpus_images_[top].mean(axis=1).astype(np.float32)

    def _decode(self, Z: np.ndarray, rng: np.random.Generator, groups: np.ndarray | None = None,
                cap: int | None = None, row_groups: np.ndarray | None = None) -> np.ndarray:
        """Images (n, 28, 28) from raw ridge-space embeddings ``Z`` by the chosen ``decoding``."""
        if self.decoding == "corpus-knn":
            return self._corpus_knn(Z)
        img = self._decode_mean(Z, self.residual_scale_, rng, groups, cap, row_groups)
        if self.decoding == "hybrid":
            img = 0.5 * (img + self._corpus_knn(Z))
        return img

    def _choose_scale(self, oof: np.ndarray, Y: np.ndarray, groups: np.ndarray, rng: np.random.Generator,
                      rows: "slice | np.ndarray" = slice(None)) -> float:
        """``residual_scale``, or the candidate of ``residual_grid`` with the lowest out-of-fold MSE on ``rows``."""
        if self.residual_scale != "auto":
            scale = float(self.residual_scale)
            if not np.isfinite(scale) or scale < 0:
                raise ConfigError(f"residual_scale={self.residual_scale!r} must be 'auto' or a number >= 0")
            return scale
        grid = [float(c) for c in self.residual_grid]
        if not grid or min(grid) < 0:
            raise ConfigError(f"residual_grid={self.residual_grid!r} must hold numbers >= 0")
        cap = max(1, int(self.n_samples) // 2)  # half the samples suffice to rank the candidates
        errors = [float(((self._decode_mean(oof[rows], c, rng, groups, cap=cap, row_groups=groups[rows]) - Y[rows]) ** 2
                         ).mean()) for c in grid]
        self.residual_cv_mse_ = dict(zip(grid, errors))
        return grid[int(np.argmin(errors))]

    def _fit_pixel_blend(self, A, Y, folds, oof, groups, rng, basis: GramBasis | None = None,
                         rank_rows=slice(None)) -> None:
        """Pixel ridge beside the prior's image; its weight given, or chosen on the training rows' out-of-fold images.

        ``basis`` (the lean path's decomposition of ``A``, from the embedding fit) is reused for the pixel ridge.
        """
        Yf = Y.reshape(len(Y), -1).astype(np.float64)
        if basis is not None:
            self.pixel_ridge_, basis = fit_ridge_gcv_lean(A, Yf, self._alphas(), return_basis=True, basis=basis)
        else:
            self.pixel_ridge_ = fit_ridge_cv(A, Yf, self._alphas(), self.cv)
        if self.pixel_blend != "auto":
            self.pixel_blend_ = float(self.pixel_blend)
            return
        oof_pix = self._out_of_fold(A, Yf, folds, self.pixel_ridge_, basis)[rank_rows]
        Yf = Yf[rank_rows]
        img = self._decode(oof[rank_rows], rng, groups, row_groups=groups[rank_rows]).reshape(len(Yf), -1)
        errors = [float((((1 - w) * img + w * oof_pix - Yf) ** 2).mean()) for w in BLEND_GRID]
        self.blend_cv_mse_ = dict(zip(BLEND_GRID, errors))
        self.pixel_blend_ = BLEND_GRID[int(np.argmin(errors))]

    def _blend(self, img: np.ndarray, A: np.ndarray) -> np.ndarray:
        if not getattr(self, "pixel_blend_", 0.0):  # absent from checkpoints written before the option existed
            return img
        pix = self.pixel_ridge_.predict(A).reshape(img.shape)
        return np.clip((1 - self.pixel_blend_) * img + self.pixel_blend_ * pix, 0.0, 1.0).astype(np.float32)  # [0, 1] like every decoder

    def transform(self, X) -> np.ndarray:
        """Predicted unit-norm prior embeddings (n, embed_dim)."""
        check_is_fitted(self, "ridge_")
        X = self._validate_X(X, reset=False)
        Z = self.ridge_.predict(self.scaler_.transform(X).astype(np.float64))
        Z = np.atleast_2d(Z)
        return (Z / np.maximum(np.linalg.norm(Z, axis=1, keepdims=True), 1e-12)).astype(np.float32)

    def fit_transform(self, X, y=None, **fit_params) -> np.ndarray:
        """Fit on (X, y), then return the predicted embeddings of X (``y``, the images, is required)."""
        return self.fit(X, y, **fit_params).transform(X)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags = TransformerTags(preserves_dtype=["float32"])  # float32 embeddings
        return tags

    def predict(self, X) -> np.ndarray:
        """Reconstructions (n, 28, 28) float32 in [0, 1] by the chosen ``decoding`` (see the class docstring)."""
        check_is_fitted(self, "ridge_")
        X = self._validate_X(X, reset=False)
        A = self.scaler_.transform(X).astype(np.float64)
        Z = np.atleast_2d(self.ridge_.predict(A))
        img = self._decode(Z, np.random.default_rng(self._seed()))
        return self._blend(img, A)

    # ---------------------------------------------------------- persistence
    #: ``kind`` field of its checkpoints (see :func:`cortexflow.models.loader.load_decoder`).
    checkpoint_kind = "ridge-prior"

    def save(self, path):
        """Write a self-contained checkpoint folder (the prior's weights and config included).

        What it holds and how: :mod:`cortexflow.priors.persistence`.
        """
        return save_decoder_state(self, path, kind=self.checkpoint_kind, fitted_attr="ridge_")

    @classmethod
    def load(cls, path, device: str = "auto") -> "RidgePriorDecoder":
        """Load a checkpoint written by :meth:`save`; needs no prior cache, corpus or network (``device`` is unused).

        Raises
        ------
        CheckpointError
            Missing or damaged files, a weights hash that differs, or another kind of checkpoint.
        """
        return load_decoder_state(cls, path, kind=cls.checkpoint_kind)


# ---------------------------------------------------------------- registration
#: Tiny prior for ``fast=True`` runs (tests, smoke runs): 500 images, 1 epoch, 32-d.
FAST_PRIOR_CONFIG = {"epochs": 1, "max_images": 500, "embed_dim": 32, "widths": [8, 16, 32]}


def ridge_prior_factory(seed: int, dataset_name: str, n_train: int, *, fast: bool = False, stimuli=None,
                        **options: Any) -> RidgePriorDecoder:
    """Unfitted :class:`RidgePriorDecoder` (``options`` are its parameters)."""
    if fast:
        options = {"prior_config": dict(FAST_PRIOR_CONFIG), "n_samples": 4, "residual_grid": [0.0, 0.5], **options}
    return RidgePriorDecoder(dataset=dataset_name, stimuli=stimuli, random_state=seed, **options)


_RIDGE_PRIOR_OPTIONS = dict(choices={"decoding": DECODINGS}, ranges={"knn": (1, None), "n_samples": (1, None),
                                                                     "threshold": (0, None),
                                                                     "fine_tune_epochs": (0, None)})
register_method(
    "ridge-prior", ridge_prior_factory, estimator=RidgePriorDecoder, needs=("prior",), label="ridge-prior",
    version="2",  # 2: hybrid decoding (prior posterior mean + corpus neighbours), inner folds by image
    description="ridge from z-scored signal to an image prior's embedding (penalty by inner LOO CV), "
                "decoded by the prior and its corpus (option prior=CORPUS; default: the data set's)",
    sklearn_xfail=images_only("check_regressor_data_not_an_array", *TRANSFORMER_CHECKS),
    **_RIDGE_PRIOR_OPTIONS,
)
register_method(
    "ridge-prior-stacked", ridge_prior_factory, estimator=RidgePriorDecoder, needs=("prior",), version="1",
    defaults={"pixel_blend": "auto"},
    label="ridge-prior-stacked",
    description="ridge-prior averaged with pixel ridge, the weight chosen from 0, 0.25, ..., 1 by the "
                "training rows' out-of-fold MSE (pixel_blend='auto')",
    **_RIDGE_PRIOR_OPTIONS,
)
