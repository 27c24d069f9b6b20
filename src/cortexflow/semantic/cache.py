"""On-disk cache of stimulus embeddings.

An entry holds every layer an encoder offers for one array of images, so a
later request for any layer is a hit. Its path is

``<cache root>/embeddings/<encoder cache id>/<sha256 of the images>.npz``

where the encoder cache id names the encoder *and* its preprocessing version,
and the checksum is taken over the images' float32 bytes and shape: change one
pixel, the encoder, or the preprocessing, and the entry is recomputed. The cache
root is the ``cache_dir`` argument, else ``$CORTEXFLOW_CACHE``, else the user's
cache folder. Entries are written atomically (temporary file, then rename), so
an interrupted run or two runs at once never leave half an entry. Each entry
stores the sha256 of every layer's array and the checksum of the images it was
computed from; both are checked on every read, with the arrays' shapes and
finiteness. An entry that fails (unreadable, truncated, edited, another entry's
file) is logged as a warning, recomputed and replaced. One lock per entry
(``<entry>.lock``) makes a second process wait for the first one's result.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
from pathlib import Path
from typing import Sequence

import numpy as np

from cortexflow.data.fetch import CACHE_ENV, get_cache_dir
from cortexflow.exceptions import CortexFlowError
from cortexflow.semantic.encoders import ImageEncoder, as_image_batch, load_image_encoder
from cortexflow.utils.io import atomic_write_with, file_lock, sha256_bytes

__all__ = ["CACHE_ENV", "get_cache_dir", "images_checksum", "cache_path", "embed_images", "CACHE_FORMAT"]

logger = logging.getLogger(__name__)

CACHE_FORMAT = 2


def images_checksum(images) -> str:
    """sha256 of an image array as float32 (n, H, W), shape included."""
    a = np.ascontiguousarray(as_image_batch(images), dtype=np.float32)
    h = hashlib.sha256()
    h.update(json.dumps(list(a.shape)).encode())
    h.update(a.tobytes())
    return h.hexdigest()


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", s).strip("_")[:120] or "encoder"


def cache_path(encoder: ImageEncoder, checksum: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """Path of the entry for ``encoder`` and an image-array checksum."""
    return get_cache_dir(cache_dir) / "embeddings" / _slug(encoder.cache_id) / f"{checksum[:40]}.npz"


def _array_sha256(a: np.ndarray) -> str:
    a = np.ascontiguousarray(a)
    return sha256_bytes(json.dumps([a.dtype.str, list(a.shape)]).encode() + a.tobytes())


def _read(path: Path, layers: Sequence[str], n: int, checksum: str | None = None) -> dict[str, np.ndarray] | None:
    """The verified layers of an entry, or None (a damaged entry is logged as a warning)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["__meta__"]))
            if not isinstance(meta, dict) or meta.get("format") != CACHE_FORMAT:
                return None  # an entry of another version: recomputed quietly
            if meta.get("n") != n or (checksum is not None and meta.get("checksum") != checksum):
                raise ValueError("the entry was computed from other images (moved or swapped)")
            if not all(ly in z.files for ly in layers):
                return None
            out = {}
            for ly in layers:
                a = z[ly]
                if a.ndim != 2 or len(a) != n:
                    raise ValueError(f"layer {ly!r} has shape {a.shape}; expected ({n}, dim)")
                if _array_sha256(a) != meta.get("sha256", {}).get(ly):
                    raise ValueError(f"layer {ly!r} does not match its stored sha256 (edited or damaged)")
                if not np.isfinite(a).all():
                    raise ValueError(f"layer {ly!r} holds NaN or infinite values")
                out[ly] = a.astype(np.float32)
            return out
    except Exception as exc:  # noqa: BLE001 - a damaged cache entry of any kind is recomputed, never used
        logger.warning("embedding cache entry %s is damaged or unreadable (%s: %s); recomputing",
                       path, type(exc).__name__, str(exc)[:200])
        return None


def _encode_unique(enc: ImageEncoder, a: np.ndarray) -> dict[str, np.ndarray]:
    """Encode each distinct image once (miyawaki shows 20 images in 119 rows) and scatter back."""
    flat = a.reshape(len(a), -1)
    uniq, first, inverse = np.unique(flat, axis=0, return_index=True, return_inverse=True)
    if len(uniq) == len(a):
        return enc.encode_layers(a, list(enc.layers))
    order = np.sort(first)  # encode in first-appearance order (deterministic batches)
    emb = enc.encode_layers(a[order], list(enc.layers))
    pos = np.empty(len(a), dtype=np.int64)
    pos[order] = np.arange(len(order))
    rows = pos[first[inverse.reshape(-1)]]
    return {ly: e[rows] for ly, e in emb.items()}


def embed_images(
    images,
    encoder: str | ImageEncoder = "efficientnet-lite0",
    *,
    layers: Sequence[str] | None = None,
    cache_dir: str | os.PathLike | None = None,
    use_cache: bool = True,
) -> dict[str, np.ndarray]:
    """Embed images with ``encoder``, reading and writing the on-disk cache.

    Parameters
    ----------
    images : array-like, shape (n, H, W)
        Values in [0, 1].
    encoder : str or ImageEncoder
    layers : sequence of str, optional
        Layers to return (default ``["final"]``). On a miss, every layer of
        the encoder is computed and stored.
    cache_dir : path-like, optional
        Cache root (see :func:`get_cache_dir`).
    use_cache : bool
        False computes without reading or writing the cache.

    Returns
    -------
    dict of str to ndarray of float32, shape (n, dim_of_layer)
    """
    enc = load_image_encoder(encoder)
    a = as_image_batch(images)
    layers = enc.check_layers(layers or ["final"])
    if not use_cache:
        return enc.encode_layers(a, layers)
    checksum = images_checksum(a)
    path = cache_path(enc, checksum, cache_dir)
    if path.is_file():
        hit = _read(path, layers, len(a), checksum)
        if hit is not None:
            logger.debug("embedding cache hit %s", path)
            return hit
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(file_lock(path.with_suffix(".lock"), what="embedding cache entry"))
        except CortexFlowError as exc:  # a read-only cache must not stop the computation
            logger.warning("%s; computing without the cache", exc)
            return enc.encode_layers(a, layers)
        if path.is_file():  # another process may have written it while this one waited for the lock
            hit = _read(path, layers, len(a), checksum)
            if hit is not None:
                return hit
        every = _encode_unique(enc, a)
        meta = {"format": CACHE_FORMAT, "encoder": enc.name, "preprocessing": enc.preprocessing,
                "checksum": checksum, "n": len(a), "layers": list(every),
                "sha256": {ly: _array_sha256(e) for ly, e in every.items()}}

        def write(fh):
            np.savez(fh, __meta__=np.array(json.dumps(meta)), **every)

        try:
            atomic_write_with(path, write)
            logger.info("cached %d embeddings of %s at %s", len(a), enc.name, path)
        except OSError as exc:  # a read-only cache must not stop the computation
            logger.warning("could not write embedding cache %s (%s)", path, exc)
    return {ly: every[ly] for ly in layers}
