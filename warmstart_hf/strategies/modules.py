"""Which parts of a network a strategy touches: weight layers, normalization layers, the head,
residual stages and blocks. Kept in one place so every strategy agrees on the names."""

from __future__ import annotations

from torch import nn
from transformers.pytorch_utils import Conv1D

# transformers' Conv1D is GPT-2's linear layer (weights stored transposed)
WEIGHT_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear, Conv1D)
NORM_LAYERS = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm)


def _timm_model(model: nn.Module) -> nn.Module:
    return getattr(model, "timm_model", model)


def _prefix(model: nn.Module) -> str:
    return "timm_model." if hasattr(model, "timm_model") else ""


def head_module_name(model: nn.Module) -> str:
    """Qualified name of the classifier: timm's ``get_classifier()``, else the last Linear layer."""
    inner = _timm_model(model)
    if hasattr(inner, "get_classifier"):
        head = inner.get_classifier()
        for name, module in model.named_modules():
            if module is head:
                return name
    linears = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    if not linears:
        raise ValueError("no classifier head found (no get_classifier() and no nn.Linear)")
    return linears[-1]


def residual_units(model: nn.Module, unit: str) -> list[str]:
    """Qualified names of the residual stages (``unit='stage'``) or blocks (``'block'``), in order."""
    inner = _timm_model(model)
    stages = [info["module"] for info in getattr(inner, "feature_info", []) if info["module"].startswith("layer")]
    if not stages:
        stages = [name for name, _ in inner.named_children() if name.startswith(("layer", "stages", "blocks"))]
    if not stages:
        raise ValueError("model has no residual stages (expected timm feature_info or layerN children)")
    prefix = _prefix(model)
    if unit == "stage":
        return [prefix + s for s in stages]
    blocks = []
    for stage in stages:
        module = inner.get_submodule(stage)
        blocks += [f"{prefix}{stage}.{child}" for child, _ in module.named_children()]
    return blocks


def in_module(param_name: str, module_name: str) -> bool:
    return param_name == module_name or param_name.startswith(module_name + ".")
