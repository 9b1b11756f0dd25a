"""Plasticity diagnostics (Dohare et al. 2024, Nature; DASH, Shin et al. 2024), computed at the end
of each phase on a fixed sample of the phase's training images (the classes seen so far, without
augmentation), as Dohare et al. do.

- dormant units (Dohare et al.: 1,000 samples, threshold 0.01): the fraction of units (channels of
  every ReLU output) whose fraction of non-zero (sample x position) entries is below 1%;
- effective rank of the penultimate features: exp(entropy of the normalized singular values);
- "stable rank" as Dohare / Hare & Tortoise use it: how many singular values cover 99% of their sum;
- weight magnitude (mean |theta|), distances from theta0 and from the previous phase's weights;
- gradient norm of the mean loss on the previous phases' data vs on the new chunk, at the start of a
  phase (DASH's gradient-imbalance probe).
"""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from warmstart_hf.data.pixels import iter_pixel_batches
from warmstart_hf.models.aid import AID


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
def activation_diagnostics(
    model: nn.Module, pixels, batch_size: int | None = None, threshold: float = 0.01, transform=None
) -> dict:
    """Dormant-unit fractions and feature ranks of ``model`` on a fixed sample of training images.

    As Dohare et al.'s analysis: a copy of the model in train mode (their code never calls ``eval``,
    so BatchNorm uses the sample's statistics; the model itself is left untouched), the whole sample
    in one batch unless ``batch_size`` is given. A unit is a channel of a ReLU output (the stem's, and
    each block's first and post-residual ReLU; for an AID layer, the ReLU of its input, with the layer
    at its deterministic mean and no mask drawn); the last ReLU's output is average-pooled first, as
    their penultimate features are. ``dormant_fraction``: units whose fraction of non-zero entries
    over (sample x spatial position) is below ``threshold``. ``dormant_fraction_spatial_mean`` (the
    earlier, looser definition): units whose spatial mean is > 0 on fewer than ``threshold`` of the
    samples; a channel active at one position of every image is dormant for Dohare, not for it.
    ``transform`` (a batch transform) gives the evaluation view of stored images (a centre crop).
    """
    probe = copy.deepcopy(model).train()
    relus = [m for m in probe.modules() if isinstance(m, (nn.ReLU, AID))]
    for module in relus:  # AID (aid strategy): its mean, no draw from the training RNG; units counted as ReLU's
        module.eval()
    nonzero: dict[int, torch.Tensor] = {}
    sample_active: dict[int, torch.Tensor] = {}
    entries = dict.fromkeys(range(len(relus)), 0)

    def hook(index: int):
        def record(module, inputs, output):
            output = F.relu(inputs[0]) if isinstance(module, AID) else output  # a unit is active where x > 0
            pooled = output.flatten(2).mean(-1) if output.dim() > 2 else output
            per_entry = pooled if index == len(relus) - 1 else output  # the last one pooled, as Dohare
            other = [d for d in range(per_entry.dim()) if d != 1]  # count per channel without a transposed copy
            nonzero[index] = nonzero.get(index, 0) + (per_entry != 0).sum(other).double().cpu()
            entries[index] += per_entry.numel() // per_entry.shape[1]
            sample_active[index] = sample_active.get(index, 0) + (pooled > 0).sum(0).double().cpu()

        return record

    handles = [module.register_forward_hook(hook(i)) for i, module in enumerate(relus)]
    features, count = [], 0
    try:
        for x, _ in iter_pixel_batches(pixels, batch_size or len(pixels)):
            x = x.to(_device(probe))
            features.append(probe.forward_features(transform(x) if transform else x).float().cpu())
            count += len(x)
    finally:
        for handle in handles:
            handle.remove()
    dohare = torch.cat([nonzero[i] / entries[i] for i in sorted(nonzero)]) if nonzero else torch.zeros(0)
    spatial_mean = torch.cat([sample_active[i] / count for i in sorted(sample_active)]) if nonzero else dohare
    effective_rank, stable_rank = _rank_measures(torch.cat(features))
    dormant = lambda fractions: float((fractions < threshold).double().mean()) if len(fractions) else None  # noqa: E731
    return {
        "dormant_fraction": dormant(dohare),
        "dormant_fraction_spatial_mean": dormant(spatial_mean),
        "effective_rank": effective_rank,
        "stable_rank": stable_rank,
        "num_units": int(len(dohare)),
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


def gradient_norm(model: nn.Module, pixels, batch_size: int = 256, transform=None) -> float | None:
    """L2 norm of the gradient of the mean cross-entropy over ``pixels`` (eval mode; the model's own
    gradients are left as they were; ``transform``: the evaluation view of stored images)."""
    if pixels is None or len(pixels) == 0:
        return None
    was_training = model.training
    model.eval()
    params = [p for p in model.parameters() if p.requires_grad]
    grads = [torch.zeros_like(p) for p in params]
    total = len(pixels)
    try:
        for x, y in iter_pixel_batches(pixels, batch_size):
            x = x.to(_device(model))
            logits = model(transform(x) if transform else x).logits
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
