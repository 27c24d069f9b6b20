"""The one layer that builds estimators, for the CLI, the benchmark and the Python helpers.

:func:`make_estimator` turns a method name, a seed, the data set's facts and
the user's options into an unfitted estimator that needs no I/O of its own:

* options are checked against the method's typed schema;
* a method that needs the guard set (``guard`` in its ``needs``) is handed
  **every stimulus that will be scored** (training and test rows of the data
  set), so an image prior never holds a near-copy of a test image;
* a method that needs a prior (``prior``) is handed the fitted prior
  (:func:`resolve_prior`: trained or read from the cache, on its corpus minus
  the near-duplicates of the guard set), together with the guarded corpus
  images its decoding draws neighbours from;
* the data folder, cache folder and progress setting are passed the same way
  on every path.

In Python, pass the guard set yourself::

    from cortexflow.methods.build import make_estimator, scored_stimuli
    est = make_estimator("ridge-prior", 0, ds.name, len(ds.X_train), stimuli=scored_stimuli(ds))

or build the estimator directly and hand it a prior from :func:`resolve_prior`.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from cortexflow.exceptions import ConfigError, DataValidationError
from cortexflow.registry.methods import check_options, get_method
from cortexflow.data.corpora import load_corpus
from cortexflow.data.guard import drop_near_duplicates, nearest_mse
from cortexflow.priors.ridge_prior import requested_prior
from cortexflow.training.prior import FittedPrior, get_prior

__all__ = ["make_estimator", "resolve_prior", "with_prior", "scored_stimuli", "check_scored_stimuli"]

logger = logging.getLogger(__name__)

#: decodings that draw from the guarded corpus images
_CORPUS_DECODINGS = ("corpus-knn", "hybrid")


def scored_stimuli(ds: Any) -> np.ndarray:
    """Every stimulus of a data set that a benchmark, ``train`` or ``evaluate`` may score: training then test rows.

    float32 in [0, 1]; this is the guard set handed to prior-backed methods.
    """
    parts = [np.asarray(ds.Y_train, dtype=np.float32)]
    if getattr(ds, "Y_test", None) is not None and len(ds.Y_test):
        parts.append(np.asarray(ds.Y_test, dtype=np.float32))
    return np.clip(np.concatenate(parts, axis=0), 0.0, 1.0)


def resolve_prior(est: Any, stimuli: np.ndarray, *, data_dir=None, cache_dir=None,
                  progress: bool | None = None) -> FittedPrior:
    """The fitted prior that a prior-backed estimator asks for, guarded against ``stimuli``.

    Parameters
    ----------
    est : estimator
        A prior-backed estimator (``prior`` a corpus name or None, ``prior_config``, ``threshold``...).
    stimuli : ndarray (m, H, W) or (m, H, W, 3)
        Every stimulus that will be scored (the guard set). Its image shape
        ``stimuli.shape[1:]`` is the data set's: the prior is built for it (its
        layout and cache key follow it) and the corpus is converted to it at use.
    data_dir, cache_dir : path-like, optional
        Data folder of file corpora and the prior cache root.
    progress : bool, optional
        Progress bar of a prior training.

    Returns
    -------
    FittedPrior
        With ``corpus_images``: the corpus minus the near-duplicates of ``stimuli``
        (set when the estimator's decoding uses corpus neighbours, else None).
        A fitted prior handed in as ``est.prior`` is returned itself, its
        image shape checked and its corpus images added when the decoding
        needs them and it has none.
    """
    shape = tuple(np.shape(stimuli)[1:])
    threshold = float(getattr(est, "threshold"))
    needs_corpus = getattr(est, "decoding", None) in _CORPUS_DECODINGS and getattr(est, "ridge_skip", True)
    if isinstance(getattr(est, "prior", None), FittedPrior):  # handed in: only the corpus images may be missing
        fitted = est.prior
        fitted.check_image_shape(shape, what=f"{type(est).__name__} prior")
        if not needs_corpus or getattr(fitted, "corpus_images", None) is not None:
            return fitted
        corpus = str(fitted.info["corpus"])
    else:
        corpus, cfg = requested_prior(est)
        fitted = get_prior(corpus, exclude=stimuli, config=cfg.replace(image_shape=shape), data_dir=data_dir,
                           cache_dir=cache_dir, progress=progress, threshold=threshold)
    images = None
    if needs_corpus:
        corpus_images = load_corpus(corpus, data_dir, cache_dir=cache_dir, image_shape=shape).images
        images, _ = drop_near_duplicates(corpus_images, stimuli, threshold=threshold)
    fitted.corpus_images = images
    return fitted


def with_prior(est: Any, stimuli: np.ndarray | None = None, *, data_dir=None, cache_dir=None,
               progress: bool | None = None) -> Any:
    """``est`` (a prior-backed estimator built by hand) with its prior resolved and set, ready to ``fit``.

    Estimators do no I/O: ``RidgePriorDecoder(prior="mnist-t10k")`` names a
    corpus, and this helper trains that prior (or reads it from the cache),
    guarded against ``stimuli``, as :func:`make_estimator` does.

    Parameters
    ----------
    est : estimator
        ``prior`` a corpus name, None (the default corpus of ``est.dataset``) or
        already a fitted prior (then only its image shape is checked).
    stimuli : ndarray (m, H, W) or (m, H, W, 3), optional
        Every stimulus that will be scored (:func:`scored_stimuli`); default
        ``est.stimuli``. Its image shape is the prior's.
    data_dir, cache_dir : path-like, optional
        Default: the estimator's own ``data_dir`` / ``cache_dir``.
    progress : bool, optional
        Progress bar of a prior training.

    Returns
    -------
    est, with ``prior`` set to a :class:`~cortexflow.training.prior.FittedPrior`.

    Raises
    ------
    ConfigError
        A setting of ``est`` that its own checks refuse (checked first, before
        any I/O), no ``stimuli``, or a corpus that does not exist or is not
        the default of any registered data set.
    """
    check = getattr(est, "_check_params", None)
    if callable(check):  # a bad setting is refused before any training, download or cache read
        check()
    stimuli = getattr(est, "stimuli", None) if stimuli is None else stimuli
    if stimuli is None:
        raise ConfigError(f"with_prior({type(est).__name__}): pass stimuli= (every stimulus that will be scored, "
                          "training and test rows: scored_stimuli(ds)); the prior is guarded against them")
    stimuli = np.asarray(stimuli, dtype=np.float32)
    prior = resolve_prior(est, stimuli, data_dir=data_dir if data_dir is not None else getattr(est, "data_dir", None),
                          cache_dir=cache_dir if cache_dir is not None else getattr(est, "cache_dir", None),
                          progress=progress if progress is not None else getattr(est, "progress", None))
    return est.set_params(prior=prior)


def make_estimator(name: str, seed: int, dataset_name: str, n_train: int, *, fast: bool = False,
                   stimuli: np.ndarray | None = None, data_dir=None, cache_dir=None, progress: bool | None = None,
                   resolve: bool = True, **options: Any) -> Any:
    """The unfitted estimator of method ``name``, with everything it needs handed to it.

    Parameters
    ----------
    name : str
        A registered method (``cortexflow methods list``).
    seed : int
        Its random seed.
    dataset_name : str
        Name of the data set (presets and default priors are chosen by it).
    n_train : int
        Number of training rows (size-based presets).
    fast : bool
        Tiny settings (tests, smoke runs; no results).
    stimuli : ndarray, optional
        Every stimulus that will be scored (:func:`scored_stimuli`): required by
        the methods that need the guard set.
    data_dir, cache_dir : path-like, optional
        Data folder and cache root, passed to estimators that take them.
    progress : bool, optional
        Progress bars of long steps inside the estimator.
    resolve : bool
        Resolve a prior-backed method's prior now (default). ``False`` leaves
        ``prior`` as the corpus name; resolve it with :func:`with_prior`
        before ``fit`` (estimators do no I/O: ``fit`` refuses a prior by name).
    **options
        The method's options (checked against its typed schema).

    Raises
    ------
    ConfigError
        An unknown option, a value of the wrong type or range, or a method that
        needs the guard set called without ``stimuli``.
    """
    spec = get_method(name)
    check_options(name, options)
    if spec.needs_stimuli and stimuli is None:
        raise ConfigError(f"method {name!r} needs stimuli= (every stimulus that will be scored, training and test "
                          f"rows: cortexflow.methods.build.scored_stimuli(ds)) for its near-duplicate guard")
    kwargs = {"stimuli": np.asarray(stimuli, dtype=np.float32)} if spec.needs_stimuli else {}
    options = {**spec.defaults, **options}  # a variant's own defaults, under what the user set
    est = spec.factory(seed, dataset_name, n_train, fast=fast, **kwargs, **options)
    params = est.get_params(deep=False)
    runtime = {"data_dir": data_dir, "cache_dir": cache_dir, "progress": progress}
    est.set_params(**{k: v for k, v in runtime.items() if k in params and v is not None and k not in options})
    if resolve and "prior" in spec.needs:
        est.set_params(prior=resolve_prior(est, kwargs["stimuli"], data_dir=data_dir if data_dir is not None else
                                           params.get("data_dir"),
                                           cache_dir=params.get("cache_dir") if cache_dir is None else cache_dir,
                                           progress=progress))
    return est


def check_scored_stimuli(model: Any, stimuli: np.ndarray, *, source: str = "the data set") -> None:
    """Refuse to score ``stimuli`` with a prior-backed model whose kept corpus holds a near-duplicate of one.

    Raises
    ------
    DataValidationError
        Naming how many scored stimuli are near-copies of the model's corpus images.
    """
    from_model = getattr(model, "kept_corpus_images", None)
    images = from_model() if callable(from_model) else None
    if images is None or not len(images) or stimuli is None or not len(stimuli):
        return
    threshold = float(getattr(model, "threshold", 0.0))
    near = nearest_mse(np.asarray(stimuli, dtype=np.float32), np.asarray(images, dtype=np.float32))
    bad = np.flatnonzero(near <= threshold)
    if len(bad):
        raise DataValidationError(
            f"{len(bad)} of the {len(stimuli)} scored stimuli of {source} (rows {bad[:5].tolist()}"
            f"{'...' if len(bad) > 5 else ''}) are near-duplicates (pixel MSE <= {threshold:g}) of corpus images "
            f"this checkpoint keeps; its scores would be inflated. Retrain it on this data set (cortexflow train), "
            f"which guards the prior against every scored stimulus")
