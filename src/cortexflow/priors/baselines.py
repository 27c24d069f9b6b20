"""``brain-diffuser-prior`` and ``mindvis-prior``: the two baselines with an external image prior.

The published Brain-Diffuser and MinD-Vis owe much of their strength to image
models trained on large external image sets; ``brain-diffuser-lite`` and
``mindvis-lite`` learn theirs from the training stimuli only. These
subclasses keep each baseline's structure and replace its image model by an
image prior trained on an external corpus (:mod:`cortexflow.priors`):

:class:`BrainDiffuserPrior`
    Stage 1 regresses the signals onto the prior's embedding (instead of the
    latent of a VAE of the training stimuli) and decodes it with the prior's
    decoder; stage 2's features are the prior's embeddings (z-scored), and the
    denoiser is trained as before on the training stimuli.
:class:`MindVisPrior`
    The fine-tuned image decoder maps the pretrained signal encoder's tokens
    to the prior's embedding space, and the prior's frozen decoder renders the
    image; the pixel loss goes through that decoder.

The original methods are unchanged under their own names, so earlier results
stay reproducible.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from cortexflow.baselines.brain_diffuser_lite import BrainDiffuserLite
from cortexflow.baselines.mindvis_lite import ConditionedImageDecoder, MaskedSignalModel, MindVisLite
from cortexflow.priors.backed import PriorBacked
from cortexflow.priors.persistence import PRIOR_STATE
from cortexflow.priors.cccv1_prior import prior_decoder
from cortexflow.data.guard import DEFAULT_THRESHOLD
from cortexflow.priors.ridge_prior import FAST_PRIOR_CONFIG, prior_report_info
from cortexflow.registry.methods import get_method, register_method
from cortexflow.registry.sklearn_notes import images_only

__all__ = ["BrainDiffuserPrior", "MindVisPrior", "PriorImageModel", "PriorConditionedDecoder"]


class PriorImageModel(nn.Module):
    """A prior as stage 1's image model: ``posterior(x) -> (embedding, None)`` and ``decode(z) -> flat image``."""

    def __init__(self, prior):
        super().__init__()
        self.decoder = prior_decoder(prior)
        self.prior = prior

    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        return self.decoder.model.encode(x.reshape(len(x), *self.prior.image_shape)), None

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z.float()).reshape(len(z), -1)


class PriorConditionedDecoder(ConditionedImageDecoder):
    """Encoder tokens -> channel mapper -> MLP -> prior embedding -> the prior's frozen decoder."""

    def __init__(self, mae: MaskedSignalModel, decoder: nn.Module, embed_dim: int, map_dim: int = 8,
                 hidden: int = 512, dropout: float = 0.2):
        super().__init__(mae, embed_dim, map_dim, hidden, dropout, sigmoid=False)
        self.decoder = decoder

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.decoder(super().decode(tokens)).reshape(len(tokens), -1)


def _fitted_image_shape(est: Any, Y: np.ndarray) -> tuple[int, ...]:
    """The image shape of the rows being fitted: ``image_shape_`` (set by the fit), else square grayscale."""
    shape = getattr(est, "image_shape_", None)
    if shape is not None and int(np.prod(shape)) == int(np.prod(np.shape(Y)[1:])):
        return tuple(int(v) for v in shape)
    side = int(round(np.sqrt(np.prod(np.shape(Y)[1:]))))
    return (side, side)


class BrainDiffuserPrior(PriorBacked, BrainDiffuserLite):
    """:class:`BrainDiffuserLite` whose stage-1 image model and stage-2 features come from an image prior.

    Parameters
    ----------
    {prior_parameters}
    latent_dim : int
        Unused: the prior's embedding replaces the VAE latent (kept so that the parameters match the parent's).
    vae_epochs : int
        Unused: no VAE is trained (kept so that the parameters match the parent's).
    kl_weight : float
        Unused: there is no VAE loss (kept so that the parameters match the parent's).
    Other parameters :
        As for :class:`BrainDiffuserLite`.

    Attributes
    ----------
    prior_ : FittedPrior
    report_info_ : dict
        Prior corpus and near-duplicates dropped.
    """

    def __init__(self, prior: Any = None, dataset: str | None = None, stimuli: Any = None, prior_config: Any = None,
                 threshold: float = DEFAULT_THRESHOLD, data_dir: Any = None, cache_dir: Any = None,
                 latent_dim: int = 16, vae_epochs: int = 300, denoiser_epochs: int = 300, patience: int = 20,
                 kl_weight: float = 0.01, strength: float = 0.75, steps: int = 10, features=None, alphas=None,
                 random_state: int = 0, device: str = "cpu", progress: bool = False):
        self._set_prior_params(prior=prior, dataset=dataset, stimuli=stimuli, prior_config=prior_config,
                               threshold=threshold, data_dir=data_dir, cache_dir=cache_dir)
        super().__init__(latent_dim=latent_dim, vae_epochs=vae_epochs, denoiser_epochs=denoiser_epochs,
                         patience=patience, kl_weight=kl_weight, strength=strength, steps=steps, features=features,
                         alphas=alphas, random_state=random_state, device=device, progress=progress)

    checkpoint_kind = "brain-diffuser-prior"
    _image_shape = _fitted_image_shape
    checkpoint_schema = {**BrainDiffuserLite.checkpoint_schema, **PRIOR_STATE}

    def _check_params(self) -> None:
        super()._check_params()
        self._check_prior_params()

    def _image_model_for_checkpoint(self) -> nn.Module:
        return PriorImageModel(self.prior_).eval()

    def _fit_image_model(self, Yf: np.ndarray, seed: int) -> nn.Module:
        self.prior_ = self._fitted_prior(self._image_shape(Yf))
        self.report_info_ = prior_report_info(self.prior_)
        return PriorImageModel(self.prior_).eval()


class MindVisPrior(PriorBacked, MindVisLite):
    """:class:`MindVisLite` whose image decoder renders through an image prior's frozen decoder.

    Parameters
    ----------
    {prior_parameters}
    Other parameters :
        As for :class:`MindVisLite`.

    Attributes
    ----------
    prior_ : FittedPrior
    report_info_ : dict
    """

    def __init__(self, prior: Any = None, dataset: str | None = None, stimuli: Any = None, prior_config: Any = None,
                 threshold: float = DEFAULT_THRESHOLD, data_dir: Any = None, cache_dir: Any = None,
                 patch_size: int | None = None, dim: int = 64, depth: int = 2, heads: int = 4,
                 mask_ratio: float = 0.75, pretrain_epochs: int = 100, fine_tune_epochs: int = 150, patience: int = 15,
                 unlabelled=None, random_state: int = 0, device: str = "cpu", progress: bool = False):
        self._set_prior_params(prior=prior, dataset=dataset, stimuli=stimuli, prior_config=prior_config,
                               threshold=threshold, data_dir=data_dir, cache_dir=cache_dir)
        super().__init__(patch_size=patch_size, dim=dim, depth=depth, heads=heads, mask_ratio=mask_ratio,
                         pretrain_epochs=pretrain_epochs, fine_tune_epochs=fine_tune_epochs, patience=patience,
                         unlabelled=unlabelled, random_state=random_state, device=device, progress=progress)

    checkpoint_kind = "mindvis-prior"
    _image_shape = _fitted_image_shape
    checkpoint_schema = {**MindVisLite.checkpoint_schema, **PRIOR_STATE}

    def _check_params(self) -> None:
        super()._check_params()
        self._check_prior_params()

    def _image_decoder_for_checkpoint(self) -> nn.Module:
        return PriorConditionedDecoder(self._masked_model_for_checkpoint(), prior_decoder(self.prior_),
                                       self.prior_.embed_dim)

    def _image_decoder(self, mae: MaskedSignalModel, n_pixels: int, Y: np.ndarray) -> nn.Module:
        self.prior_ = self._fitted_prior(self._image_shape(Y))
        self.report_info_ = prior_report_info(self.prior_)
        return PriorConditionedDecoder(mae, prior_decoder(self.prior_), self.prior_.embed_dim)


# ---------------------------------------------------------------- registration
_PRIOR_PARAMS = ("prior", "prior_config", "threshold")


def _prior_variant(cls: type, base: str, seed: int, dataset_name: str, n_train: int, fast: bool, stimuli,
                   options: dict) -> Any:
    """``cls`` with the parameters of the registered ``base`` method's estimator (fast settings included)."""
    prior_opts = {k: options.pop(k) for k in list(options) if k in _PRIOR_PARAMS}
    if fast:
        prior_opts.setdefault("prior_config", dict(FAST_PRIOR_CONFIG))
    params = get_method(base).factory(seed, dataset_name, n_train, fast=fast, **options).get_params()
    return cls(dataset=dataset_name, stimuli=stimuli, **prior_opts, **params)


def brain_diffuser_prior_factory(seed: int, dataset_name: str, n_train: int, *, fast: bool = False, stimuli=None,
                                 **options: Any) -> BrainDiffuserPrior:
    """Unfitted :class:`BrainDiffuserPrior`: ``brain-diffuser-lite``'s settings plus the prior options."""
    return _prior_variant(BrainDiffuserPrior, "brain-diffuser-lite", seed, dataset_name, n_train, fast, stimuli,
                          options)


def mindvis_prior_factory(seed: int, dataset_name: str, n_train: int, *, fast: bool = False, stimuli=None,
                          **options: Any) -> MindVisPrior:
    """Unfitted :class:`MindVisPrior`: ``mindvis-lite``'s settings plus the prior options."""
    return _prior_variant(MindVisPrior, "mindvis-lite", seed, dataset_name, n_train, fast, stimuli, options)


register_method(
    "brain-diffuser-prior", brain_diffuser_prior_factory, estimator=BrainDiffuserPrior, version="1",
    needs=("prior",), ranges={"threshold": (0, None)}, sklearn_xfail=images_only("check_regressor_data_not_an_array"),
    description="brain-diffuser-lite with an external image prior as stage-1 image model and stage-2 "
                "features (option prior=CORPUS); brain-diffuser-lite itself is unchanged",
)
register_method(
    "mindvis-prior", mindvis_prior_factory, estimator=MindVisPrior, version="1", needs=("prior",),
    ranges={"threshold": (0, None)}, sklearn_xfail=images_only("check_regressor_data_not_an_array"),
    description="mindvis-lite whose image decoder renders through an external image prior's frozen "
                "decoder (option prior=CORPUS); mindvis-lite itself is unchanged",
)
