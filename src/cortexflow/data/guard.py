"""Near-duplicate guard: a prior never learns a copy of an evaluation stimulus.

Before a prior is trained for a data set, every corpus image whose pixel MSE
to *any* stimulus of that data set (training and test) is at most
``threshold`` is dropped. The caller logs the count, and the prior stores it
(``FittedPrior.info["n_dropped"]``) so that the benchmark report shows it.

Choice of :data:`DEFAULT_THRESHOLD` = 0.01 (images in [0, 1], MSE over 784 pixels):

* a copy scores ~0, and a copy with Gaussian pixel noise of sd 0.05 about
  0.0025, so both are dropped with a wide margin;
* the closest *different* handwritten digit in mnist-t10k to any of the 100
  vangerven stimuli scores 0.0108 (median 0.0255, see the shared data
  folder's README), so no genuine digit is dropped on vangerven;
* on miyawaki's rendering one 10x10 cell covers 4, 6 or 9 pixels (MSE
  0.0051, 0.0077 or 0.0115): a pattern that differs from a stimulus only in
  one corner or edge cell is treated as a near-copy and dropped.

Any image shape: the guard compares images of one shape, (n, H, W) or
(n, H, W, 3), the MSE taken over every pixel value (and channel). Corpus
images of another shape are first converted to the stimuli's shape
(:func:`cortexflow.data.corpora.convert_images`), so both sides are at the
data set's shape; the builder already hands it corpus images converted that way.
"""

from __future__ import annotations

import logging

import numpy as np

from cortexflow.data.corpora import convert_images
from cortexflow.data.loading import load_dataset
from cortexflow.exceptions import DataValidationError

__all__ = ["DEFAULT_THRESHOLD", "pairwise_mse", "nearest_mse", "drop_near_duplicates", "dataset_stimuli",
           "require_distinct_stimuli"]

logger = logging.getLogger(__name__)

DEFAULT_THRESHOLD = 0.01


def _flat(images, key: str) -> np.ndarray:
    a = np.asarray(images, dtype=np.float64)
    if a.ndim == 2 and a.shape[1] >= 1:
        return a
    if a.ndim not in (3, 4) or (a.ndim == 4 and a.shape[3] not in (1, 3)):
        raise DataValidationError(f"{key} has shape {a.shape}; expected images (n, H, W) or (n, H, W, 3), "
                                  "or flat rows (n, P)")
    if not np.isfinite(a).all():
        raise DataValidationError(f"{key} holds NaN or infinite values")
    return a.reshape(len(a), int(np.prod(a.shape[1:])))


def _same_shape(a, b, names: tuple[str, str]) -> None:
    sa, sb = np.shape(a)[1:], np.shape(b)[1:]
    if len(sa) == 1 or len(sb) == 1:  # flat rows: only the number of values must agree
        sa, sb = (int(np.prod(sa)),), (int(np.prod(sb)),)
    if sa != sb:
        raise DataValidationError(f"{names[0]} have images of shape {sa} and {names[1]} of shape {sb}; the guard "
                                  "compares images of one shape (convert the corpus to the data set's shape first)")


def pairwise_mse(a, b) -> np.ndarray:
    """Pixel MSE between every image of ``a`` (n, ...) and of ``b`` (m, ...) of one shape: an (n, m) array."""
    _same_shape(a, b, ("a", "b"))
    A, B = _flat(a, "a"), _flat(b, "b")
    d = (A**2).sum(1)[:, None] + (B**2).sum(1)[None, :] - 2.0 * A @ B.T
    return np.maximum(d, 0.0) / A.shape[1]


def nearest_mse(corpus_images, stimuli, *, chunk: int = 4096) -> np.ndarray:
    """For each corpus image, the pixel MSE to its nearest stimulus (computed in chunks)."""
    _same_shape(corpus_images, stimuli, ("corpus_images", "stimuli"))
    C, S = _flat(corpus_images, "corpus_images"), _flat(stimuli, "stimuli")
    if len(S) == 0:
        return np.full(len(C), np.inf)
    return np.concatenate([pairwise_mse(C[i : i + chunk], S).min(axis=1) for i in range(0, len(C), chunk)])


def drop_near_duplicates(
    corpus_images: np.ndarray,
    stimuli: np.ndarray,
    *,
    threshold: float = DEFAULT_THRESHOLD,
) -> tuple[np.ndarray, np.ndarray]:
    """Remove every corpus image within pixel MSE ``threshold`` of any stimulus.

    Parameters
    ----------
    corpus_images : ndarray (n, H', W'[, 3]) in [0, 1]
        Converted to the stimuli's image shape first when it differs.
    stimuli : ndarray (m, H, W[, 3]) in [0, 1]
        All stimuli of the data set the prior will be used on: training *and* test.
    threshold : float
        Largest MSE counted as a near-duplicate (see :data:`DEFAULT_THRESHOLD`).

    Returns
    -------
    kept_images : ndarray (n - k, H, W[, 3]) float32, at the stimuli's shape
    dropped_indices : ndarray of int64 (k,), sorted indices into ``corpus_images``
    """
    if not np.isfinite(threshold) or threshold < 0:
        raise DataValidationError(f"threshold={threshold!r} must be a finite number >= 0")
    require_distinct_stimuli(stimuli)
    images = np.asarray(corpus_images, dtype=np.float32)
    stim = np.asarray(stimuli)
    if stim.ndim == 4 and stim.shape[3] == 1:
        stim = stim[..., 0]
    if stim.ndim in (3, 4) and images.shape[1:] != stim.shape[1:]:
        _flat(images, "corpus_images"), _flat(stim, "stimuli")  # images of a kind that can be converted
        if images.ndim not in (3, 4):
            raise DataValidationError(f"corpus_images has shape {images.shape}; expected images (n, H, W) or "
                                      f"(n, H, W, 3) to compare with stimuli of shape {stim.shape[1:]}")
        images = convert_images(images, stim.shape[1:], source="corpus images")
    near = nearest_mse(images, stim)
    dropped = np.flatnonzero(near <= threshold).astype(np.int64)
    if len(dropped):
        logger.warning(
            "near-duplicate guard: dropped %d of %d corpus images within pixel MSE %.4g of a stimulus",
            len(dropped), len(images), threshold,
        )
    else:
        logger.info("near-duplicate guard: no corpus image within pixel MSE %.4g of a stimulus", threshold)
    keep = np.ones(len(images), dtype=bool)
    keep[dropped] = False
    return images[keep], dropped


def require_distinct_stimuli(stimuli, *, what: str = "stimuli") -> None:
    """Refuse stimuli (two or more) that are all one and the same image.

    An image prior is guarded against, fitted on and cross-validated over the
    stimuli of a data set; when every one of them is the same image there is
    nothing to learn and the inner cross-validation has no training rows (it
    would fail deep inside scikit-learn with "Found array with 0 sample(s)").

    Raises
    ------
    DataValidationError
    """
    a = np.asarray(stimuli)
    if a.ndim < 2 or len(a) < 2:
        return
    flat = a.reshape(len(a), -1)
    if np.array_equal(flat.min(axis=0), flat.max(axis=0)):
        raise DataValidationError(
            f"all {len(a)} {what} are one and the same image: an image prior cannot be fitted or cross-validated "
            "on them (it needs at least 2 distinct stimuli); check the stimulus arrays of the data set"
        )


def dataset_stimuli(dataset_name: str, data_dir=None) -> np.ndarray:
    """All stimuli (training then test) of a registered data set, (n, H, W[, 3]) float32 in [0, 1]."""
    ds = load_dataset(dataset_name, data_dir, allow_degenerate=True)
    return np.concatenate([np.asarray(ds.Y_train, np.float32), np.asarray(ds.Y_test, np.float32)])
