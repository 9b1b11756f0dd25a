"""Partial resets combined with a warm start: re-initialize the head, or the last k stages/blocks."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from warmstart_hf.strategies.base import PhaseContext, PhaseStart, Strategy
from warmstart_hf.strategies.modules import head_module_name, in_module, residual_units
from warmstart_hf.strategies.registry import register_strategy


@torch.no_grad()
def reinitialize(model: nn.Module, fresh_model: nn.Module, module_names: list[str]) -> dict[str, Any]:
    """Copy the parameters AND buffers of ``module_names`` from ``fresh_model`` (a new default
    initialization of the same architecture) into ``model``; returns which tensors were reset."""
    fresh = fresh_model.state_dict()
    reset = []
    for key, tensor in model.state_dict().items():
        if any(in_module(key, name) for name in module_names):
            tensor.copy_(fresh[key].to(tensor.device, tensor.dtype))
            reset.append(key)
    if not reset:
        raise ValueError(f"no tensors found under {module_names}")
    return {"reset_modules": module_names, "num_tensors_reset": len(reset)}


class _WarmWithReset(Strategy):
    def modules_to_reset(self, model: nn.Module) -> list[str]:
        raise NotImplementedError

    def prepare(self, ctx: PhaseContext) -> PhaseStart:
        stats: dict[str, Any] = {}
        if ctx.phase > 0:
            stats = reinitialize(ctx.previous_model, ctx.fresh_model(), self.modules_to_reset(ctx.previous_model))
        return PhaseStart(model=ctx.previous_model, carry_optimizer_state=self.carries_optimizer_state(), stats=stats)


@register_strategy("reset_head")
class ResetHead(_WarmWithReset):
    """Warm start with the classifier re-initialized (a fresh default draw) before every phase after
    the first. Optimizer: reset unless ``optimizer_state: carry``."""

    reference = "head reset (e.g. Ash & Adams 2020 discussion; Berariu et al. 2021 with k = head)"

    def modules_to_reset(self, model: nn.Module) -> list[str]:
        return [head_module_name(model)]


@register_strategy("reset_last_k")
class ResetLastK(_WarmWithReset):
    """Warm start with the last ``reset_k`` residual stages (``reset_unit: stage``) or blocks
    (``block``) AND the head re-initialized before every phase after the first (Berariu et al.
    2021: reset the layers closest to the output). Optimizer: reset unless ``optimizer_state: carry``."""

    reference = "Berariu et al. 2021, reset of the last k layers"

    def modules_to_reset(self, model: nn.Module) -> list[str]:
        units = residual_units(model, self.options.reset_unit)
        k = self.options.reset_k
        if k > len(units):
            raise ValueError(f"reset_k={k} but the model has only {len(units)} {self.options.reset_unit}s")
        return units[-k:] + [head_module_name(model)]
