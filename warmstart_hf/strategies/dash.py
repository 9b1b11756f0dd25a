"""DASH: direction-aware shrinking (Shin et al., 2024), as the official code computes it."""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from warmstart_hf.distributed import broadcast_module
from warmstart_hf.strategies.base import PhaseContext, PhaseStart, Strategy
from warmstart_hf.strategies.modules import WEIGHT_LAYERS
from warmstart_hf.strategies.registry import register_strategy


def _logits(output) -> torch.Tensor:
    return output.logits if hasattr(output, "logits") else output


def _shrink_factors(grad: torch.Tensor, weight: torch.Tensor, lam: float, granularity: str) -> torch.Tensor:
    """clamp(cos(G, W), lam, 1) per kernel slice (out, in) or per output filter/row, shaped to broadcast."""
    if weight.dim() == 1:  # bias: ONE scalar for the whole vector
        cos = F.cosine_similarity(grad.flatten(), weight.flatten(), dim=0)
        return cos.clamp(min=lam, max=1.0)
    if weight.dim() > 2 and granularity == "kernel":  # conv: (O, I, k...) -> one factor per (o, i)
        g, w = grad.flatten(2), weight.flatten(2)
        cos = F.cosine_similarity(g, w, dim=2)  # (O, I)
        return cos.clamp(min=lam, max=1.0).view(*cos.shape, *([1] * (weight.dim() - 2)))
    g, w = grad.flatten(1), weight.flatten(1)  # linear rows, or conv filters with granularity="filter"
    cos = F.cosine_similarity(g, w, dim=1)
    return cos.clamp(min=lam, max=1.0).view(-1, *([1] * (weight.dim() - 1)))


def dash(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    *,
    alpha: float = 0.3,
    lam: float = 0.3,
    granularity: str = "kernel",
    micro_batch_size: int | None = None,
) -> dict[str, Any]:
    """Direction-aware shrinking of ``model`` in place; returns per-layer statistics.

    As the official DASH code: on a deep copy of the model in eval mode (BatchNorm uses its running
    statistics), for each batch in order, ``G <- (1 - alpha) G + alpha * (-grad)`` of the batch's mean
    cross-entropy, for the weight and bias of every Conv/Linear layer (G starts at 0). Then, on the
    real model, each weight group is multiplied by ``clamp(cos(G, W), min=lam, max=1)``: per
    (output, input) kernel slice for conv weights (``granularity="filter"``: per output filter, the
    third-party variant), per output row for linear weights, ONE scalar per bias vector. BatchNorm
    and the optimizer state are untouched. ``batches`` yields ``(pixel_values, labels)``; each
    batch's gradient may be accumulated over ``micro_batch_size`` slices (exact, since eval mode
    makes examples independent). With several processes, rank 0's result is broadcast.
    """
    if granularity not in ("kernel", "filter"):
        raise ValueError(f"granularity must be 'kernel' or 'filter', not {granularity!r}")
    device = next(model.parameters()).device
    probe = copy.deepcopy(model).eval()
    layers = {name: m for name, m in probe.named_modules() if isinstance(m, WEIGHT_LAYERS)}
    ema: dict[str, torch.Tensor] = {}
    num_batches = 0
    for pixel_values, labels in batches:
        num_batches += 1
        probe.zero_grad(set_to_none=True)
        count = len(labels)
        step = micro_batch_size or count
        for start in range(0, count, step):
            x = pixel_values[start : start + step].to(device)
            y = labels[start : start + step].to(device)
            loss = F.cross_entropy(_logits(probe(x)).float(), y, reduction="sum") / count
            loss.backward()
        for name, layer in layers.items():
            for pname, param in layer.named_parameters(recurse=False):
                key = f"{name}.{pname}"
                grad = param.grad if param.grad is not None else torch.zeros_like(param)
                ema[key] = (1 - alpha) * ema.get(key, torch.zeros_like(param)) + alpha * (-grad)
    del probe
    stats: dict[str, Any] = {"per_layer_mean_factor": {}, "per_layer_clamped_fraction": {}}
    clamped = total = 0
    params = dict(model.named_parameters())
    norm_before = float(torch.sqrt(sum((p.detach().float() ** 2).sum() for p in params.values())))
    with torch.no_grad():
        for key, grad in ema.items():
            weight = params[key]
            factors = _shrink_factors(grad, weight, lam, granularity)
            weight.mul_(factors)
            flat = factors.flatten()
            stats["per_layer_mean_factor"][key] = float(flat.mean())
            at_lam = int((flat <= lam + 1e-12).sum())
            stats["per_layer_clamped_fraction"][key] = at_lam / flat.numel()
            clamped += at_lam
            total += flat.numel()
    broadcast_module(model)
    stats.update(
        norm_before=norm_before,
        norm_after=float(torch.sqrt(sum((p.detach().float() ** 2).sum() for p in params.values()))),
        clamped_fraction=clamped / max(total, 1),
        num_batches=num_batches,
    )
    return stats


@register_strategy("dash")
class Dash(Strategy):
    """Warm start with DASH once at the start of every phase after the first, before training.

    The gradient estimate runs over ALL data seen so far (the new chunk included), in fixed order
    with the newest chunk last, without augmentation, in batches of one chunk's size. Reads
    ``dash_alpha`` (0.3), ``dash_lam`` (0.3), ``dash_granularity`` (kernel | filter),
    ``dash_micro_batch_size`` and ``optimizer_state`` (default carry: the official code keeps the
    optimizer and its state).
    """

    reference = "DASH, official code of Shin et al. 2024 (granularity: filter = third-party variant)"
    default_optimizer_state = "carry"

    def prepare(self, ctx: PhaseContext) -> PhaseStart:
        stats: dict[str, Any] = {}
        if ctx.phase > 0:
            o = self.options
            batch_size = len(ctx.new_indices)
            stats = dash(
                ctx.previous_model,
                ctx.seen_batches(batch_size),
                alpha=o.dash_alpha,
                lam=o.dash_lam,
                granularity=o.dash_granularity,
                micro_batch_size=o.dash_micro_batch_size,
            )
            stats["batch_size"] = batch_size
        return PhaseStart(model=ctx.previous_model, carry_optimizer_state=self.carries_optimizer_state(), stats=stats)
