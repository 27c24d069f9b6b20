"""Class-conditioned decoding of ``ridge-prior``: a class code decoded from the signals.

A data set whose stimuli carry class labels (vangerven: 1 = a handwritten six,
2 = a nine) and a corpus whose images carry class labels (MNIST: digits 0..9)
are linked by an explicit **class map** (data-set label -> corpus label, e.g.
``{1: 6, 2: 9}``), never guessed. A multinomial logistic regression from the
z-scored training signals to the training labels (its penalty chosen by
inner folds of the training rows) gives class probabilities ``p_c`` for each
new signal; the decoder then draws its corpus neighbours per class among the
corpus images of class ``class_map[c]`` and weights them by ``p_c``, and may
pull the predicted embedding toward the probability-weighted class centroid
of the training embeddings.

Everything here is a pure function of arrays (no I/O), except
:func:`dataset_training_labels`, which the builder
(:func:`cortexflow.methods.build.make_estimator`) calls to hand an estimator
the labels of the data set's official training rows.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping, Sequence

import numpy as np
from sklearn.linear_model import LogisticRegression

from cortexflow.exceptions import ConfigError, DataValidationError

__all__ = [
    "CLASS_MAPS",
    "CLASS_DECODINGS",
    "C_GRID",
    "default_class_map",
    "check_class_map",
    "labels_of_stimuli",
    "fit_class_code",
    "class_probabilities",
    "oof_class_probabilities",
    "dataset_training_labels",
]

logger = logging.getLogger(__name__)

#: Class-decoding modes: ``"off"``; ``"knn"`` corpus neighbours per predicted class, weighted by its
#: probability; ``"knn+prior"`` the same, and the embedding pulled toward the class centroid.
CLASS_DECODINGS = ("off", "knn", "knn+prior")

#: Data-set label -> corpus label of each registered data set that has one (explicit, from the data
#: set's documentation: /work/shared/datasets/README.md, vangerven "labels 1 = six, 2 = nine").
CLASS_MAPS: dict[str, dict[int, int]] = {"vangerven": {1: 6, 2: 9}}

#: Candidate inverse penalties of the logistic regression (chosen by inner folds, log-loss).
C_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)


def default_class_map(dataset: str | None) -> dict[int, int] | None:
    """The registered class map of a data set (None when it has none)."""
    m = CLASS_MAPS.get(str(dataset)) if dataset is not None else None
    return dict(m) if m is not None else None


def check_class_map(class_map: Any) -> dict[int, int]:
    """``class_map`` as ``{int: int}`` (keys may be strings of integers, as read from a checkpoint or JSON).

    Raises
    ------
    ConfigError
        Not a non-empty mapping of integers to integers, or two data-set labels mapped to one corpus label.
    """
    if not isinstance(class_map, Mapping) or not class_map:
        raise ConfigError(f"class_map={class_map!r} must be a non-empty mapping of data-set labels to corpus "
                          f"labels, e.g. {{1: 6, 2: 9}} for vangerven")
    try:
        out = {int(k): int(v) for k, v in class_map.items()}
    except (TypeError, ValueError):
        raise ConfigError(f"class_map={class_map!r} must map integer labels to integer labels") from None
    if len(set(out.values())) != len(out):
        raise ConfigError(f"class_map={class_map!r} maps two data-set labels to the same corpus label")
    return out


def labels_of_stimuli(Y: np.ndarray, labeled_stimuli: Sequence[np.ndarray] | None) -> np.ndarray:
    """The label of each image of ``Y``, looked up (exact pixel match) in ``labeled_stimuli = (images, labels)``.

    Raises
    ------
    ConfigError
        No ``labeled_stimuli``.
    DataValidationError
        A row of ``Y`` not found, or found with two different labels.
    """
    if labeled_stimuli is None:
        raise ConfigError("class decoding needs the training labels: pass labels= to fit, or labeled_stimuli="
                          "(images, labels) (the builder hands the data set's official training labels; this "
                          "data set may have none: class_decoding='off')")
    images, labels = labeled_stimuli
    images = np.clip(np.asarray(images, dtype=np.float32), 0.0, 1.0).reshape(len(images), -1)
    labels = np.asarray(labels).ravel()
    if len(images) != len(labels):
        raise DataValidationError(f"labeled_stimuli has {len(images)} images and {len(labels)} labels")
    flat = np.clip(np.asarray(Y, dtype=np.float32), 0.0, 1.0).reshape(len(Y), -1)
    out = np.empty(len(flat), dtype=np.int64)
    index: dict[bytes, set] = {}
    for img, lab in zip(images, labels):
        index.setdefault(img.tobytes(), set()).add(int(lab))
    for i, row in enumerate(flat):
        found = index.get(row.tobytes())
        if not found:
            raise DataValidationError(f"training image {i} is not among the {len(images)} labeled stimuli; "
                                      f"pass labels= to fit")
        if len(found) > 1:
            raise DataValidationError(f"training image {i} has several labels {sorted(found)} in labeled_stimuli")
        out[i] = next(iter(found))
    return out


def fit_class_code(A: np.ndarray, labels: np.ndarray, folds: list[tuple[np.ndarray, np.ndarray]],
                   C: float | str = "auto") -> tuple[np.ndarray, np.ndarray, np.ndarray, float, dict]:
    """Logistic regression from z-scored signals ``A`` to ``labels``; ``C`` given or chosen by ``folds``.

    Returns
    -------
    classes : ndarray (k,)
        The labels, sorted.
    coef : ndarray (k, n_features)
    intercept : ndarray (k,)
        Softmax parameters (for two classes the binary model written as two
        rows, ``+w/2`` and ``-w/2``), so that :func:`class_probabilities` needs no scikit-learn.
    C : float
        The penalty used.
    cv_loss : dict
        Out-of-fold log-loss of each candidate (empty when ``C`` was given).
    """
    classes = np.unique(labels)
    if len(classes) == 1:  # one class in these rows: it is predicted with probability 1
        return classes, np.zeros((1, A.shape[1])), np.zeros(1), float("nan"), {}
    cv_loss: dict = {}
    if C == "auto":
        for c in C_GRID:
            P = _oof_proba(A, labels, classes, folds, c)
            cv_loss[c] = float(-np.mean(np.log(np.clip(P[np.arange(len(labels)),
                                                          np.searchsorted(classes, labels)], 1e-12, None))))
        C = min(cv_loss, key=cv_loss.get)
    else:
        C = float(C)
        if not np.isfinite(C) or C <= 0:
            raise ConfigError(f"class_C={C!r} must be 'auto' or a number > 0")
    coef, intercept = _fit_lr(A, labels, classes, C)
    return classes, coef, intercept, float(C), cv_loss


def _fit_lr(A, labels, classes, C) -> tuple[np.ndarray, np.ndarray]:
    lr = LogisticRegression(C=C, max_iter=2000).fit(A, labels)
    if len(classes) == 2:
        w, b = lr.coef_[0], lr.intercept_[0]
        return np.stack([-w / 2, w / 2]), np.array([-b / 2, b / 2])
    return lr.coef_.copy(), lr.intercept_.copy()


def _oof_proba(A, labels, classes, folds, C) -> np.ndarray:
    """Out-of-fold class probabilities over ``folds`` (a fold whose training rows hold one class predicts it)."""
    P = np.zeros((len(labels), len(classes)))
    for tr, te in folds:
        present = np.unique(labels[tr])
        if len(present) == 1:
            P[np.ix_(te, np.searchsorted(classes, present))] = 1.0
            continue
        coef, intercept = _fit_lr(A[tr], labels[tr], present, C)
        P[np.ix_(te, np.searchsorted(classes, present))] = class_probabilities(A[te], coef, intercept)
    return P


def oof_class_probabilities(A: np.ndarray, labels: np.ndarray, classes: np.ndarray,
                            folds: list[tuple[np.ndarray, np.ndarray]], C: float) -> np.ndarray:
    """Out-of-fold class probabilities (n, k) of the training rows with penalty ``C``."""
    if len(classes) == 1:
        return np.ones((len(labels), 1))
    return _oof_proba(A, labels, classes, folds, C)


def class_probabilities(A: np.ndarray, coef: np.ndarray, intercept: np.ndarray) -> np.ndarray:
    """Softmax class probabilities (n, k) of z-scored signals ``A``."""
    logits = np.asarray(A, dtype=np.float64) @ np.asarray(coef, dtype=np.float64).T + intercept
    logits -= logits.max(axis=1, keepdims=True)
    e = np.exp(logits)
    return e / e.sum(axis=1, keepdims=True)


def dataset_training_labels(dataset: str, data_dir=None) -> tuple[np.ndarray, np.ndarray]:
    """The official training stimuli of a registered data set and their labels: ``(Y_train, labels_train)``.

    Only the official training rows: the labels of the official test rows never reach an estimator.

    Raises
    ------
    ConfigError
        The data set has no labels.
    """
    from cortexflow.data.loading import load_dataset  # the builder's I/O, not the estimator's

    ds = load_dataset(dataset, data_dir)
    if ds.labels_train is None:
        raise ConfigError(f"data set {dataset!r} has no class labels (labelTrn); class decoding needs them: "
                          f"use class_decoding='off'")
    return np.clip(np.asarray(ds.Y_train, dtype=np.float32), 0.0, 1.0), np.asarray(ds.labels_train, dtype=np.int64)
