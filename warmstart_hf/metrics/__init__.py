"""Metrics: the offline accuracy module and the per-phase evaluation built on it."""

from warmstart_hf.metrics.evaluation import (
    accuracy,
    companion_metrics,
    load_accuracy_metric,
    phase_metrics,
    predict_logits,
)

__all__ = ["accuracy", "companion_metrics", "load_accuracy_metric", "phase_metrics", "predict_logits"]
