"""Plasticity diagnostics (REFERENCES 5), computed on a fixed sample at the end of each phase.

- dormant units: the fraction of units (channels of every ReLU output; a unit is active on an input
  when its spatially averaged activation is > 0) that are active on fewer than 1% of the inputs
  (Dohare et al.: 1,000 samples, threshold 0.01);
- effective rank of the penultimate features: exp(entropy of the normalized singular values);
- "stable rank" as Dohare / Hare & Tortoise use it: how many singular values cover 99% of their sum;
- weight magnitude (mean |theta|), distances from theta0 and from the previous phase's weights;
- gradient norm of the mean loss on the previous phases' data vs on the new chunk, at the start of a
  phase (DASH's gradient-imbalance probe).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from warmstart_hf.data.pixels import iter_pixel_batches


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _rank_measures(features: torch.Tensor) -> tuple[float, int]:
    s = torch.linalg.svdvals(features.double())
    total = s.sum()
    if total <= 0:
        return 0.0, 0
    p = s / total
    entropy = -(p[p > 0] * p[p > 0].log()).sum()
    stable = int(torch.searchsorted(torch.cumsum(p, 0), torch.tensor(0.99, dtype=p.dtype)).item()) + 1
    return float(entropy.exp()), min(stable, len(s))


@torch.no_grad()
def activation_diagnostics(model: nn.Module, pixels, batch_size: int = 256, threshold: float = 0.01) -> dict:
    """Dormant-unit fraction and feature ranks of ``model`` (eval mode) on a pixel dataset."""
    was_training = model.training
    model.eval()
    active_counts: dict[int, torch.Tensor] = {}
    handles = []

    def hook(index):
        def record(_module, _inputs, output):
            unit_activity = output.flatten(2).mean(-1) if output.dim() > 2 else output
            counts = (unit_activity > 0).sum(0).double().cpu()
            active_counts[index] = active_counts.get(index, 0) + counts

        return record

    for index, module in enumerate(m for m in model.modules() if isinstance(m, nn.ReLU)):
        handles.append(module.register_forward_hook(hook(index)))
    features = []
    count = 0
    try:
        for x, _ in iter_pixel_batches(pixels, batch_size):
            x = x.to(_device(model))
            features.append(model.forward_features(x).float().cpu())
            count += len(x)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    fractions = torch.cat([c / count for c in active_counts.values()]) if active_counts else torch.zeros(0)
    effective_rank, stable_rank = _rank_measures(torch.cat(features))
    return {
        "dormant_fraction": float((fractions < threshold).double().mean()) if len(fractions) else None,
        "effective_rank": effective_rank,
        "stable_rank": stable_rank,
        "num_units": int(len(fractions)),
        "num_samples": count,
    }


def weight_diagnostics(
    model: nn.Module, init_state: dict[str, torch.Tensor], previous: torch.Tensor | None
) -> dict[str, float | None]:
    """Mean |theta|, L2 distance to theta0 and to the previous phase's final parameters."""
    names = [n for n, _ in model.named_parameters()]
    current = torch.cat([p.detach().float().reshape(-1).cpu() for p in model.parameters()])
    init = torch.cat([init_state[n].float().reshape(-1).cpu() for n in names])
    return {
        "mean_abs_weight": float(current.abs().mean()),
        "distance_from_init": float(torch.linalg.vector_norm(current - init)),
        "distance_from_previous_phase": float(torch.linalg.vector_norm(current - previous))
        if previous is not None
        else None,
    }


def gradient_norm(model: nn.Module, pixels, batch_size: int = 256) -> float | None:
    """L2 norm of the gradient of the mean cross-entropy over ``pixels`` (eval mode; the model's own
    gradients are left as they were)."""
    if pixels is None or len(pixels) == 0:
        return None
    was_training = model.training
    model.eval()
    params = [p for p in model.parameters() if p.requires_grad]
    grads = [torch.zeros_like(p) for p in params]
    total = len(pixels)
    try:
        for x, y in iter_pixel_batches(pixels, batch_size):
            logits = model(x.to(_device(model))).logits
            loss = F.cross_entropy(logits.float(), y.to(logits.device), reduction="sum") / total
            for acc, g in zip(grads, torch.autograd.grad(loss, params, allow_unused=True)):
                if g is not None:
                    acc.add_(g)
    finally:
        model.train(was_training)
    return float(torch.sqrt(sum((g.float() ** 2).sum() for g in grads)))


def diagnostic_sample(num_examples: int, size: int, seed: int) -> list[int]:
    """A fixed, seeded sample of ``size`` indices (all when ``size`` >= ``num_examples``)."""
    if size >= num_examples:
        return list(range(num_examples))
    return sorted(np.random.default_rng(seed).choice(num_examples, size=size, replace=False).tolist())
