"""Train an image prior on a guarded corpus, and cache it on disk.

:func:`get_prior` is the one entry point: it loads the corpus, drops the
near-duplicates of the given stimuli (:mod:`cortexflow.data.guard`), and
returns a :class:`FittedPrior`, trained once and then read from the cache.
:func:`train_prior` trains it (AdamW, a cosine learning rate stepped after
every optimiser step) through the shared epoch loop
(:func:`cortexflow.training.loop.run_epochs`) without validation: a fixed
number of epochs, no early stopping.

The cache entry of a prior is the folder

``<cache root>/priors/<corpus>/<key>/`` with ``weights.safetensors`` and ``prior.json``

where ``key`` hashes the cache format, the corpus name and checksum, the
:class:`PriorConfig`, the guard threshold and the indices of the dropped images.
The cache root is the ``cache_dir`` argument, else ``$CORTEXFLOW_CACHE``,
else the user's cache folder (``pooch.os_cache("cortexflow")``), the same
root as the embedding cache. Both files are written atomically, the JSON
last, so an interrupted training never leaves an entry that looks complete.

Every read is verified: ``prior.json`` carries the sha256 of the weights file
(``weights_sha256``) and of its own content (``meta_sha256``), its cache key
and config must be the ones asked for, and every weight must be finite. An
entry that fails any check (overwritten bytes, truncation, a NaN tensor,
scaled weights, weights swapped with another entry, an edited ``prior.json``)
is logged as a warning and trained again; it is never used. One lock per
entry (``<entry>/.lock``) makes a second process that wants the same prior
wait for the first, then read its result instead of training too. A cache
folder that is a file or not writable is refused before the training starts.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load as load_bytes, save

from cortexflow.data.fetch import get_cache_dir
from cortexflow.exceptions import CheckpointError, CortexFlowError, DataValidationError
from cortexflow.data.corpora import load_corpus
from cortexflow.data.guard import DEFAULT_THRESHOLD, drop_near_duplicates
from cortexflow.models.prior import DEFAULT_IMAGE_SHAPE, ImagePrior, PriorConfig
from cortexflow.training.loop import EpochSteps, run_epochs
from cortexflow.utils.io import (
    atomic_write_bytes,
    atomic_write_json,
    check_writable_dir,
    file_lock,
    sha256_bytes,
    sha256_json,
)

__all__ = [
    "FittedPrior",
    "get_prior",
    "train_prior",
    "fine_tune_prior",
    "cached_prior",
    "list_cached_priors",
    "prior_cache_dir",
    "prior_cache_key",
    "CACHE_FORMAT",
    "TRAINING_COUNTER",
]

logger = logging.getLogger(__name__)

CACHE_FORMAT = 2
_WEIGHTS, _META, _LOCK = "weights.safetensors", "prior.json", ".lock"
#: Number of prior trainings this process has run (tests check that a cache hit adds none).
TRAINING_COUNTER = {"trainings": 0}


def prior_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """Root of the prior cache: ``<cache root>/priors`` (``cache_dir``, ``$CORTEXFLOW_CACHE``, user cache)."""
    return get_cache_dir(cache_dir) / "priors"


def prior_cache_key(corpus: str, corpus_checksum: str, config: PriorConfig, threshold: float, dropped: np.ndarray) -> str:
    """sha256 naming a prior: corpus + its checksum + config (the target image shape included) + guard
    threshold + dropped indices.

    The image shape is part of the key; at the default 28x28 grayscale it is left out of the hashed
    blob, so the keys of the priors cached before images of other shapes existed stay valid.
    """
    cfg = config.to_dict()
    shape = cfg.pop("image_shape")
    content = {
        "format": CACHE_FORMAT,
        "corpus": corpus,
        "corpus_checksum": corpus_checksum,
        "config": cfg,
        "threshold": float(threshold),
        "dropped": hashlib.sha256(np.asarray(dropped, dtype=np.int64).tobytes()).hexdigest(),
    }
    if tuple(shape) != DEFAULT_IMAGE_SHAPE:
        content["image_shape"] = list(shape)
    blob = json.dumps(content, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


class FittedPrior:
    """A trained, frozen image prior and what it was trained on.

    Attributes
    ----------
    model : ImagePrior
        In eval mode, parameters without gradients.
    config : PriorConfig
    info : dict
        ``corpus``, ``corpus_checksum``, ``n_images`` (trained on), ``n_dropped``
        (near-duplicates removed), ``threshold``, ``train_time_s``,
        ``recon_mse`` (on the training images), ``cache_key``, ``from_cache``.
    path : pathlib.Path or None
        Cache folder of the entry (None when not cached, e.g. after fine-tuning).
    """

    def __init__(self, model: ImagePrior, info: dict[str, Any], path: Path | None = None):
        self.model = model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.config = model.config
        self.info = info
        self.path = path

    @property
    def embed_dim(self) -> int:
        """Size of the embedding."""
        return int(self.config.embed_dim)

    @property
    def image_shape(self) -> tuple[int, ...]:
        """Shape of one image of this prior: ``(H, W)`` or ``(H, W, 3)``."""
        return tuple(self.config.image_shape)

    def check_image_shape(self, image_shape: tuple[int, ...], *, what: str = "this method") -> None:
        """Refuse images of another shape than the prior's (``DataValidationError`` naming both)."""
        shape = tuple(int(v) for v in image_shape)
        if len(shape) == 3 and shape[2] == 1:
            shape = shape[:2]
        if shape != self.image_shape:
            raise DataValidationError(
                f"{what}: the {self.info.get('corpus')!r} prior was built for images of shape {self.image_shape}, "
                f"the data set's are {shape}; resolve the prior for this data set's image shape "
                "(cortexflow.methods.build.resolve_prior with its stimuli)")

    def encode_images(self, images: np.ndarray, batch_size: int = 1024) -> np.ndarray:
        """Unit-norm embeddings (n, embed_dim) float32 of images (n, *image_shape) in [0, 1]."""
        x = _as_images(images, "images", self.image_shape)
        with torch.no_grad():
            out = [self.model.encode(torch.from_numpy(x[i : i + batch_size])) for i in range(0, len(x), batch_size)]
        return torch.cat(out).numpy() if out else np.zeros((0, self.embed_dim), np.float32)

    def decode_embeddings(self, embeddings: np.ndarray, batch_size: int = 1024) -> np.ndarray:
        """Images (n, *image_shape) float32 in [0, 1] from embeddings (n, embed_dim); each row is re-normalised."""
        z = np.asarray(embeddings, dtype=np.float32)
        if z.ndim != 2 or z.shape[1] != self.embed_dim:
            raise DataValidationError(f"embeddings have shape {z.shape}; expected (n, {self.embed_dim})")
        if not np.isfinite(z).all():
            rows = np.flatnonzero(~np.isfinite(z).all(axis=1))
            raise DataValidationError(
                f"embeddings to decode with the {self.info.get('corpus')!r} prior hold NaN or infinite values in "
                f"{len(rows)} of {len(z)} row(s) (first: row {int(rows[0])}); the predicted embeddings are not finite"
            )
        with torch.no_grad():
            out = [self.model.decode(torch.from_numpy(z[i : i + batch_size])) for i in range(0, len(z), batch_size)]
        return torch.cat(out).numpy() if out else np.zeros((0, *self.image_shape), np.float32)

    def reconstruct(self, images: np.ndarray) -> np.ndarray:
        """Encode then decode: the prior's version of each image."""
        return self.decode_embeddings(self.encode_images(images))

    def __repr__(self) -> str:
        return (f"FittedPrior(corpus={self.info.get('corpus')!r}, kind={self.config.kind!r}, "
                f"embed_dim={self.embed_dim}, n_images={self.info.get('n_images')}, n_dropped={self.info.get('n_dropped')})")


def _as_images(images, key: str, image_shape: tuple[int, ...] = DEFAULT_IMAGE_SHAPE) -> np.ndarray:
    x = np.asarray(images, dtype=np.float32)
    shape = tuple(image_shape)
    if len(shape) == 2 and x.ndim == 4 and x.shape[-1] == 1:
        x = x[..., 0]
    if x.ndim != len(shape) + 1 or x.shape[1:] != shape:
        raise DataValidationError(f"{key} has shape {x.shape}; this prior's images are (n, {', '.join(map(str, shape))})")
    if not np.isfinite(x).all():
        raise DataValidationError(f"{key} holds NaN or infinite values")
    return np.ascontiguousarray(x)


def _build_model(config: PriorConfig) -> ImagePrior:
    """The untrained model, its initial weights drawn from ``config.seed`` (global RNG restored after)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(config.seed))
        return ImagePrior(config)


def train_prior(
    images: np.ndarray,
    config: PriorConfig,
    *,
    weights: np.ndarray | None = None,
    model: ImagePrior | None = None,
    progress: bool | None = None,
    desc: str = "prior",
) -> tuple[ImagePrior, dict[str, Any]]:
    """Train an :class:`ImagePrior` on ``images`` with ``config``.

    Deterministic for a given ``config.seed`` and thread count: the initial
    weights, the batch order and the VAE's noise come from the seed, through
    a private generator.

    Parameters
    ----------
    images : ndarray (n, *config.image_shape) in [0, 1]
    config : PriorConfig
    weights : ndarray (n,), optional
        Sampling weight of each image (batches are drawn with replacement in
        proportion to them); uniform epochs without replacement when omitted.
    model : ImagePrior, optional
        Start from this model (fine-tuning) instead of a fresh one.
    progress : bool, optional
        Per-epoch progress bar.
    desc : str
        Label of the progress bar.

    Returns
    -------
    model : ImagePrior (eval mode)
    stats : dict with ``train_time_s``, ``recon_mse`` (pixel MSE on ``images``), ``final_loss``
    """
    x = torch.from_numpy(_as_images(images, "images", config.image_shape))
    n = len(x)
    if n == 0:
        raise DataValidationError("no image to train the prior on")
    gen = torch.Generator().manual_seed(int(config.seed))
    model = _build_model(config) if model is None else model
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = max(1, -(-n // config.batch_size))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=config.epochs * steps_per_epoch, eta_min=config.lr * 0.05)
    w = None if weights is None else torch.as_tensor(np.asarray(weights, dtype=np.float64))
    if w is not None and (w.shape != (n,) or not torch.isfinite(w).all() or (w < 0).any() or w.sum() <= 0):
        raise DataValidationError(f"weights must be {n} finite values >= 0 with a positive sum")
    t0 = time.perf_counter()
    (result,) = run_epochs(_PriorSteps(model, x, opt, sched, gen, w, config.batch_size), 1, config.epochs,
                           progress=progress, desc=desc)
    last = result.history[-1]["train_loss"] if result.history else float("nan")
    train_time = time.perf_counter() - t0
    model.eval()
    with torch.no_grad():
        recon = torch.cat([model(x[i : i + 1024]) for i in range(0, n, 1024)])
    stats = {"train_time_s": round(train_time, 3), "recon_mse": float(((recon - x) ** 2).mean()), "final_loss": last}
    logger.info("trained %s prior on %d images in %.1f s (recon MSE %.4f)", config.kind, n, train_time, stats["recon_mse"])
    return model, stats


class _PriorSteps(EpochSteps):
    """The epoch step of :func:`train_prior`: one pass of AdamW steps, the cosine schedule stepped after each.

    No validation: the loop runs every epoch. Batches of one image are skipped
    (BatchNorm needs two) unless the corpus has a single image.

    Parameters
    ----------
    model : ImagePrior
        In training mode.
    x : Tensor (n, *image_shape)
        The training images.
    opt, sched :
        The optimiser and its per-step learning-rate schedule.
    gen : torch.Generator
        The batch order (and the VAE's noise).
    w : Tensor (n,), optional
        Sampling weights: each epoch draws n images with replacement in proportion to them.
    batch_size : int
    """

    def __init__(self, model: ImagePrior, x: torch.Tensor, opt: torch.optim.Optimizer,
                 sched: torch.optim.lr_scheduler.LRScheduler, gen: torch.Generator, w: torch.Tensor | None,
                 batch_size: int):
        self.model, self.x, self.opt, self.sched, self.gen, self.w, self.batch_size = model, x, opt, sched, gen, w, batch_size

    def _order(self) -> torch.Tensor:
        n = len(self.x)
        if self.w is None:
            return torch.randperm(n, generator=self.gen)
        return torch.multinomial(self.w, n, replacement=True, generator=self.gen)

    def train_epoch(self, epoch: int) -> list[float]:
        """One epoch of mini-batches; the mean training loss over the images used."""
        order, n = self._order(), len(self.x)
        total, count = 0.0, 0
        for i in range(0, n, self.batch_size):
            idx = order[i : i + self.batch_size]
            if len(idx) < 2 and n >= 2:  # BatchNorm needs two images
                continue
            loss, _ = self.model.loss(self.x[idx], self.gen)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            self.sched.step()
            total, count = total + float(loss.detach()) * len(idx), count + len(idx)
        return [total / max(count, 1)]

    def lr(self, row: int) -> float:
        return self.opt.param_groups[0]["lr"]


def _meta_hash(meta: dict) -> str:
    return sha256_json({k: v for k, v in meta.items() if k != "meta_sha256"})


def _save(path: Path, model: ImagePrior, info: dict) -> None:
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    blob = save(state)
    atomic_write_bytes(path / _WEIGHTS, blob)
    meta = {"format": CACHE_FORMAT, "config": model.config.to_dict(), "info": info, "weights_sha256": sha256_bytes(blob)}
    meta["meta_sha256"] = _meta_hash(meta)
    atomic_write_json(path / _META, meta)


def _read_meta(meta_path: Path) -> dict:
    """The verified content of a ``prior.json`` (ValueError when it is not intact)."""
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    if not isinstance(meta, dict):
        raise ValueError("prior.json is not a JSON object")
    if meta.get("format") != CACHE_FORMAT:
        raise ValueError(f"cache format {meta.get('format')!r}, expected {CACHE_FORMAT}")
    if meta.get("meta_sha256") != _meta_hash(meta):
        raise ValueError("prior.json does not match its sha256 (edited or damaged)")
    if not isinstance(meta.get("info"), dict) or not isinstance(meta.get("config"), dict):
        raise ValueError("prior.json lacks its config or info")
    return meta


def _load(path: Path, key: str, config: PriorConfig | None = None) -> FittedPrior | None:
    """The verified entry at ``path``, or None (missing; a damaged entry is logged as a warning)."""
    meta_path, weights_path = path / _META, path / _WEIGHTS
    if not meta_path.exists() and not weights_path.exists():
        return None
    try:
        if not (meta_path.is_file() and weights_path.is_file()):
            raise ValueError("incomplete entry (weights.safetensors or prior.json missing)")
        meta = _read_meta(meta_path)
        if meta["info"].get("cache_key") != key:
            raise ValueError("entry belongs to another cache key (moved or swapped)")
        stored = PriorConfig.from_dict(meta["config"])
        if config is not None and stored.to_dict() != config.to_dict():
            raise ValueError("entry's config is not the one asked for")
        blob = weights_path.read_bytes()
        if sha256_bytes(blob) != meta.get("weights_sha256"):
            raise ValueError("weights.safetensors does not match the sha256 recorded in prior.json")
        state = load_bytes(blob)
        bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
        if bad:
            raise ValueError(f"tensor {bad[0]!r} holds NaN or infinite values")
        model = _build_model(stored)  # as on a miss: the global random stream is left as it was
        model.load_state_dict(state, strict=True)
    except Exception as exc:  # noqa: BLE001 - a damaged cache entry of any kind is rebuilt, never used
        logger.warning("prior cache entry %s is damaged or unreadable (%s: %s); ignoring it and training again",
                       path, type(exc).__name__, str(exc)[:200])
        return None
    info = dict(meta["info"], from_cache=True)
    return FittedPrior(model, info, path)


def _prepare(corpus, exclude, config, data_dir, cache_dir, threshold, progress):
    """Load and guard the corpus; return (corpus, kept images, dropped indices, cache key, cache folder)."""
    data = load_corpus(corpus, data_dir, progress=progress, cache_dir=cache_dir, image_shape=config.image_shape)
    if exclude is None:
        images, dropped = data.images, np.zeros(0, np.int64)
    else:
        images, dropped = drop_near_duplicates(data.images, exclude, threshold=threshold)
        logger.info("prior %s: %d near-duplicate(s) of the %d given stimuli dropped", corpus, len(dropped), len(exclude))
    if config.max_images is not None:
        images = images[: int(config.max_images)]
    key = prior_cache_key(corpus, data.checksum, config, threshold, dropped)
    return data, images, dropped, key, prior_cache_dir(cache_dir) / corpus / key[:24]


def cached_prior(
    corpus: str,
    *,
    exclude: np.ndarray | None = None,
    config: PriorConfig | None = None,
    data_dir: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    threshold: float = DEFAULT_THRESHOLD,
) -> FittedPrior | None:
    """The cached prior that :func:`get_prior` would return with these arguments, or None (never trains)."""
    config = config or PriorConfig()
    *_, key, path = _prepare(corpus, exclude, config, data_dir, cache_dir, threshold, False)
    return _load(path, key, config)


def list_cached_priors(corpus: str, cache_dir: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """Summaries (config, info, path) of every complete cache entry of ``corpus``, newest first."""
    root = prior_cache_dir(cache_dir) / corpus
    out = []
    for meta in root.glob(f"*/{_META}") if root.is_dir() else []:
        try:
            d = _read_meta(meta)
            if (meta.parent / _WEIGHTS).is_file():
                out.append({"config": PriorConfig.from_dict(d["config"]).to_dict(), "info": d["info"],
                            "path": str(meta.parent), "mtime": meta.stat().st_mtime})
        except (OSError, ValueError, TypeError, KeyError, CortexFlowError) as exc:
            logger.warning("skipping damaged prior cache entry %s (%s)", meta.parent, exc)
    return sorted(out, key=lambda e: -e["mtime"])


def get_prior(
    corpus: str,
    *,
    exclude: np.ndarray | None = None,
    config: PriorConfig | None = None,
    data_dir: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    progress: bool | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    use_cache: bool = True,
) -> FittedPrior:
    """The image prior of ``corpus``, trained on its guarded images (from the cache when possible).

    Parameters
    ----------
    corpus : str
        A registered corpus (:func:`cortexflow.priors.list_corpora`).
    exclude : ndarray (m, *config.image_shape), optional
        Stimuli the prior will be evaluated with (a data set's training *and*
        test stimuli): corpus images within pixel MSE ``threshold`` of any of
        them are dropped before training (both at ``config.image_shape``).
    config : PriorConfig, optional
        Architecture and training settings; defaults to ``PriorConfig()``.
        Its ``image_shape`` (the data set's) is the shape the corpus is
        resized and converted to at use (:func:`cortexflow.data.corpora.load_corpus`)
        and the shape of the network; it is part of the cache key.
    data_dir : path-like, optional
        Data folder of file corpora.
    cache_dir : path-like, optional
        Cache root (default ``$CORTEXFLOW_CACHE``, else the user cache folder).
    progress : bool, optional
        Progress bar of the training.
    threshold : float
        Near-duplicate threshold (see :mod:`cortexflow.data.guard`).
    use_cache : bool
        Read and write the cache (``False``: always train, write nothing).

    Returns
    -------
    FittedPrior
    """
    config = config or PriorConfig()
    if not isinstance(config, PriorConfig):
        raise CortexFlowError(f"config must be a PriorConfig; got {type(config).__name__}")
    if use_cache:
        _check_cache_root(cache_dir)
    data, images, dropped, key, path = _prepare(corpus, exclude, config, data_dir, cache_dir, threshold, progress)
    if not use_cache:
        model, info = _train(corpus, data, images, dropped, threshold, key, config, progress)
        return FittedPrior(model, dict(info, from_cache=False), None)
    hit = _load(path, key, config)
    if hit is not None:
        logger.debug("prior cache hit %s", path)
        return hit
    check_writable_dir(path, what="prior cache folder")  # before the training, not after it
    with file_lock(path / _LOCK, what="prior cache entry"):
        hit = _load(path, key, config)  # another process may have trained it while this one waited
        if hit is not None:
            logger.info("prior %s was trained by another process meanwhile; read from the cache", corpus)
            return hit
        model, info = _train(corpus, data, images, dropped, threshold, key, config, progress)
        try:
            _save(path, model, info)
        except OSError as exc:  # e.g. the disk filled up during the training: the prior is still good
            logger.warning("could not write prior cache entry %s (%s); the trained prior is used without caching it",
                           path, exc.strerror or exc)
            return FittedPrior(model, dict(info, from_cache=False), None)
    return FittedPrior(model, dict(info, from_cache=False), path)


def _check_cache_root(cache_dir) -> None:
    """Refuse a cache root (or its ``priors`` folder) that is a file, before any work."""
    root = get_cache_dir(cache_dir)
    for p in (root, root / "priors"):
        if p.exists() and not p.is_dir():
            raise CortexFlowError(f"cache folder {p} exists and is not a folder; pass --cache-dir or set "
                                  "$CORTEXFLOW_CACHE to a folder")


def _train(corpus, data, images, dropped, threshold, key, config, progress) -> tuple[ImagePrior, dict[str, Any]]:
    model, stats = train_prior(images, config, progress=progress, desc=f"prior {corpus}")
    TRAINING_COUNTER["trainings"] += 1
    info = {
        "corpus": corpus,
        "corpus_checksum": data.checksum,
        "n_images": int(len(images)),
        "n_dropped": int(len(dropped)),
        "dropped_indices": [int(i) for i in dropped[:1000]],
        "threshold": float(threshold),
        "cache_key": key,
        "torch_threads": torch.get_num_threads(),
        **stats,
    }
    return model, info


def fine_tune_prior(
    prior: FittedPrior,
    images: np.ndarray,
    *,
    epochs: int = 30,
    lr: float = 3e-4,
    seed: int = 0,
    batch_size: int = 32,
    progress: bool | None = None,
) -> FittedPrior:
    """A copy of ``prior`` fine-tuned on ``images`` (e.g. a data set's training stimuli); not cached.

    Raises
    ------
    CheckpointError
        ``prior`` has no model.
    """
    if not isinstance(prior, FittedPrior):
        raise CheckpointError(f"prior must be a FittedPrior; got {type(prior).__name__}")
    cfg = prior.config.replace(epochs=int(epochs), lr=float(lr), seed=int(seed), batch_size=int(batch_size))
    model = ImagePrior(cfg)
    model.load_state_dict(prior.model.state_dict())
    for p in model.parameters():
        p.requires_grad_(True)
    model, stats = train_prior(images, cfg, model=model, progress=progress, desc="fine-tune prior")
    info = dict(prior.info, fine_tuned={"n_images": int(len(images)), "epochs": int(epochs), "lr": float(lr), **stats},
                from_cache=False)
    return FittedPrior(model, info, None)
