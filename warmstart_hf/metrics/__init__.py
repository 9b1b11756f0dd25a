"""Metrics: the offline accuracy module and the per-phase evaluation built on it."""

from warmstart_hf.metrics.evaluation import accuracy, load_accuracy_metric, phase_metrics

__all__ = ["accuracy", "load_accuracy_metric", "phase_metrics"]
