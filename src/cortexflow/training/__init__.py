"""Training: typed configurations and the one epoch loop (:mod:`cortexflow.training.loop`) and its trainers."""

from cortexflow.training.config import PRESETS, CCCV1Config, TrainingConfig, get_config, pattern_for_size
from cortexflow.training.devices import resolve_device
from cortexflow.training.trainer import TrainResult, train_model

__all__ = ["CCCV1Config", "TrainingConfig", "PRESETS", "TrainResult", "get_config", "pattern_for_size", "resolve_device", "train_model"]
