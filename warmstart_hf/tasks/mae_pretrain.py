"""Masked-autoencoder pretraining, data-incremental, warm vs cold: the target study's Section 3.2
(Fig. 4).

Each phase pretrains transformers' ViTMAE (``warmstart_hf/models/mae.py``) on everything seen so far;
warm continues, cold draws a new seeded initialisation. The judge is a deterministic probe loss: the
pretraining loss on a fixed, seeded sample of the test split with fixed masking noise, in eval mode,
measured every ``probe_every_steps`` optimizer steps (each measurement keeps a model-only snapshot
under ``phase-XX/snapshots/``: the candidates for loss alignment) and at the end of the phase.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from warmstart_hf.config import ConfigError, RecipeConfig, register_recipe_check
from warmstart_hf.data.pixels import collate_pixels
from warmstart_hf.hub import push_aligned_checkpoints
from warmstart_hf.metrics.diagnostics import diagnostic_sample, weight_diagnostics
from warmstart_hf.models.mae import PixelViTMAE, build_mae_config, create_mae, fixed_noise, probe_loss
from warmstart_hf.report.pretraining import write_pretraining_summary
from warmstart_hf.seeding import derive_seed
from warmstart_hf.tasks.base import TaskData
from warmstart_hf.tasks.classification import Classification
from warmstart_hf.tasks.probe_curve import ProbeLoss, probe_curve
from warmstart_hf.tasks.registry import register_task
from warmstart_hf.tasks.views import CroppedViews, evaluation_view


@dataclass
class MaeData(TaskData):
    probe_images: torch.Tensor | None = None  # uint8, the evaluation view of the probe sample
    probe_noise: torch.Tensor | None = None
    crop_size: int = 224


def collate_images(rows: list[dict]) -> dict[str, torch.Tensor]:
    """Images only: pretraining uses no label."""
    return {"pixel_values": collate_pixels(rows)["pixel_values"]}


@register_task("mae_pretrain")
class MaePretrain(CroppedViews, Classification):
    """ViTMAE pretraining; records ``probe_loss``, ``probe_curve`` and ``start_probe_loss``."""

    best_metric = ""

    def prepare(self) -> MaeData:
        m, d, inc = self.config.model, self.config.data, self.config.incremental
        crop = inc.crop_size or d.image_size
        source, plan = self._source_and_plan()
        train, test, validation = self._decode(source, crop)
        config = build_mae_config(
            image_size=crop,
            num_channels=d.num_channels,
            patch_size=m.patch_size,
            hidden_size=m.mae_hidden_size,
            layers=m.mae_layers,
            heads=m.mae_heads,
            decoder_hidden_size=m.mae_decoder_hidden_size,
            decoder_layers=m.mae_decoder_layers,
            decoder_heads=m.mae_decoder_heads,
            mask_ratio=m.mask_ratio,
            layer_norm_eps=m.mae_layer_norm_eps,
            image_mean=m.image_mean or [0.5] * d.num_channels,
            image_std=m.image_std or [0.5] * d.num_channels,
        )
        seed = self.config.training.seed
        picked = diagnostic_sample(len(test), inc.probe_examples, derive_seed(seed, "probe"))
        stored = torch.from_numpy(np.asarray(test.select(picked)[:]["pixel_values"]).astype(np.uint8))  # any decode
        view = evaluation_view(self.config, crop)  # None: the worker path reads the evaluation view already
        images = stored if view is None else view(stored)
        noise = fixed_noise(len(images), config, derive_seed(seed, "probe-noise"))
        return MaeData(plan, train, test, config, validation, probe_images=images, probe_noise=noise, crop_size=crop)

    def initial_model(self, data: MaeData, seed: int) -> nn.Module:
        return create_mae(data.model_config, derive_seed(seed, "init"), self.config.model.mae_init)

    def fresh_model(self, data: MaeData, seed: int, phase: int) -> nn.Module:
        return create_mae(data.model_config, derive_seed(seed, "fresh", phase), self.config.model.mae_init)

    def load_model(self, directory: Path) -> nn.Module:
        return PixelViTMAE.from_pretrained(directory)

    def trainer_options(self, data: MaeData, phase: int) -> dict[str, Any]:
        every = self.config.incremental.probe_every_steps
        return {
            "data_collator": collate_images,
            "augment": self.augmentation(data),
            "eval_transform": self.eval_transform(data),
            "train_rows": self.train_rows(data),
            "callbacks": [ProbeLoss(partial(probe_loss, images=data.probe_images, noise=data.probe_noise), every)]
            if every
            else [],
        }

    def start_record(self, model: nn.Module, data: MaeData, phase: int) -> dict[str, Any]:
        return {"start_probe_loss": probe_loss(model, data.probe_images, data.probe_noise)}

    def start_diagnostics(self, model: nn.Module, data: MaeData, phase: int) -> dict[str, Any]:
        return {}

    def phase_metrics(self, trainer, data: MaeData, phase: int, train) -> dict[str, Any]:
        """The end-of-phase probe loss and the phase's probe curve (snapshots relative to the arm)."""
        final = probe_loss(trainer.model, data.probe_images, data.probe_noise)
        curve = probe_curve(trainer, phase, final)
        losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
        return {
            "num_train_examples": len(train),
            "probe_loss": final,
            "probe_curve": curve,
            "train_loss": losses[-1] if losses else None,
        }

    def end_diagnostics(self, model: nn.Module, data: MaeData, phase: int, train, **state) -> dict[str, Any]:
        return weight_diagnostics(model, state["init_state"], state["previous"])

    def write_summary(self, run_dir: Path) -> str:
        """The pretraining summary (alignment.json, fig4.png), then the aligned snapshots to the Hub."""
        table = write_pretraining_summary(run_dir)
        push_aligned_checkpoints(self.config, run_dir)
        return table


@register_recipe_check
def check_mae(config: RecipeConfig) -> None:
    """Recipe check: the patch grid fits the input, and no classification-only option is set."""
    m, d, inc = config.model, config.data, config.incremental
    if inc.task != "mae_pretrain":
        return
    size = inc.crop_size or d.image_size
    if size % m.patch_size:
        raise ConfigError(
            f"Recipe field `patch_size` has value {m.patch_size}, which does not divide the input size {size} "
            "(crop_size, or image_size without it). Fix: choose a divisor."
        )
    if m.mae_hidden_size % m.mae_heads or m.mae_decoder_hidden_size % m.mae_decoder_heads:
        raise ConfigError(
            f"Recipe fields `mae_hidden_size` / `mae_heads` ({m.mae_hidden_size} / {m.mae_heads}) or the decoder's "
            "must divide evenly. Fix: choose a head count that divides the width."
        )
    if inc.stop_rule != "epochs" or inc.mask_unseen_logits or inc.track_test_curve:
        raise ConfigError(
            f"Recipe field `stop_rule` / `mask_unseen_logits` / `track_test_curve` is set ({inc.stop_rule!r}, "
            f"{inc.mask_unseen_logits}, {inc.track_test_curve}), but pretraining has no labels to judge. Fix: use "
            "stop_rule: epochs and leave the other two off."
        )
