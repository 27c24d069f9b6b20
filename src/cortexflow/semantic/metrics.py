"""Semantic reconstruction metrics in a pretrained encoder's feature space.

``semantic_two_way``
    Two-way identification (chance 0.5) computed on encoder features instead of
    pixels: reconstruction i wins against stimulus j when its features correlate
    more with stimulus i's than with stimulus j's
    (:func:`cortexflow.evaluation.metrics.two_way_identification` with
    ``features=``).
``semantic_cosine``
    Cosine similarity between the encoder embedding of each reconstruction and
    that of its stimulus, after subtracting the mean embedding of the
    **training** stimuli. Without centring, every pair of images scores close
    to 1 in a ReLU network's pooled features; centring on training statistics
    (never the test set's) makes 0 the level of "the average training image".

Both are per-image arrays, like the pixel metrics.
"""

from __future__ import annotations

import os

import numpy as np

from cortexflow.evaluation.metrics import two_way_identification
from cortexflow.semantic.cache import embed_images
from cortexflow.semantic.encoders import DEFAULT_ENCODER, ImageEncoder, as_image_batch, load_image_encoder

__all__ = ["SemanticMetrics", "semantic_two_way", "semantic_cosine", "centred_cosine", "SEMANTIC_METRIC_NAMES"]

SEMANTIC_METRIC_NAMES = ("semantic_two_way", "semantic_cosine")


def centred_cosine(a: np.ndarray, b: np.ndarray, center: np.ndarray | None = None) -> np.ndarray:
    """Row-wise cosine similarity of ``a - center`` and ``b - center`` (0 for a zero vector)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"embeddings have shapes {a.shape} and {b.shape}")
    if center is not None:
        a = a - center
        b = b - center
    na = np.linalg.norm(a, axis=1)
    nb = np.linalg.norm(b, axis=1)
    denom = na * nb
    with np.errstate(invalid="ignore", divide="ignore"):
        c = (a * b).sum(axis=1) / denom
    return np.where(denom > 0, c, 0.0)


class SemanticMetrics:
    """Semantic metrics for one encoder and one training set.

    Parameters
    ----------
    train_images : array-like, shape (n_train, H, W)
        Training stimuli; their mean embedding is the centre of
        ``semantic_cosine``. Never pass test images here.
    encoder : str or ImageEncoder
        Default ``"efficientnet-lite0"``.
    layer : str
        Encoder layer (default ``"final"``).
    cache_dir : path-like, optional
        Embedding cache root; stimuli (train and test) are cached,
        reconstructions are not.

    Examples
    --------
    >>> sm = SemanticMetrics(ds.Y_train)                     # doctest: +SKIP
    >>> sm(pred, ds.Y_test)["semantic_two_way"].mean()      # doctest: +SKIP
    """

    def __init__(self, train_images, encoder: str | ImageEncoder = DEFAULT_ENCODER, *, layer: str = "final",
                 cache_dir: str | os.PathLike | None = None):
        self.encoder = load_image_encoder(encoder)
        self.layer = self.encoder.check_layers([layer])[0]
        self.cache_dir = cache_dir
        train = embed_images(train_images, self.encoder, layers=[layer], cache_dir=cache_dir)[layer]
        self.center_ = train.mean(axis=0).astype(np.float64)

    def embed(self, images, *, cache: bool = False) -> np.ndarray:
        """Encoder embeddings of images (cached on disk when ``cache``)."""
        return embed_images(images, self.encoder, layers=[self.layer], cache_dir=self.cache_dir,
                            use_cache=cache)[self.layer]

    def __call__(self, pred, true) -> dict[str, np.ndarray]:
        """Per-image ``semantic_two_way`` and ``semantic_cosine`` of reconstructions ``pred`` of stimuli ``true``."""
        p = as_image_batch(pred, name="pred")
        t = as_image_batch(true, name="true")
        if p.shape != t.shape:
            raise ValueError(f"pred has shape {p.shape} but true has shape {t.shape}")
        ep = self.embed(p)
        et = self.embed(t, cache=True)
        fp, ft = ep - self.center_, et - self.center_
        # two_way_identification converts its inputs (new arrays), so match by content, not identity
        two_way = two_way_identification(true=t, pred=p, features=lambda a: fp if np.array_equal(a, p) else ft)
        return {"semantic_two_way": two_way, "semantic_cosine": centred_cosine(ep, et, self.center_)}


def semantic_two_way(pred, true, train_images, encoder: str | ImageEncoder = DEFAULT_ENCODER, **kw) -> np.ndarray:
    """Per-image two-way identification in the encoder's space (see :class:`SemanticMetrics`)."""
    return SemanticMetrics(train_images, encoder, **kw)(pred, true)["semantic_two_way"]


def semantic_cosine(pred, true, train_images, encoder: str | ImageEncoder = DEFAULT_ENCODER, **kw) -> np.ndarray:
    """Per-image centred cosine similarity in the encoder's space (see :class:`SemanticMetrics`)."""
    return SemanticMetrics(train_images, encoder, **kw)(pred, true)["semantic_cosine"]
