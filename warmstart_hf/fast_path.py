"""The opt-in fast path's execution choices: channels-last memory format and fused optimizer kernels.

Both change how the same computation runs, not what it computes (results equal the default path up to
floating-point reordering), so neither is part of a run's fingerprint. ``torch_compile`` /
``torch_compile_mode`` (``reduce-overhead``: CUDA graphs) are the Trainer's own fields.
"""

from __future__ import annotations

import inspect

import torch

from warmstart_hf.config import ConfigError, RecipeConfig, register_recipe_check

FUSABLE = (torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW)  # torch has a fused kernel for these


class FastPathError(ConfigError):
    """A fast-path option that does not apply to what the recipe trains (the scripts exit with status 2)."""


def to_channels_last(model: torch.nn.Module) -> torch.nn.Module:
    """4-D weights (convolutions) in NHWC; other tensors are unchanged."""
    return model.to(memory_format=torch.channels_last)


def channels_last_batch(pixels: torch.Tensor) -> torch.Tensor:
    """An image batch in NHWC (converting the uint8 batch is cheaper than letting the first convolution
    convert the float one)."""
    return pixels.contiguous(memory_format=torch.channels_last) if pixels.dim() == 4 else pixels


def fused(optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """The same optimizer (class, parameter groups, hyperparameters, no state yet) with torch's fused
    kernel. Rebuilt from its groups, so it applies alike to the Trainer's optimizer and a task's own."""
    cls = type(optimizer)
    if cls not in FUSABLE:
        names = ", ".join(c.__name__ for c in FUSABLE)
        raise FastPathError(
            f"Recipe field `fused_optimizer` is true, but this phase's optimizer is {cls.__name__}, which has no "
            f"fused kernel in torch (only {names}). Fix: set `fused_optimizer: false` or use optim sgd / adamw_torch."
        )
    if optimizer.state:
        raise FastPathError("fused(): the optimizer already has state; fuse it before its first step.")
    groups = [{**group, "fused": True, "foreach": None} for group in optimizer.param_groups]
    accepted = inspect.signature(cls.__init__).parameters  # AdamW's defaults hold a key its __init__ does not take
    defaults = {k: v for k, v in optimizer.defaults.items() if k in accepted}
    return cls(groups, **{**defaults, "fused": True, "foreach": None})


_FUSABLE_OPTIM = ("sgd", "adamw_torch", "adamw_torch_fused")  # the Trainer's names for SGD and AdamW


@register_recipe_check
def check_fast_path(config: RecipeConfig) -> None:
    optim = getattr(config.training.optim, "value", config.training.optim)
    # a task with its own optimizer (linear_probe: LARS) checks itself
    if config.incremental.fused_optimizer and optim not in _FUSABLE_OPTIM:
        raise ConfigError(
            f"Recipe field `fused_optimizer` is true, but `optim` is {optim!r}, which has no fused kernel in torch. "
            f"Fix: use optim {' / '.join(_FUSABLE_OPTIM)}, or set `fused_optimizer: false`."
        )
