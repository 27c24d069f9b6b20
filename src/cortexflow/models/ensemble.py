"""``CCCV1EnsembleDecoder``: several CCCV1 decoders with different seeds, trained together, images averaged."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.utils.validation import check_is_fitted

from cortexflow.exceptions import CheckpointError, ConfigError, CortexFlowError
from cortexflow.models.checkpoint import (
    check_body,
    checkpoint_kind,
    read_checkpoint_meta,
    read_checkpoint_weights,
    write_checkpoint,
)
from cortexflow.models.estimator import CCCV1Decoder
from cortexflow.training.batched import fit_many
from cortexflow.registry.options import Option, options_from_dataclass
from cortexflow.registry.methods import register_method
from cortexflow.registry.sklearn_notes import FLOAT32, UNDERTRAINED
from cortexflow.training.config import CCCV1Config, get_config

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
        seeds = member_seeds(self._seed(), self.n_members)
        X, Y = self._validate_fit_input(X, Y)
        self.members_ = fit_many([X] * len(seeds), [Y] * len(seeds), seeds, config=self.config, dataset=self.dataset,
                                 device=self.device, amp=self.amp, progress=self.progress, metadata=metadata)
        self._set_from_members(self.members_, metadata)
        return self

    def _set_from_members(self, members: list[CCCV1Decoder], metadata: dict | None) -> None:
        """Set the members and the attributes taken from the first one (shared by ``fit`` and ``load``)."""
        self.members_ = members
        first = members[0]
        self.output_shape_ = first.output_shape_
        self.config_, self.history_ = first.config_, first.history_
        self.signal_scaler_, self.target_scaler_ = first.signal_scaler_, first.target_scaler_
        self.model_ = first.model_
        self.train_result_ = getattr(first, "train_result_", None)
        self.metadata_ = dict(metadata or {})

    def _check_params(self) -> None:
        super()._check_params()
        member_seeds(0, self.n_members)  # n_members: an integer >= 1

    def predict(self, X) -> np.ndarray:
        """Mean of the members' reconstructions, (n, 28, 28) float32."""
        check_is_fitted(self, "members_")
        return np.mean([m.predict(X) for m in self.members_], axis=0).astype(np.float32)

    def transform(self, X) -> np.ndarray:
        """Mean of the members' embeddings, re-normalised to unit length."""
        check_is_fitted(self, "members_")
        Z = np.mean([m.transform(X) for m in self.members_], axis=0)
        return (Z / np.maximum(np.linalg.norm(Z, axis=1, keepdims=True), 1e-12)).astype(np.float32)

    # ---------------------------------------------------------- persistence
    checkpoint_kind = "cccv1-ensemble"

    def save(self, path: str | os.PathLike) -> Path:
        """Write one checkpoint folder holding every member (tensors ``members.<i>.*``, metadata ``members[i]``).

        Each member's metadata is what :meth:`CCCV1Decoder.save` writes for it
        (config, preprocessing, training facts); the folder is written
        atomically like every checkpoint.
        """
        check_is_fitted(self, "members_")
        meta = {
            **self._checkpoint_header(),
            "params": self._checkpoint_params(),
            "n_features_in": int(self.n_features_in_),
            "image_shape": list(self.output_shape_),
            "output_shape": list(self.output_shape_),
            "dataset": self.metadata_,
            "members": [m._checkpoint_body() for m in self.members_],
        }
        tensors = {f"members.{i}.{k}": v for i, m in enumerate(self.members_) for k, v in m._checkpoint_state().items()}
        return write_checkpoint(path, meta, tensors)

    @classmethod
    def load(cls, path: str | os.PathLike, device: str = "auto") -> "CCCV1EnsembleDecoder":
        """Load a checkpoint written by :meth:`save`.

        Raises
        ------
        CheckpointError
            Missing or damaged files, a weights hash that differs, another kind
            of checkpoint, or a member whose metadata or weights are unusable.
        """
        meta, fmt, meta_path, w_path = read_checkpoint_meta(path)
        kind = checkpoint_kind(meta)
        if kind != cls.checkpoint_kind:
            raise CheckpointError(f"checkpoint {path} holds a {kind or 'cccv1'!r} decoder, not {cls.checkpoint_kind!r}; "
                                  "load it with cortexflow.models.loader.load_decoder")
        bodies = meta.get("members")
        if not isinstance(bodies, list) or not bodies:
            raise CheckpointError(f"checkpoint {meta_path}: field 'members' is {bodies!r}; expected a non-empty JSON array")
        if not isinstance(meta.get("params", {}), dict):
            raise CheckpointError(f"checkpoint {meta_path}: field 'params' is {meta['params']!r}; expected a JSON object")
        for i, body in enumerate(bodies):
            check_body(body, meta_path, prefix=f"members[{i}].")
        state = read_checkpoint_weights(w_path, meta, fmt)
        members = []
        for i, body in enumerate(bodies):
            prefix = f"members.{i}."
            sub = {k[len(prefix):]: state.pop(k) for k in [k for k in state if k.startswith(prefix)]}
            members.append(CCCV1Decoder._from_checkpoint_body(body, meta_path, w_path, device, lambda sub=sub: sub))
        if state:
            raise CheckpointError(f"checkpoint {w_path}: {len(state)} tensor(s) belong to no member "
                                  f"({', '.join(sorted(state)[:5])})")
        restorable = set(cls._get_param_names()) - {"config"}
        params = dict(meta.get("params", {}))
        unknown = sorted(set(params) - restorable)
        if unknown:
            raise CheckpointError(f"checkpoint {meta_path}: field 'params' has unknown parameter(s) "
                                  f"{', '.join(map(repr, unknown))} for {cls.__name__}; allowed: {', '.join(sorted(restorable))}")
        if params.get("n_members", len(members)) != len(members):
            raise CheckpointError(f"checkpoint {meta_path}: field 'params.n_members' is {params['n_members']!r}, but the "
                                  f"checkpoint holds {len(members)} member(s)")
        try:
            obj = cls(**{**params, "n_members": len(members), "device": device}, config=members[0].config_)
            obj._check_params()
        except (TypeError, ValueError, CortexFlowError) as exc:
            raise CheckpointError(f"checkpoint {meta_path}: field 'params' is invalid for {cls.__name__}: {exc}") from exc
        shapes = {tuple(m.output_shape_) for m in members}
        if len(shapes) != 1 or ("image_shape" in meta and tuple(meta["image_shape"]) not in shapes):
            raise CheckpointError(f"checkpoint {meta_path}: the members' image shapes {sorted(shapes)} and field "
                                  f"'image_shape' {meta.get('image_shape')!r} do not agree")
        obj._set_from_members(members, meta.get("dataset", {}))
        obj.image_shape_ = members[0].output_shape_
        obj.n_features_in_ = members[0].n_features_in_
        obj.checkpoint_meta_ = meta
        return obj


# ---------------------------------------------------------------- registration
#: Typed options of the CCCV1 family: every CCCV1Config field (they override the data set's preset).
CONFIG_OPTIONS = options_from_dataclass(CCCV1Config)
#: Tiny configuration of the scikit-learn checks: two epochs of a 16-unit network (API contract, not accuracy).
CHECK_CONFIG = get_config("small").replace(epochs=2, patience=2, hidden_dim=16, embed_dim=8, batch_size=8)


_CONFIG_FIELDS = frozenset(o.name for o in CONFIG_OPTIONS)


def check_config_options(options) -> None:
    """The CCCV1Config checks of the configuration fields among ``options`` (ranges, finiteness), before any work."""
    get_config("small", **{k: v for k, v in options.items() if k in _CONFIG_FIELDS})


def fast_config(cfg: CCCV1Config) -> CCCV1Config:
    """The tiny version of a configuration used by ``fast=True`` (smoke runs; its numbers are no results)."""
    return cfg.replace(epochs=2, patience=1, hidden_dim=64, embed_dim=32)


def auto_config(dataset_name: str, n_train: int, fast: bool, overrides: dict) -> CCCV1Config:
    """The data set's ``"auto"`` preset with ``overrides`` (CCCV1Config fields), shrunk when ``fast``."""
    cfg = get_config("auto", n_train=n_train, dataset=dataset_name, **overrides)
    return fast_config(cfg) if fast else cfg


def _cccv1_factory(seed: int, dataset_name: str, n_train: int, *, fast: bool = False, device: str = "auto",
                   n_members: int = 1, **overrides: Any):
    cfg = auto_config(dataset_name, n_train, fast, overrides)
    if n_members != 1:  # mean image of n_members seeds, trained together by the batched trainer
        return CCCV1EnsembleDecoder(n_members, config=cfg, dataset=dataset_name, random_state=seed, device=device)
    return CCCV1Decoder(config=cfg, dataset=dataset_name, random_state=seed, device=device)


def _cccv1_ensemble_factory(seed: int, dataset_name: str, n_train: int, *, fast: bool = False, device: str = "auto",
                            n_members: int = 5, **overrides: Any):
    """``cccv1`` with ``n_members`` seeds (default 5) trained together by the batched trainer, mean image."""
    return _cccv1_factory(seed, dataset_name, n_train, fast=fast, device=device, n_members=n_members, **overrides)


_DEVICE = Option("device", ("str",), "auto", False, help="'auto' (CUDA when present), 'cpu', 'cuda' or 'cuda:N'")
register_method(
    "cccv1", _cccv1_factory, estimator=CCCV1Decoder, label="CCCV1",
    options=CONFIG_OPTIONS + (_DEVICE, Option("n_members", ("int",), 1, False, low=1,
                                              help="seeds averaged (> 1: a CCCV1 ensemble trained batched)")),
    description="CCCV1Decoder(config='auto', dataset=name)", check=check_config_options,
    sklearn_xfail={"check_regressors_train": "asserts R^2 > 0.5 on the training data of a toy regression; two "
                   "epochs of the test configuration are not enough training (with 20 epochs at lr 1e-3 the check "
                   "passes: see test_regressors_train_passes_with_enough_training)",
                   "check_regressor_multioutput": FLOAT32},
    check_params={"config": CHECK_CONFIG, "device": "cpu"},
)
register_method(
    "cccv1-ensemble", _cccv1_ensemble_factory, estimator=CCCV1EnsembleDecoder, in_all=False, label="CCCV1 ensemble",
    options=CONFIG_OPTIONS + (_DEVICE, Option("n_members", ("int",), 5, False, low=1, help="seeds averaged")),
    description="cccv1 with n_members=5 seeds trained together by the batched trainer; mean image",
    check=check_config_options,
    sklearn_xfail={"check_regressor_multioutput": FLOAT32, "check_regressors_train": UNDERTRAINED},
    check_params={"n_members": 2, "config": CHECK_CONFIG, "device": "cpu"},
)
