"""Networks (registered by name) and the scikit-learn-style decoders built on them."""

from cortexflow.models.cccv1 import CCCV1
from cortexflow.models.registry import MODELS, build_model, list_models, register_model
from cortexflow.models import frontends as _frontends  # noqa: F401,E402  (registers the eeg_* models)

__all__ = ["CCCV1", "MODELS", "build_model", "list_models", "register_model"]
