"""Networks (registered by name) and the scikit-learn-style decoders built on them."""

from cortexflow.models.cccv1 import CCCV1
from cortexflow.models.registry import MODELS, build_model, list_models, register_model

__all__ = ["CCCV1", "MODELS", "build_model", "list_models", "register_model"]
