"""Per-phase metrics (as Dohare et al. 2024 and the DASH code report them): accuracy over seen
classes with the full head and with masked logits, over the whole test set, per chunk or class group
(a row of the accuracy matrix R[i, j]), and the end-of-phase train accuracy and loss (one pass
without augmentation, not a mean over epochs, which is a quirk of the DASH code)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import evaluate
import numpy as np
import torch
import torch.nn.functional as F

from warmstart_hf.data.phases import PhasePlan

METRIC_DIR = Path(__file__).parent / "accuracy"


@lru_cache(maxsize=1)
def load_accuracy_metric() -> evaluate.EvaluationModule:
    return evaluate.load(str(METRIC_DIR))


def accuracy(predictions: np.ndarray, references: np.ndarray) -> float:
    return load_accuracy_metric().compute(predictions=predictions, references=references)["accuracy"]


def masked_predictions(logits: np.ndarray, seen: list[int]) -> np.ndarray:
    """Argmax over the seen classes only (logits masked to the classes learned so far, Dohare)."""
    masked = np.full_like(logits, -np.inf)
    masked[:, seen] = logits[:, seen]
    return masked.argmax(-1)


def phase_metrics(
    plan: PhasePlan,
    phase: int,
    train_logits: np.ndarray,
    train_labels: np.ndarray,
    test_logits: np.ndarray,
    test_labels: np.ndarray,
    mask_train: bool = False,
) -> dict[str, object]:
    """Metrics of one phase from logits over the phase's train set and the whole test set. With
    ``mask_train`` (a run trained on masked logits) the train accuracy and loss use masked logits too."""
    seen = plan.classes_seen(phase)
    seen_mask = np.isin(test_labels, seen)
    test_pred = test_logits.argmax(-1)
    masked_pred = masked_predictions(test_logits, seen)
    if mask_train:
        train_logits = np.where(np.isin(np.arange(train_logits.shape[1]), seen), train_logits, -np.inf)
    train_loss = F.cross_entropy(torch.from_numpy(train_logits).float(), torch.from_numpy(train_labels)).item()
    return {
        "classes_seen": len(seen),
        "train_accuracy": accuracy(train_logits.argmax(-1), train_labels),
        "train_loss": train_loss,
        "test_accuracy": accuracy(test_pred[seen_mask], test_labels[seen_mask]),
        "test_accuracy_masked": accuracy(masked_pred[seen_mask], test_labels[seen_mask]),
        "test_accuracy_full": accuracy(test_pred, test_labels),
        "accuracy_per_group": [accuracy(test_pred[g], test_labels[g]) for g in map(np.asarray, plan.test_groups)],
    }


@torch.no_grad()
def predict_logits(model: torch.nn.Module, pixels, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Logits and labels of ``model`` (eval mode) over a pixel dataset, without augmentation."""
    from warmstart_hf.data.pixels import iter_pixel_batches

    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    logits, labels = [], []
    for x, y in iter_pixel_batches(pixels, batch_size):
        logits.append(model(x.to(device)).logits.float().cpu())
        labels.append(y)
    model.train(was_training)
    return torch.cat(logits).numpy(), torch.cat(labels).numpy()


def companion_metrics(model, plan: PhasePlan, phase: int, train_pixels, test_pixels, batch_size: int) -> dict:
    """The accuracy fields of :func:`phase_metrics` for an extra model (e.g. the tortoise)."""
    train_logits, train_labels = predict_logits(model, train_pixels, batch_size)
    test_logits, test_labels = predict_logits(model, test_pixels, batch_size)
    metrics = phase_metrics(plan, phase, train_logits, train_labels, test_logits, test_labels)
    metrics.pop("classes_seen")
    return metrics
