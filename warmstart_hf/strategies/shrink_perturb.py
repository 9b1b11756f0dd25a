"""Shrink & Perturb in its published forms, behind one explicit ``mode``."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from warmstart_hf.distributed import broadcast_module
from warmstart_hf.strategies.base import PhaseContext, PhaseStart, Strategy
from warmstart_hf.strategies.modules import NORM_LAYERS, WEIGHT_LAYERS, head_module_name, in_module
from warmstart_hf.strategies.registry import register_strategy

DEFAULT_SHRINK = {"gaussian": 0.3, "fresh_init": 0.4}


def _norm(tensors) -> float:
    return float(torch.sqrt(sum((t.detach().float() ** 2).sum() for t in tensors)))


@torch.no_grad()
def shrink_perturb(
    model: nn.Module,
    *,
    mode: str,
    shrink: float | None = None,
    noise: float = 0.01,
    perturb: float = 0.1,
    interpolation: float = 0.8,
    head_interpolation: float | None = None,
    include_norm: bool = False,
    fresh_model: nn.Module | None = None,
    init_state: dict[str, torch.Tensor] | None = None,
    generator: torch.Generator | None = None,
) -> dict[str, Any]:
    """Shrink & Perturb ``model`` in place and return what it did.

    - ``gaussian`` (Ash & Adams 2020 paper; DASH repo ``sp``): ``W <- shrink * W + N(0, noise^2)`` on
      the weights and biases of conv/linear layers (and BatchNorm gamma/beta if ``include_norm``; of a
      language model: every linear layer, its embeddings and RMSNorm weights kept);
      BatchNorm buffers untouched. Defaults shrink 0.3, noise 0.01 (DASH repo). Noise is drawn on
      the CPU from ``generator``, in parameter order, so every process draws the same.
    - ``fresh_init`` (Ash & Adams code): ``theta <- shrink * theta + perturb * theta_fresh`` for every
      parameter, BatchNorm gamma/beta included, with ``theta_fresh`` from ``fresh_model`` (a new
      default initialization of the same architecture); BatchNorm running statistics are taken
      from the fresh model. Defaults shrink 0.4, perturb 0.1.
    - ``interpolate_init`` (Hare & Tortoise; FIRE): ``theta <- (1 - c) theta + c theta0`` with
      ``c = interpolation`` (0.8) and ``head_interpolation`` for the classifier head; theta0 from
      ``init_state``; no noise; buffers untouched.
    """
    params = dict(model.named_parameters())
    before = {name: p.detach().clone() for name, p in params.items()}
    if mode == "gaussian":
        shrink = DEFAULT_SHRINK["gaussian"] if shrink is None else shrink
        layer_types = WEIGHT_LAYERS + (NORM_LAYERS if include_norm else ())
        touched = []
        for module_name, module in model.named_modules():
            if not isinstance(module, layer_types):
                continue
            for pname, param in module.named_parameters(recurse=False):
                draw = torch.randn(param.shape, generator=generator, dtype=torch.float32)
                param.mul_(shrink).add_(draw.to(param.device, param.dtype), alpha=noise)
                touched.append(f"{module_name}.{pname}" if module_name else pname)
    elif mode == "fresh_init":
        if fresh_model is None:
            raise ValueError("shrink_perturb(mode='fresh_init') needs fresh_model")
        shrink = DEFAULT_SHRINK["fresh_init"] if shrink is None else shrink
        fresh = dict(fresh_model.named_parameters())
        for name, param in params.items():
            param.mul_(shrink).add_(fresh[name].to(param.device, param.dtype), alpha=perturb)
        fresh_modules = dict(fresh_model.named_modules())
        for module_name, module in model.named_modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                for bname, buffer in module.named_buffers(recurse=False):
                    buffer.copy_(getattr(fresh_modules[module_name], bname))
        touched = list(params)
    elif mode == "interpolate_init":
        if init_state is None:
            raise ValueError("shrink_perturb(mode='interpolate_init') needs init_state (theta0)")
        head = head_module_name(model)
        c_head = interpolation if head_interpolation is None else head_interpolation
        for name, param in params.items():
            c = c_head if in_module(name, head) else interpolation
            param.mul_(1 - c).add_(init_state[name].to(param.device, param.dtype), alpha=c)
        touched = list(params)
    else:
        raise ValueError(f"unknown Shrink & Perturb mode {mode!r}: gaussian, fresh_init or interpolate_init")
    broadcast_module(model)
    per_layer = {
        name: _norm([params[name]]) / max(_norm([before[name]]), 1e-12) for name in touched if name.endswith("weight")
    }
    return {
        "mode": mode,
        "norm_before": _norm(before.values()),
        "norm_after": _norm(p for p in params.values()),
        "per_layer_norm_ratio": per_layer,
        "num_tensors_touched": len(touched),
    }


@register_strategy("shrink_perturb")
class ShrinkPerturb(Strategy):
    """Warm start, then Shrink & Perturb before every phase after the first.

    Reads ``sp_mode`` (gaussian | fresh_init | interpolate_init), ``sp_shrink``, ``sp_noise``,
    ``sp_perturb``, ``sp_interpolation``, ``sp_head_interpolation``, ``sp_include_norm``,
    ``sp_apply_before_first_phase`` and ``optimizer_state``. Optimizer defaults follow each
    reference: ``gaussian`` keeps it (DASH repo), ``fresh_init`` and ``interpolate_init`` reset it
    (Ash & Adams code re-creates it; FIRE / Hare & Tortoise reset it).
    """

    reference = "Ash & Adams 2020 (paper: gaussian; code: fresh_init); DASH repo sp; Hare & Tortoise / FIRE"
    tasks = ("classification", "causal_lm")  # causal_lm: the decoder's linear layers (embeddings and norms kept)

    @property
    def default_optimizer_state(self) -> str:  # type: ignore[override]
        return "carry" if self.options.sp_mode == "gaussian" else "reset"

    def prepare(self, ctx: PhaseContext) -> PhaseStart:
        o = self.options
        apply = ctx.phase > 0 or (o.sp_mode == "fresh_init" and o.sp_apply_before_first_phase)
        stats: dict[str, Any] = {}
        if apply:
            stats = shrink_perturb(
                ctx.previous_model,
                mode=o.sp_mode,
                shrink=o.sp_shrink,
                noise=o.sp_noise,
                perturb=o.sp_perturb,
                interpolation=o.sp_interpolation,
                head_interpolation=o.sp_head_interpolation,
                include_norm=o.sp_include_norm,
                fresh_model=ctx.fresh_model() if o.sp_mode == "fresh_init" else None,
                init_state=ctx.init_state,
                generator=ctx.generator(),
            )
        return PhaseStart(model=ctx.previous_model, carry_optimizer_state=self.carries_optimizer_state(), stats=stats)
