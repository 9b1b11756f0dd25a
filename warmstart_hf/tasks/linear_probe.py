"""Linear probing of a pretrained MAE encoder on a labelled set (the target study's Fig. 5, left):
the encoder from ``pretrained`` (a phase or snapshot directory of an ``mae_pretrain`` run, or a Hub
revision of one), frozen; a BatchNorm without affine parameters and a linear head trained with LARS
(``warmstart_hf/models/probe.py``). One phase evaluates one checkpoint; ``scripts/evaluate_pretraining.py``
runs it for every checkpoint of a pretraining run. ``mae_finetune`` (below) finetunes the whole
encoder instead (Fig. 5, right).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import ViTMAEForPreTraining

from warmstart_hf.config import ConfigError, RecipeConfig, register_recipe_check
from warmstart_hf.metrics.convergence import loss_plateau
from warmstart_hf.metrics.diagnostics import weight_diagnostics
from warmstart_hf.models.pretrained import WEIGHTS_FILE, resolve_pretrained
from warmstart_hf.models.probe import (
    MaeClassifier,
    MaeFinetuneConfig,
    MaeLinearProbe,
    MaeProbeConfig,
    lars_optimizer,
    layer_decay_optimizer,
)
from warmstart_hf.seeding import derive_seed
from warmstart_hf.tasks.base import TaskData
from warmstart_hf.tasks.classification import Classification
from warmstart_hf.tasks.registry import register_task
from warmstart_hf.tasks.views import CroppedViews


@dataclass
class ProbeData(TaskData):
    encoder_state: dict[str, torch.Tensor] | None = None
    crop_size: int = 224


def load_mae_encoder(value: str) -> tuple[dict, dict[str, torch.Tensor]]:
    """The ViTMAE config and its encoder tensors (``vit.*``, as the model names them in memory) from a
    pretraining directory; transformers maps the saved key names (safetensors only)."""
    folder = resolve_pretrained(value)
    config_path = folder / "config.json"
    config = json.loads(config_path.read_text()) if config_path.exists() else {}
    if config.get("model_type") != "vit_mae" or not (folder / WEIGHTS_FILE).exists():
        raise ConfigError(
            f"Recipe field `pretrained` has value {value!r}, which holds no ViTMAE model (config.json with "
            "model_type vit_mae and model.safetensors). Fix: point it at a phase or snapshot directory of an "
            "mae_pretrain run."
        )
    model = ViTMAEForPreTraining.from_pretrained(folder, use_safetensors=True)
    return model.config.to_dict(), {f"vit.{k}": v for k, v in model.vit.state_dict().items()}


@register_task("linear_probe")
class LinearProbe(CroppedViews, Classification):
    """A frozen MAE encoder's class token, BatchNorm (no affine) + linear head, LARS."""

    needs_pretrained = True

    def prepare(self) -> ProbeData:
        encoder, state = load_mae_encoder(self.config.model.pretrained)  # fails fast, before decoding
        crop = encoder["image_size"]
        if self.config.incremental.crop_size not in (None, crop):
            raise ConfigError(
                f"Recipe field `crop_size` has value {self.config.incremental.crop_size}, but the encoder in "
                f"`pretrained` takes {crop} px. Fix: set crop_size: {crop} (or remove it)."
            )
        source, plan = self._source_and_plan()
        train, test, validation = self._decode(source, crop)
        names = source["train"].features["label"].names
        if encoder["num_channels"] != self.config.data.num_channels or crop > self.config.data.image_size:
            raise ConfigError(
                f"Recipe fields `num_channels` / `image_size` have values {self.config.data.num_channels} / "
                f"{self.config.data.image_size}, but the encoder takes {encoder['num_channels']} channels at "
                f"{crop} px. Fix: match num_channels, and store images at least that large."
            )
        config = MaeProbeConfig(
            encoder=encoder,
            num_labels=len(names),
            id2label=dict(enumerate(names)),
            label2id={n: i for i, n in enumerate(names)},
        )
        return ProbeData(plan, train, test, config, validation, encoder_state=state, crop_size=crop)

    def _build(self, data: ProbeData, seed: int) -> MaeLinearProbe:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = self._model(data.model_config)
        model.load_state_dict(data.encoder_state, strict=False)
        missing = [k for k in model.state_dict() if k.startswith("vit.") and k not in data.encoder_state]
        if missing:
            raise ConfigError(
                f"Recipe field `pretrained`: the encoder lacks {missing[:3]}. Fix: use an MAE checkpoint."
            )
        return model

    def _model(self, config) -> nn.Module:
        return MaeLinearProbe(config)

    def initial_model(self, data: ProbeData, seed: int) -> nn.Module:
        return self._build(data, derive_seed(seed, "probe-head"))

    def fresh_model(self, data: ProbeData, seed: int, phase: int) -> nn.Module:
        return self._build(data, derive_seed(seed, "probe-head", phase))

    def load_model(self, directory: Path) -> nn.Module:
        return MaeLinearProbe.from_pretrained(directory)

    def trainer_options(self, data: ProbeData, phase: int) -> dict[str, Any]:
        lr = self.config.training.learning_rate
        return {**super().trainer_options(data, phase), "optimizer_factory": lambda model: lars_optimizer(model, lr)}

    def start_diagnostics(self, model: nn.Module, data: ProbeData, phase: int) -> dict[str, Any]:
        return {}

    def phase_metrics(self, trainer, data: ProbeData, phase: int, train) -> dict[str, Any]:
        """The classification metrics and whether the training loss plateaued (a probe whose learning
        rate is too small is still descending when its epochs end: its accuracy understates the encoder)."""
        return {**super().phase_metrics(trainer, data, phase, train), **loss_plateau(trainer.state.log_history)}

    def end_diagnostics(self, model: nn.Module, data: ProbeData, phase: int, train, **state) -> dict[str, Any]:
        return weight_diagnostics(model, state["init_state"], state["previous"])


@register_task("mae_finetune")
class MaeFinetune(LinearProbe):
    """Full finetuning of a pretrained MAE encoder (the target study's Fig. 5, right): every weight
    trains; pooled patch tokens, fc_norm and a linear head; AdamW with layer-wise LR decay
    (``layer_decay``), stochastic depth (``drop_path_rate``) and, through the Trainer,
    ``label_smoothing_factor`` (``warmstart_hf/models/probe.py``)."""

    def prepare(self) -> ProbeData:
        data = super().prepare()
        settings = data.model_config.to_dict()
        settings.update(drop_path_rate=self.config.model.drop_path_rate)
        settings.pop("model_type", None)
        data.model_config = MaeFinetuneConfig(**settings)
        return data

    def _model(self, config) -> nn.Module:
        return MaeClassifier(config)

    def load_model(self, directory: Path) -> nn.Module:
        return MaeClassifier.from_pretrained(directory)

    def phase_metrics(self, trainer, data: ProbeData, phase: int, train) -> dict[str, Any]:
        """The classification metrics only: the plateau mark is the linear probe's."""
        return Classification.phase_metrics(self, trainer, data, phase, train)

    def trainer_options(self, data: ProbeData, phase: int) -> dict[str, Any]:
        tr, m = self.config.training, self.config.model
        factory = lambda model: layer_decay_optimizer(  # noqa: E731
            model, tr.learning_rate, tr.weight_decay, m.layer_decay, (tr.adam_beta1, tr.adam_beta2)
        )
        return {**Classification.trainer_options(self, data, phase), "optimizer_factory": factory}


@register_recipe_check
def check_probe_optimizer(config: RecipeConfig) -> None:
    """The probe trains with its own LARS, whatever `optim` says: no fused kernel for it."""
    if config.incremental.task == "linear_probe" and config.incremental.fused_optimizer:
        raise ConfigError(
            "Recipe field `fused_optimizer` is true, but task 'linear_probe' trains with LARS (MAE's linear probe), "
            "which has no fused kernel. Fix: set `fused_optimizer: false`."
        )
