"""Baseline decoders of the benchmark: mean image, ridge, brain-diffuser-lite, mindvis-lite."""

from cortexflow.baselines.brain_diffuser_lite import BrainDiffuserLite
from cortexflow.baselines.mean_image import MeanImageDecoder
from cortexflow.baselines.mindvis_lite import MindVisLite
from cortexflow.baselines.ridge import RidgeDecoder

__all__ = ["MeanImageDecoder", "RidgeDecoder", "BrainDiffuserLite", "MindVisLite"]
