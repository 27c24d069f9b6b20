"""``cccv1-semantic``: CCCV1 trained with CLIP-style guidance from a pretrained image encoder.

The network that reconstructs images is the unchanged CCCV1. During training
only, projection heads map its 512-d embedding into the encoder's feature
spaces (by default EfficientNet-Lite0's pooled ``block10`` features, 112-d at
14x14, and its final pooled 1280-d features), and two terms join the pixel MSE:

``semantic_infonce``
    symmetric InfoNCE with a learnable temperature (CLIP's loss), weight
    ``config.loss_weights["semantic_infonce"]`` (default 0.02);
``semantic_cosine``
    mean ``1 - cosine`` to the stimulus embedding, weight
    ``config.loss_weights["semantic_cosine"]`` (default 0.05).

The stimulus embeddings are computed from the training images passed to
:meth:`CCCV1SemanticDecoder.fit` only, centred on their mean, and cached on disk.
Early stopping still watches the pixel MSE of the inner validation split.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.utils.validation import check_is_fitted

from cortexflow.exceptions import ConfigError
from cortexflow.models.estimator import CCCV1Decoder
from cortexflow.semantic.cache import embed_images
from cortexflow.semantic.encoders import DEFAULT_ENCODER, ImageEncoder, as_image_batch, load_image_encoder
from cortexflow.semantic.losses import SemanticGuidance
from cortexflow.training.config import CCCV1Config
from cortexflow.training.seeding import seeded_init
from cortexflow.registry.options import options_from_dataclass, options_from_estimator
from cortexflow.registry.methods import register_method
from cortexflow.models.ensemble import check_config_options
from cortexflow.registry.sklearn_notes import TRANSFORMER_CHECKS, images_only
from cortexflow.training.config import get_config

__all__ = ["CCCV1SemanticDecoder", "DEFAULT_SEMANTIC_WEIGHTS", "SEMANTIC_TERMS"]

logger = logging.getLogger(__name__)

SEMANTIC_TERMS = ("semantic_infonce", "semantic_cosine")
DEFAULT_SEMANTIC_WEIGHTS: dict[str, float] = {"semantic_infonce": 0.02, "semantic_cosine": 0.05}


class CCCV1SemanticDecoder(CCCV1Decoder):
    """CCCV1 with CLIP-style, multi-scale semantic guidance during training.

    Parameters
    ----------
    config, dataset, random_state, device, progress, loss_terms, amp :
        As in :class:`cortexflow.models.CCCV1Decoder`. The weights of the two
        semantic terms are read from ``config.loss_weights`` (keys
        ``semantic_infonce`` and ``semantic_cosine``); missing keys take
        :data:`DEFAULT_SEMANTIC_WEIGHTS`, and a weight of 0 switches a term off.
    encoder : str or ImageEncoder
        Image encoder name or spec (see :func:`cortexflow.semantic.load_image_encoder`).
    layers : dict of str to float, sequence of str, or None
        Encoder layers to align to, with relative weights. ``None`` takes the
        encoder's default (EfficientNet-Lite0: ``{"block10": 0.5, "final": 1.0}``).
    head_dim : int
        Hidden width of each semantic projection head (not the CCCV1 encoder's
        width, which is ``config.hidden_dim``).
    cache_dir : path-like, optional
        Embedding cache root (default ``$CORTEXFLOW_CACHE`` or the user cache).

    Attributes
    ----------
    guidance_ : SemanticGuidance
        Trained projection heads and temperatures (not saved in checkpoints:
        they are not needed to reconstruct images).
    encoder_name_ : str
    guidance_layers_ : dict of str to float
    semantic_weights_ : dict of str to float
    stimulus_center_ : dict of str to ndarray
        Mean training-stimulus embedding per layer.
    """

    checkpoint_kind = "cccv1-semantic"

    def __init__(
        self,
        config: Any = "auto",
        dataset: str | None = None,
        random_state: int = 0,
        device: str = "auto",
        progress: bool = False,
        loss_terms: dict | None = None,
        amp: str = "off",
        encoder: str | ImageEncoder = DEFAULT_ENCODER,
        layers: Mapping[str, float] | Sequence[str] | None = None,
        head_dim: int = 512,
        cache_dir: str | os.PathLike | None = None,
    ):
        super().__init__(config=config, dataset=dataset, random_state=random_state, device=device,
                         progress=progress, loss_terms=loss_terms, amp=amp)
        self.encoder = encoder
        self.layers = layers
        self.head_dim = head_dim
        self.cache_dir = cache_dir

    def _resolve_layers(self, enc: ImageEncoder) -> dict[str, float]:
        if self.layers is None:
            layers = dict(enc.default_guidance_layers)
        elif isinstance(self.layers, Mapping):
            layers = {str(k): float(v) for k, v in self.layers.items()}
        elif isinstance(self.layers, str):
            layers = {self.layers: 1.0}
        else:
            layers = {str(k): 1.0 for k in self.layers}
        if not layers:
            raise ConfigError(f"layers={self.layers!r} selects no encoder layer; available: {list(enc.layers)}")
        enc.check_layers(list(layers))
        return layers

    def _training_setup(self, X: np.ndarray, Y: np.ndarray, config: CCCV1Config) -> tuple[CCCV1Config, dict]:
        enc = load_image_encoder(self.encoder)
        layers = self._resolve_layers(enc)
        images = as_image_batch(Y, name="Y")  # the training stimuli, nothing else
        emb = embed_images(images, enc, layers=list(layers), cache_dir=self.cache_dir)
        weights = {**DEFAULT_SEMANTIC_WEIGHTS, **dict(config.loss_weights)}
        for k in SEMANTIC_TERMS:
            if float(weights[k]) < 0:
                raise ConfigError(f"config.loss_weights[{k!r}]={weights[k]} must be >= 0")
        config = config.replace(loss_weights=weights)
        # the heads' own seeded stream (seed_ is set before this hook; any random_state works)
        guidance, _ = seeded_init(
            lambda: SemanticGuidance(config.embed_dim, emb, layers, hidden_dim=int(self.head_dim)), self.seed_ + 7919)
        self.guidance_ = guidance
        self.encoder_name_ = enc.name
        self.guidance_layers_ = layers
        self.semantic_weights_ = {k: float(weights[k]) for k in SEMANTIC_TERMS}
        self.stimulus_center_ = {ly: e.mean(axis=0) for ly, e in emb.items()}
        terms = {k: v for k, v in guidance.terms().items() if float(weights[k]) > 0}
        logger.info("cccv1-semantic: encoder %s, layers %s, weights %s", enc.name, layers, self.semantic_weights_)
        return config, terms

    def fit(self, X, Y, *, metadata: dict | None = None) -> "CCCV1SemanticDecoder":
        """Fit as :meth:`CCCV1Decoder.fit`, with semantic guidance from the training stimuli ``Y``."""
        super().fit(X, Y, metadata=metadata)
        self.guidance_.cpu().eval()
        return self

    @torch.no_grad()
    def predict_semantic(self, X, layer: str = "final") -> np.ndarray:
        """Brain signals -> unit-norm embeddings in the (training-centred) encoder space of ``layer``.

        Only available on a decoder fitted in this process (projection heads are
        not part of checkpoints).
        """
        check_is_fitted(self, "guidance_")
        if layer not in self.guidance_.layer_names:
            raise ConfigError(f"layer {layer!r} was not trained; trained layers: {self.guidance_.layer_names}")
        emb = torch.as_tensor(self.transform(X))
        return F.normalize(self.guidance_.heads[layer](emb), dim=-1).numpy().astype(np.float32)

    def save(self, path):
        """Write a checkpoint (see :meth:`CCCV1Decoder.save`); an encoder instance is stored by its name."""
        enc = self.encoder
        if isinstance(enc, str):
            return super().save(path)
        self.encoder = getattr(enc, "name", type(enc).__name__)
        try:
            return super().save(path)
        finally:
            self.encoder = enc

    def _check_params(self) -> None:
        super()._check_params()
        if not isinstance(self.encoder, (str, ImageEncoder)):
            raise ConfigError(f"encoder={self.encoder!r} is not allowed; allowed: an encoder name or an ImageEncoder")
        if isinstance(self.head_dim, bool) or not isinstance(self.head_dim, (int, np.integer)) or self.head_dim < 1:
            raise ConfigError(f"head_dim={self.head_dim!r} is not allowed; allowed: an integer >= 1")
        if self.layers is not None and not isinstance(self.layers, (str, Mapping, Sequence)):
            raise ConfigError(f"layers={self.layers!r} is not allowed; allowed: None, a layer name, a list of names "
                              "or a dict of names to weights")

    @classmethod
    def _upgrade_checkpoint_params(cls, params: dict[str, Any]) -> dict[str, Any]:
        if "hidden_dim" in params and "head_dim" not in params:  # checkpoints written before the rename
            params["head_dim"] = params.pop("hidden_dim")
        return params

    @classmethod
    def load(cls, path, device: str = "auto") -> "CCCV1SemanticDecoder":
        """Load a checkpoint written by :meth:`save` (the reconstruction network and preprocessing)."""
        return super().load(path, device=device)


# ---------------------------------------------------------------- registration
#: name of the semantic-guidance method
SEMANTIC_METHOD = "cccv1-semantic"


def cccv1_semantic_factory(seed: int, dataset_name: str, n_train: int, *, fast: bool = False, device: str = "auto",
                           encoder: str = DEFAULT_ENCODER, layers: Any = None, head_dim: int = 512,
                           cache_dir: str | None = None, **overrides: Any) -> "CCCV1SemanticDecoder":
    """Factory of ``cccv1-semantic``: ``CCCV1SemanticDecoder`` with the dataset's ``"auto"`` configuration.

    ``head_dim`` is the width of the semantic projection heads; ``overrides`` are CCCV1Config fields
    (``hidden_dim`` there is the CCCV1 encoder's width; for example
    ``loss_weights={"semantic_infonce": 0.05, "semantic_cosine": 0.1}``).
    ``fast`` shrinks the network and the training as the ``cccv1`` method does.
    """
    cfg = get_config("auto", n_train=n_train, dataset=dataset_name, **overrides)
    if fast:
        cfg = cfg.replace(epochs=2, patience=1, hidden_dim=64, embed_dim=32)
        head_dim = min(int(head_dim), 64)
    return CCCV1SemanticDecoder(config=cfg, dataset=dataset_name, random_state=seed, device=device,
                                encoder=encoder, layers=layers, head_dim=head_dim, cache_dir=cache_dir)


register_method(
    SEMANTIC_METHOD, cccv1_semantic_factory, estimator=CCCV1SemanticDecoder, in_all=False, extra="semantic",
    label="CCCV1-semantic", check=check_config_options,
    sklearn_xfail=images_only("check_regressor_data_not_an_array", *TRANSFORMER_CHECKS),
    options=options_from_dataclass(CCCV1Config) + tuple(
        o for o in options_from_estimator(CCCV1SemanticDecoder) if o.name in ("device", "encoder", "layers",
                                                                              "head_dim")),
    description="CCCV1 + CLIP-style InfoNCE and cosine alignment of its embedding to EfficientNet-Lite0 "
                "features (block10 + final), pixel MSE unchanged",
)
