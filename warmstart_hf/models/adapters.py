"""Which weights of a pretrained classifier a finetuning phase trains: all (``full``), LoRA adapters
plus the head (``lora``, peft), or the head alone (``linear``).

LoRA is injected into the timm network in place (``peft.inject_adapter_in_model``) rather than
wrapped in a ``PeftModel``: the classifier stays a ``TimmImageClassifier``, so the Trainer's
checkpoints hold every tensor (adapters, head, BatchNorm buffers) and an interrupted phase resumes
exactly. :func:`merged_copy` folds the adapters into the weights with peft's own ``merge`` and gives
the plain model every phase directory holds, loadable with the Auto classes.
"""

from __future__ import annotations

import copy
import re

import torch
from peft import LoraConfig, inject_adapter_in_model
from peft.tuners.lora import LoraLayer
from torch import nn

from warmstart_hf.models.classifier import TimmImageClassifier

LORA_MARK = "lora_"


def head_names(model: TimmImageClassifier) -> list[str]:
    """Parameter names (in ``model``) of the classifier head."""
    head = model.timm_model.get_classifier()
    return [
        f"timm_model.{n}.{p}" for n, m in model.timm_model.named_modules() if m is head for p, _ in m.named_parameters()
    ]


def lora_targets(model: TimmImageClassifier, pattern: str | None) -> list[str]:
    """Module names of the timm network that get adapters: ``pattern`` (a full-match regex) or every
    Conv2d and Linear outside the head."""
    head = model.timm_model.get_classifier()
    inside_head = {id(m) for m in head.modules()}
    names = [
        name
        for name, module in model.timm_model.named_modules()
        if isinstance(module, (nn.Conv2d, nn.Linear)) and id(module) not in inside_head
    ]
    return [n for n in names if re.fullmatch(pattern, n)] if pattern else names


def add_lora(model: TimmImageClassifier, rank: int, alpha: float, pattern: str | None, seed: int):
    """Adapters (A drawn from ``seed``, B zero: the model's function is unchanged) on the targets; only
    adapters and head train (give the model ``frozen_norm_stats`` to freeze BatchNorm statistics too)."""
    targets = lora_targets(model, pattern)
    if not targets:
        raise ValueError(f"lora_target_modules {pattern!r} matches no Conv2d or Linear of {model.config.timm_model}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        # as one regex (peft full-matches a string; a list would also match every name ending in ".<target>")
        pattern = "|".join(map(re.escape, targets))
        inject_adapter_in_model(LoraConfig(r=rank, lora_alpha=alpha, target_modules=pattern), model.timm_model)
    trainable = set(head_names(model))
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(LORA_MARK in name or name in trainable)
    return model


def freeze_backbone(model: TimmImageClassifier) -> TimmImageClassifier:
    """The linear mode: only the head trains (with ``frozen_norm_stats``, BatchNorm statistics too)."""
    trainable = set(head_names(model))
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(name in trainable)
    return model


def has_lora(model: nn.Module) -> bool:
    return any(isinstance(m, LoraLayer) for m in model.modules())


def merged_copy(model: TimmImageClassifier) -> TimmImageClassifier:
    """A plain ``TimmImageClassifier`` computing what ``model`` computes, adapters folded in (peft's
    merge); ``model`` itself is left as it is."""
    if not has_lora(model):
        return model
    work = copy.deepcopy(model)
    for module in work.modules():
        if isinstance(module, LoraLayer):
            module.merge(safe_merge=True)
    state = {k.replace(".base_layer.", "."): v for k, v in work.state_dict().items() if LORA_MARK not in k}
    config = copy.deepcopy(model.config)
    with torch.device("meta"):
        plain = TimmImageClassifier(config)
    plain.load_state_dict(state, strict=True, assign=True)
    return plain.train(model.training)
