"""``CCCV1EnsembleDecoder``: several CCCV1 decoders with different seeds, trained together, images averaged."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.utils.validation import check_is_fitted

from cortexflow.exceptions import ConfigError
from cortexflow.models.estimator import CCCV1Decoder
from cortexflow.training.batched import fit_many

__all__ = ["CCCV1EnsembleDecoder", "member_seeds"]


def member_seeds(random_state: int, n_members: int) -> list[int]:
    """Seeds of ensemble members: ``random_state`` first (member 0 is the plain model of that seed), then spaced by 10007."""
    if not isinstance(n_members, (int, np.integer)) or isinstance(n_members, bool) or n_members < 1:
        raise ConfigError(f"n_members={n_members!r} must be an integer >= 1")
    return [int(random_state) + 10_007 * m for m in range(int(n_members))]


class CCCV1EnsembleDecoder(CCCV1Decoder):
    """``n_members`` :class:`CCCV1Decoder` members (seeds from :func:`member_seeds`), mean image.

    The members are trained together by the batched trainer
    (:func:`cortexflow.training.batched.fit_many`): each is exactly the
    ``CCCV1Decoder(config, dataset, random_state=seed)`` of its seed, with its
    own inner validation split and early stopping from the training rows.

    Parameters
    ----------
    n_members : int
        Ensemble size (1 gives the plain decoder of ``random_state``).
    config, dataset, random_state, device, progress, amp :
        As for :class:`CCCV1Decoder`.

    Attributes
    ----------
    members_ : list of CCCV1Decoder
    """

    def __init__(self, n_members: int = 5, config: Any = "auto", dataset: str | None = None, random_state: int = 0,
                 device: str = "auto", progress: bool = False, amp: str = "off"):
        self.n_members = n_members
        super().__init__(config=config, dataset=dataset, random_state=random_state, device=device,
                         progress=progress, amp=amp)

    def fit(self, X, Y, *, metadata: dict | None = None) -> "CCCV1EnsembleDecoder":
        """Fit every member on the training rows (X, Y), batched."""
        seeds = member_seeds(self.random_state, self.n_members)
        X, Y = self._validate_fit_input(X, Y)
        self.members_ = fit_many([X] * len(seeds), [Y] * len(seeds), seeds, config=self.config, dataset=self.dataset,
                                 device=self.device, amp=self.amp, progress=self.progress, metadata=metadata)
        first = self.members_[0]
        self.output_shape_ = first.output_shape_
        self.config_, self.history_ = first.config_, first.history_
        self.signal_scaler_, self.target_scaler_ = first.signal_scaler_, first.target_scaler_
        self.model_ = first.model_
        self.metadata_ = dict(metadata or {})
        return self

    def predict(self, X) -> np.ndarray:
        """Mean of the members' reconstructions, (n, 28, 28) float32."""
        check_is_fitted(self, "members_")
        return np.mean([m.predict(X) for m in self.members_], axis=0).astype(np.float32)

    def transform(self, X) -> np.ndarray:
        """Mean of the members' embeddings, re-normalised to unit length."""
        check_is_fitted(self, "members_")
        Z = np.mean([m.transform(X) for m in self.members_], axis=0)
        return (Z / np.maximum(np.linalg.norm(Z, axis=1, keepdims=True), 1e-12)).astype(np.float32)

    def save(self, path):  # noqa: D102
        """Not supported yet: save the members one by one (``members_[i].save``)."""
        raise NotImplementedError("CCCV1EnsembleDecoder has no checkpoint format; save members_[i] individually")

    @classmethod
    def load(cls, path, device: str = "auto"):  # noqa: D102
        """Not supported (see :meth:`save`)."""
        raise NotImplementedError("CCCV1EnsembleDecoder has no checkpoint format; load CCCV1Decoder members")
