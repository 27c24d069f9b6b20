"""Evaluation: reconstruction metrics (and, in later modules, statistics)."""

from cortexflow.evaluation.metrics import METRICS, evaluate_reconstructions, summarize

__all__ = ["METRICS", "evaluate_reconstructions", "summarize"]
