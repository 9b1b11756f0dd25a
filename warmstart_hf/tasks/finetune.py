"""Finetuning a pretrained network data-incrementally: the target study's Fig. 3 (Section 3.1).

The backbone loads from the recipe's ``pretrained`` (``warmstart_hf/models/pretrained.py``); the
head is a new seeded draw for the downstream classes. A cold start reloads the pretrained weights
(parameters and BatchNorm buffers) before every phase, with phase 0's head (``cold_head: same``,
the paper's cold) or a new head per phase (``fresh``); warm continues. Images are cropped to
``crop_size`` (224), from the full-resolution image in the DataLoader workers (``views: worker``) or
from squares stored at ``image_size`` on the device (``views: device``; ``warmstart_hf/tasks/views.py``):
RandomResizedCrop + flip for training, resize + centre crop for evaluation; ``augmentation: []``
trains on the evaluation view (the paper's ablation without augmentation). ``finetune_mode`` chooses
what trains: everything, LoRA adapters + head (peft), or the head alone; every phase directory holds
a plain merged model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from warmstart_hf.checkpoints import save_pretrained_atomic
from warmstart_hf.config import ConfigError, RecipeConfig, register_recipe_check
from warmstart_hf.models import TimmImageClassifier
from warmstart_hf.models.adapters import add_lora, freeze_backbone, has_lora, head_names, merged_copy
from warmstart_hf.models.pretrained import PretrainedWeights, finetune_config, load_pretrained, pretrained_classifier
from warmstart_hf.seeding import derive_seed
from warmstart_hf.tasks.base import TaskData
from warmstart_hf.tasks.classification import Classification
from warmstart_hf.tasks.registry import TASKS, register_task
from warmstart_hf.tasks.views import CroppedViews

LORA_STATE_FILE = "lora_state.safetensors"  # adapters + base + buffers, unmerged: what a warm phase continues


@dataclass
class FinetuneData(TaskData):
    pretrained: PretrainedWeights | None = None
    crop_size: int = 224


@register_task("finetune")
class Finetune(CroppedViews, Classification):
    """A pretrained timm network finetuned phase after phase (full, LoRA or linear); accuracy as the
    classification task's; ``start_distance_to_pretrained`` in every record."""

    needs_pretrained = True

    def prepare(self) -> FinetuneData:
        weights = load_pretrained(self.config.model.pretrained)  # fails fast, before any decoding
        d, inc, mode = self.config.data, self.config.incremental, self.config.model.finetune_mode
        crop = inc.crop_size or weights.input_size
        if weights.num_channels != d.num_channels or crop > d.image_size:
            raise ConfigError(
                f"Recipe fields `num_channels` / `image_size` / `crop_size` have values {d.num_channels} / "
                f"{d.image_size} / {crop}, but the pretrained network takes {weights.num_channels} channels and the "
                "crop must fit the stored image. Fix: set num_channels to the network's, and image_size >= crop_size "
                "(e.g. 256 for 224)."
            )
        source, plan = self._source_and_plan()
        train, test, validation = self._decode(source, crop)
        names = source["train"].features["label"].names
        config = finetune_config(weights, names, image_size=crop, frozen_norm_stats=mode != "full")
        return FinetuneData(plan, train, test, config, validation, pretrained=weights, crop_size=crop)

    def _build(self, data: FinetuneData, seed: int, phase: int | None = None) -> TimmImageClassifier:
        """Pretrained backbone + head (and adapters) drawn from the arm seed (and ``phase``, if given)."""
        key = ("finetune",) if phase is None else ("finetune", phase)
        model = pretrained_classifier(data.pretrained, data.model_config, derive_seed(seed, *key, "head"))
        return self._apply_mode(model, derive_seed(seed, *key, "lora"))

    def _apply_mode(self, model: TimmImageClassifier, lora_seed: int) -> TimmImageClassifier:
        m = self.config.model
        if m.finetune_mode == "linear":
            return freeze_backbone(model)
        if m.finetune_mode == "lora":
            return add_lora(model, m.lora_rank, m.lora_alpha, m.lora_target_modules, lora_seed)
        return model

    def initial_model(self, data: FinetuneData, seed: int) -> nn.Module:
        return self._build(data, seed)

    def fresh_model(self, data: FinetuneData, seed: int, phase: int) -> nn.Module:
        """The cold start: the pretrained weights reloaded, phase 0's head or a new draw (``cold_head``)."""
        return self._build(data, seed, None if self.config.model.cold_head == "same" else phase)

    def load_model(self, directory: Path) -> nn.Module:
        model = self._apply_mode(TimmImageClassifier.from_pretrained(directory), 0)
        if self.config.model.finetune_mode != "lora":
            return model
        state = directory / LORA_STATE_FILE
        if not state.exists():  # the merged model alone would continue another parameterisation
            raise FileNotFoundError(
                f"{state} is missing: a LoRA phase continues from its unmerged adapters. Delete the phase's line "
                "from results.jsonl (and the phase directory) to train that phase again."
            )
        model.load_state_dict(load_file(str(state)), strict=True)  # adapters rebuilt, then every tensor as saved
        return model

    def save_initial_model(self, model: nn.Module, directory: Path) -> None:
        save_pretrained_atomic(merged_copy(model), directory)

    def save_phase_model(self, trainer, directory: Path) -> None:
        """A plain model (adapters merged); with LoRA also the unmerged state a warm phase continues."""
        if not has_lora(trainer.model):
            return super().save_phase_model(trainer, directory)
        if trainer.args.should_save:
            merged_copy(trainer.model).save_pretrained(directory)
            tensors = {k: v.detach().cpu().contiguous() for k, v in trainer.model.state_dict().items()}
            save_file(tensors, str(directory / LORA_STATE_FILE))

    def start_record(self, model: nn.Module, data: FinetuneData, phase: int) -> dict[str, Any]:
        return {"start_distance_to_pretrained": distance_to_pretrained(model, data.pretrained)}


def distance_to_pretrained(model: TimmImageClassifier, weights: PretrainedWeights) -> float:
    """L2 distance of the model's effective backbone parameters (adapters merged; head and BatchNorm
    buffers excluded) to the pretrained ones: 0 exactly at a cold start."""
    plain = merged_copy(model)
    head = set(head_names(plain))
    squared = torch.zeros((), dtype=torch.float64)
    for name, parameter in plain.named_parameters():
        if name in head:
            continue
        reference = weights.backbone[name.removeprefix("timm_model.")]
        squared += (parameter.detach().double().cpu() - reference.double()).pow(2).sum()
    return float(squared.sqrt())


def _check_finetune_options(config: RecipeConfig) -> None:
    """Options that finetuning replaces or cannot serve fail rather than being ignored."""
    m, s, tr = config.model, config.strategy, config.training
    replaced = {"init_from": m.init_from, "image_mean": m.image_mean, "image_std": m.image_std}
    for name, value in replaced.items():
        if value is not None:
            raise ConfigError(
                f"Recipe field `{name}` has value {value!r}, but task finetune takes the starting weights and the "
                f"normalisation from `pretrained`. Fix: remove `{name}`."
            )
    if s.cold_init == "same" and m.cold_head == "fresh":
        raise ConfigError(
            "Recipe field `cold_head` has value 'fresh', but `cold_init: same` restores phase 0's start, head "
            "included. Fix: use cold_init: fresh (the default) with cold_head: fresh."
        )
    if m.finetune_mode == "lora" and tr.fsdp:
        raise ConfigError(
            f"Recipe field `finetune_mode` has value 'lora', but `fsdp` is {tr.fsdp!r}: the merged phase model is "
            "built on the main process from the unsharded model. Fix: use DDP (no fsdp) for LoRA."
        )


@register_recipe_check
def check_finetune(config: RecipeConfig) -> None:
    """Recipe check: ``pretrained`` goes with task finetune (and only with it); random_resized_crop
    needs the finetune pipeline and comes first."""
    m, inc = config.model, config.incremental
    needs = inc.task in TASKS and TASKS[inc.task].needs_pretrained
    takes = needs or (inc.task in TASKS and TASKS[inc.task].accepts_pretrained)
    if needs and not m.pretrained:
        raise ConfigError(
            f"Recipe field `pretrained` is unset, but task {inc.task} needs it. Fix: set `pretrained` (e.g. "
            "timm/resnet18.tv_in1k, or a phase directory), or use task classification."
        )
    if not takes and m.pretrained:
        raise ConfigError(
            f"Recipe field `pretrained` has value {m.pretrained!r}, but task is {inc.task!r}. Fix: set task: "
            "finetune (or linear_probe, or causal_lm), or use `init_from` to start a from-scratch run from saved "
            "weights."
        )
    if inc.task == "finetune":
        _check_finetune_options(config)
