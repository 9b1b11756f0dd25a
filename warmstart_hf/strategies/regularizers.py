"""Warm start with a regularizer added to the training loss."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from warmstart_hf.strategies.base import PhaseContext, PhaseStart, Strategy
from warmstart_hf.strategies.registry import register_strategy


def l2_init_penalty(init_state: dict[str, torch.Tensor], lam: float) -> Callable[[nn.Module], torch.Tensor]:
    """``lam * sum_p ||theta_p - theta0_p||^2`` over all parameters: the sum of squares (Kumar et al.),
    not DASH's squared sum of norms nor Hare & Tortoise's last-tensor-only version."""
    cache: dict[str, torch.Tensor] = {}

    def penalty(model: nn.Module) -> torch.Tensor:
        total = None
        for name, param in model.named_parameters():
            anchor = cache.get(name)
            if anchor is None or anchor.device != param.device:
                anchor = cache[name] = init_state[name].to(param.device, param.dtype)
            term = (param - anchor).pow(2).sum()
            total = term if total is None else total + term
        return lam * total

    return penalty


@register_strategy("l2_init")
class L2Init(Strategy):
    """Warm start plus ``l2_init_lam * ||theta - theta0||^2`` in every phase's loss (default lam 1e-2).
    Optimizer: reset unless ``optimizer_state: carry``."""

    reference = "Kumar et al. 2023, L2 regularization toward the initialization (L2 Init)"
    tasks = ("classification", "causal_lm")

    def prepare(self, ctx: PhaseContext) -> PhaseStart:
        return PhaseStart(
            model=ctx.previous_model,
            carry_optimizer_state=self.carries_optimizer_state(),
            regularizer=l2_init_penalty(ctx.init_state, self.options.l2_init_lam),
            stats={"l2_init_lam": self.options.l2_init_lam},
        )
