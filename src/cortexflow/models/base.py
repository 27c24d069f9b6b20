"""``BaseDecoder``: what every CortexFlow decoder shares (input validation, seeding, scoring).

A decoder maps brain-signal rows ``X`` of shape (n, n_features) to targets ``Y``
(images of shape (n, 28, 28), or any (n, ...) array). Subclasses implement
``fit`` and ``predict`` and call :meth:`BaseDecoder._validate_fit_input` and
:meth:`BaseDecoder._validate_X` so that every decoder refuses the same bad input
with the same messages (scikit-learn's wording where scikit-learn has one).
"""

from __future__ import annotations

import numbers
from typing import ClassVar

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.metrics import r2_score
from sklearn.utils import check_random_state
from sklearn.utils.validation import validate_data

from cortexflow.data.validation import validate_signals
from cortexflow.exceptions import ConfigError, DataValidationError

__all__ = ["BaseDecoder", "seed_from_random_state"]

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
