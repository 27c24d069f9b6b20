"""The parameters every prior-backed estimator shares, documented, stored and checked once.

``ridge-prior``, ``cccv1-prior``, ``brain-diffuser-prior`` and ``mindvis-prior``
each take the same seven parameters that say which image prior they use and
how it is guarded: :data:`PRIOR_PARAMS`. scikit-learn wants every parameter in
the estimator's own ``__init__`` signature (no ``**kwargs``), so each class
keeps its explicit signature; what :class:`PriorBacked` shares is the rest:

* the numpydoc text of the seven parameters, put into the class docstring in
  place of the line ``{prior_parameters}`` (:func:`prior_parameters_doc`), so
  that the registry's typed options (:mod:`cortexflow.registry.options`) read
  the same help for every method;
* :meth:`PriorBacked._set_prior_params`, which stores them in ``__init__``;
* :meth:`PriorBacked._check_prior_params`, their checks;
* :meth:`PriorBacked._fitted_prior`, the one way ``fit`` gets its prior: the
  fitted prior handed in (estimators do no I/O; the builder of
  :mod:`cortexflow.methods.build` resolves corpus names, the cache and the guard).
"""

from __future__ import annotations

from typing import Any

from cortexflow.exceptions import ConfigError
from cortexflow.models.base import check_number
from cortexflow.training.prior import FittedPrior

__all__ = ["PRIOR_PARAMS", "PriorBacked", "prior_parameters_doc"]

#: The parameters of a prior-backed estimator that pick and guard its image prior.
PRIOR_PARAMS = ("prior", "dataset", "stimuli", "prior_config", "threshold", "data_dir", "cache_dir")

_PLACEHOLDER = "{prior_parameters}"

_DOC = """\
    prior : str or FittedPrior, optional
        The image prior: a fitted prior when ``fit`` is called (``fit`` does
        no I/O), or, before that, the name of a corpus
        (``cortexflow.priors.list_corpora()``; ``None``: the default prior of
        ``dataset``) that :func:`cortexflow.methods.build.with_prior` (or the
        builder :func:`~cortexflow.methods.build.make_estimator`) turns into
        a fitted prior: trained, or read from the cache, and guarded. A data
        set without a default prior (a user's file) then raises
        :class:`ConfigError` listing the corpora.
    dataset : str, optional
        Registered data set name: picks the default prior{dataset_role}
        (nothing is loaded by this name).
    stimuli : ndarray (m, H, W) or (m, H, W, 3), optional
        Every stimulus that will be scored (training and test rows,
        :func:`cortexflow.methods.build.scored_stimuli`): the near-duplicate
        guard drops the corpus images that copy one; without it only the
        training stimuli are guarded (a warning).
    prior_config : PriorConfig or dict, optional
        Prior architecture and training (default {config_default}).
    threshold : float
        Pixel MSE at or below which a corpus image counts as a near-duplicate
        of a stimulus (>= 0).
    data_dir : path-like, optional
        Data folder that holds the corpus files (default ``$CORTEXFLOW_DATA``).
    cache_dir : path-like, optional
        Cache root of the trained priors (default ``$CORTEXFLOW_CACHE``).
"""


def prior_parameters_doc(config_default: str = "``PriorConfig()``", dataset_role: str = "") -> str:
    """The numpydoc entries of :data:`PRIOR_PARAMS` (indented for a class docstring).

    Parameters
    ----------
    config_default : str
        What ``prior_config=None`` means for this estimator.
    dataset_role : str
        What else ``dataset`` picks, appended to "picks the default prior".
    """
    return _DOC.format(config_default=config_default, dataset_role=dataset_role)


class PriorBacked:
    """Mixin of the estimators backed by an image prior: the parameters :data:`PRIOR_PARAMS`.

    A subclass writes the line ``{prior_parameters}`` in its ``Parameters``
    section, lists the seven parameters in its own ``__init__`` signature and
    stores them with :meth:`_set_prior_params`. Class keywords
    ``prior_config_default`` and ``dataset_role`` fill in the two phrases that
    differ between estimators (see :func:`prior_parameters_doc`).
    """

    def __init_subclass__(cls, prior_config_default: str | None = None, dataset_role: str = "", **kwargs: Any):
        super().__init_subclass__(**kwargs)
        doc = cls.__dict__.get("__doc__")
        if doc and _PLACEHOLDER in doc:
            block = prior_parameters_doc(**({"config_default": prior_config_default} if prior_config_default else {}),
                                         dataset_role=dataset_role)
            line = next(ln for ln in doc.splitlines(keepends=True) if _PLACEHOLDER in ln)
            cls.__doc__ = doc.replace(line, block)

    def _set_prior_params(self, *, prior: Any, dataset: str | None, stimuli: Any, prior_config: Any,
                          threshold: float, data_dir: Any, cache_dir: Any) -> None:
        """Store the prior parameters as given (scikit-learn: ``__init__`` only stores)."""
        self.prior = prior
        self.dataset = dataset
        self.stimuli = stimuli
        self.prior_config = prior_config
        self.threshold = threshold
        self.data_dir = data_dir
        self.cache_dir = cache_dir

    def _fitted_prior(self, image_shape: tuple[int, ...]) -> FittedPrior:
        """The fitted prior handed in as ``prior``, checked against the data's ``image_shape``: ``fit`` does no I/O.

        Raises
        ------
        ConfigError
            ``prior`` is a corpus name or None (resolve it first: the message says how).
        """
        if not isinstance(self.prior, FittedPrior):
            name = type(self).__name__
            raise ConfigError(
                f"{name}.fit needs a fitted prior, got prior={self.prior!r}: estimators do no I/O. Build it with "
                f"cortexflow.methods.build.make_estimator(METHOD, seed, dataset, n_train, stimuli=...), or resolve "
                f"the prior first: cortexflow.methods.build.with_prior(est, stimuli) trains it (or reads it from the "
                f"cache) on the corpus minus the near-duplicates of stimuli")
        self.prior.check_image_shape(tuple(image_shape), what=type(self).__name__)
        return self.prior

    def _check_prior_params(self) -> None:
        """Check the prior parameters that need no data (``ConfigError`` naming the value and the allowed ones)."""
        check_number(self, "threshold", low=0)
