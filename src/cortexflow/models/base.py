"""``BaseDecoder``: what every CortexFlow decoder shares (input validation, seeding, scoring).

A decoder maps brain-signal rows ``X`` of shape (n, n_features) to targets ``Y``
(images of shape (n, H, W) or (n, H, W, C), or any (n, ...) array). Subclasses implement
``fit`` and ``predict`` and call :meth:`BaseDecoder._validate_fit_input` and
:meth:`BaseDecoder._validate_X` so that every decoder refuses the same bad input
with the same messages (scikit-learn's wording where scikit-learn has one).

Every ``predict`` of a subclass goes through :func:`finite_predictions`: a
prediction that holds NaN or infinite values is refused with a
:class:`~cortexflow.exceptions.NonFinitePredictionError`, whatever path called it.

Checkpoints: a subclass sets ``checkpoint_kind`` and ``checkpoint_schema`` (its
declared fitted attributes, see :class:`cortexflow.models.checkpoint.StateField`)
and implements ``_check_params``; :meth:`BaseDecoder.save` and
:meth:`BaseDecoder.load` are then generic (:func:`cortexflow.models.checkpoint.save_estimator`).
"""

from __future__ import annotations

import functools
import numbers
import os
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.metrics import r2_score
from sklearn.utils import check_random_state
from sklearn.utils.validation import validate_data

from cortexflow.data.validation import validate_signals
from cortexflow.exceptions import ConfigError, CortexFlowError, DataValidationError
from cortexflow.models.checkpoint import StateField, load_estimator, save_estimator

__all__ = ["BaseDecoder", "seed_from_random_state", "finite_predictions", "NonFinitePredictionError",
           "COMMON_STATE", "check_number", "check_choice"]

_MAX_SEED = 2**31 - 1


def seed_from_random_state(random_state) -> int:
    """Turn any scikit-learn ``random_state`` into a non-negative int seed.

    An int is used as it is (so results for ``random_state=0`` never change);
    ``None`` draws a fresh seed; a ``numpy.random.RandomState`` draws one from
    that generator (advancing it, as scikit-learn estimators do).

    Raises
    ------
    ConfigError
        A negative or too large int, or anything that is not a valid ``random_state``.
    """
    if isinstance(random_state, numbers.Integral) and not isinstance(random_state, bool):
        if not 0 <= int(random_state) <= _MAX_SEED:
            raise ConfigError(f"random_state={random_state} is out of range; use an int in [0, {_MAX_SEED}], None or a RandomState")
        return int(random_state)
    try:
        rng = check_random_state(random_state)
    except ValueError:
        raise ConfigError(
            f"random_state={random_state!r} is not valid; use an int in [0, {_MAX_SEED}], None or a numpy RandomState"
        ) from None
    return int(rng.randint(0, _MAX_SEED))


class NonFinitePredictionError(CortexFlowError, ValueError):
    """A decoder's prediction holds NaN or infinite values (damaged weights or state, or extreme input)."""


def finite_predictions(predict):
    """Wrap a ``predict`` method: return its output unchanged, or refuse output with NaN or infinite values."""
    if getattr(predict, "_checks_finite", False):
        return predict

    @functools.wraps(predict)
    def checked(self, X, *args, **kwargs):
        out = predict(self, X, *args, **kwargs)
        arr = out if isinstance(out, np.ndarray) else None
        if arr is not None and arr.dtype.kind in "fc" and arr.size and not np.isfinite(arr).all():
            rows = ~np.isfinite(arr.reshape(len(arr), -1)).all(axis=1) if arr.ndim else np.array([True])
            raise NonFinitePredictionError(
                f"{type(self).__name__}.predict produced NaN or infinite values for {int(rows.sum())} of "
                f"{len(rows)} row(s) (first: row {int(np.flatnonzero(rows)[0])}); the model's weights, state or "
                "checkpoint are damaged, or the input is far outside the training range"
            )
        return out

    checked._checks_finite = True
    return checked


def check_number(owner: Any, name: str, *, low: float | None = None, high: float | None = None,
                 low_open: bool = False, integer: bool = False, none: bool = False, extra: tuple = ()) -> None:
    """Raise :class:`ConfigError` unless ``owner.<name>`` is a number in range (or None / one of ``extra``)."""
    v = getattr(owner, name)
    if (v is None and none) or (isinstance(v, str) and v in extra):
        return
    ok = not isinstance(v, (bool, np.bool_)) and isinstance(v, (numbers.Integral if integer else numbers.Real))
    ok = ok and np.isfinite(float(v))
    if ok and low is not None:
        ok = v > low if low_open else v >= low
    if ok and high is not None:
        ok = v <= high
    if not ok:
        rng = " and ".join(x for x in ((f"{'>' if low_open else '>='} {low:g}" if low is not None else ""),
                                       (f"<= {high:g}" if high is not None else "")) if x)
        alts = [repr(e) for e in extra] + (["None"] if none else [])
        raise ConfigError(f"{name}={v!r} is not allowed; allowed: {'an integer' if integer else 'a number'}"
                          f"{' ' + rng if rng else ''}{' or ' + ', '.join(alts) if alts else ''}")


def check_choice(owner: Any, name: str, allowed) -> None:
    """Raise :class:`ConfigError` unless ``owner.<name>`` is one of ``allowed``."""
    v = getattr(owner, name)
    if not any(v is a or (type(v) is type(a) and v == a) for a in allowed):
        raise ConfigError(f"{name}={v!r} is not allowed; allowed: {', '.join(map(repr, allowed))}")


#: Fitted attributes every decoder has (``image_shape_`` and ``n_features_in_`` are set by ``_validate_fit_input``).
COMMON_STATE: dict[str, StateField] = {
    "n_features_in_": StateField("int", low=1),
    "image_shape_": StateField("shape", required=False),  # the checkpoint's image_shape field is required
    "feature_names_in_": StateField("array", required=False, shape=("n_features",)),
}


class BaseDecoder(RegressorMixin, BaseEstimator):
    """Base class of the decoders: shared validation, seeding, scoring and tags.

    Subclasses set :attr:`_min_train_rows` and implement ``fit``/``predict``.
    ``fit`` should start with ``X, Y = self._validate_fit_input(X, Y)`` (which
    sets ``n_features_in_``) and ``predict`` with ``X = self._validate_X(X, reset=False)``.
    """

    #: fewest training rows ``fit`` accepts (an inner validation split needs more than one)
    _min_train_rows: ClassVar[int] = 1
    #: why, appended to the too-few-rows message (for example ``" (an inner validation split ...)"``)
    _min_train_rows_reason: ClassVar[str] = ""
    #: ``kind`` field of the checkpoints of this class (see :func:`cortexflow.models.loader.load_decoder`)
    checkpoint_kind: ClassVar[str | None] = None
    #: the fitted attributes a checkpoint holds, with their allowed values (None: registered for the kind)
    checkpoint_schema: ClassVar[dict[str, StateField] | None] = None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "predict" in cls.__dict__:  # every predict refuses non-finite output (one place, every path)
            cls.predict = finite_predictions(cls.__dict__["predict"])

    def _check_params(self) -> None:
        """Check the parameters (``ConfigError`` naming the value and the allowed ones); run on every load.

        Subclasses extend it (``super()._check_params()`` first); here: ``random_state``.
        """
        rs = getattr(self, "random_state", None)
        if isinstance(rs, numbers.Integral) or rs is None or isinstance(rs, np.random.RandomState):
            if isinstance(rs, numbers.Integral):
                seed_from_random_state(rs)
            return
        raise ConfigError(f"random_state={rs!r} is not valid; use an int in [0, {_MAX_SEED}], None or a numpy RandomState")

    def save(self, path: str | os.PathLike) -> Path:
        """Write a checkpoint folder (``checkpoint.json`` and ``model.safetensors``, atomically).

        It holds the parameters and the fitted attributes declared in ``checkpoint_schema``
        (:func:`cortexflow.models.checkpoint.save_estimator`).
        """
        return save_estimator(self, path)

    @classmethod
    def load(cls, path: str | os.PathLike, device: str = "auto") -> "BaseDecoder":
        """Load a checkpoint written by :meth:`save`, validated value by value.

        Raises
        ------
        CheckpointError
            Missing or damaged files, another kind of checkpoint, or a value outside what the
            estimator's parameters and schema allow (the message names the file and the key).
        """
        return load_estimator(cls, path, device=device)

    def _validate_X(self, X, *, reset: bool) -> np.ndarray:
        """Check X with scikit-learn's conventions and return it as float32.

        Sparse input raises ``TypeError``; 1-D, empty, complex or non-numeric
        input, NaN/Inf and a feature count other than ``n_features_in_`` raise
        :class:`DataValidationError` (a ``ValueError``) with scikit-learn's
        message wording. Sets ``n_features_in_`` (and ``feature_names_in_`` for
        a DataFrame) when ``reset``.
        """
        try:
            X = validate_data(self, X, reset=reset, dtype=[np.float64, np.float32], ensure_all_finite=False)
        except ValueError as exc:
            if isinstance(exc, DataValidationError):
                raise
            raise DataValidationError(str(exc)) from exc
        return validate_signals(X, key="X", allow_degenerate=True)

    def _validate_fit_input(self, X, Y) -> tuple[np.ndarray, np.ndarray]:
        """Check the training rows (X, Y) of ``fit``; set ``n_features_in_``; return them as arrays."""
        if Y is None:
            raise DataValidationError(f"{type(self).__name__} requires y to be passed, but the target y is None")
        X = self._validate_X(X, reset=True)
        Y = np.asarray(Y)
        if Y.ndim >= 1:
            self.image_shape_ = tuple(int(v) for v in Y.shape[1:])
        if Y.dtype == object:  # e.g. numbers in an object array; strings stay an error
            try:
                Y = Y.astype(np.float64)
            except (TypeError, ValueError) as exc:
                raise DataValidationError(f"Y holds non-numeric data of dtype object ({exc}); expected a real numeric array") from exc
        if Y.ndim == 0 or len(Y) != len(X):
            raise DataValidationError(f"X has {len(X)} rows but Y has shape {Y.shape}; they must have the same number of rows")
        if not (np.issubdtype(Y.dtype, np.number) or Y.dtype == bool) or np.iscomplexobj(Y):
            raise DataValidationError(f"Y holds non-numeric data of dtype {Y.dtype}; expected a real numeric array")
        if not np.all(np.isfinite(Y)):
            raise DataValidationError(f"Input Y contains {int(np.sum(~np.isfinite(Y)))} NaN or infinity value(s)")
        if len(X) < self._min_train_rows:
            raise DataValidationError(
                f"{type(self).__name__} needs at least {self._min_train_rows} training samples"
                f"{self._min_train_rows_reason}; got n_samples = {len(X)}"
            )
        return X, Y

    def _seed(self) -> int:
        """The int seed of this fit, from ``random_state`` (see :func:`seed_from_random_state`)."""
        return seed_from_random_state(getattr(self, "random_state", 0))

    def score(self, X, y, sample_weight=None) -> float:
        """Coefficient of determination R^2 over all pixels (variance-weighted).

        ``y`` holds the true targets (images), in the shape given to ``fit``.
        """
        P = np.asarray(self.predict(X))
        P = P.reshape(len(P), -1)
        return float(r2_score(np.asarray(y).reshape(len(P), -1), P, sample_weight=sample_weight,
                              multioutput="variance_weighted"))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.non_deterministic = False
        return tags
