"""Models: timm networks wrapped as transformers models (registered with the Auto classes)."""

from __future__ import annotations

import timm
import torch

from warmstart_hf.config import ConfigError, RecipeConfig, register_recipe_check
from warmstart_hf.models.classifier import TimmClassifierConfig, TimmImageClassifier


def available_models() -> list[str]:
    return timm.list_models()


@register_recipe_check
def check_model_name(config: RecipeConfig) -> None:
    """Recipe check: ``model_name`` is a timm model (resnet18_cifar is registered here)."""
    if config.model.model_name not in available_models():
        raise ConfigError(
            f"Recipe field `model_name` has value {config.model.model_name!r}; use a timm model name such as "
            "resnet18_cifar. Fix: change `model_name`."
        )


def build_classifier_config(
    model_name: str,
    *,
    num_labels: int,
    num_channels: int,
    image_size: int,
    width: float,
    image_mean: list[float],
    image_std: list[float],
    id2label: dict[int, str] | None = None,
) -> TimmClassifierConfig:
    model_kwargs = {"width": width} if model_name.endswith("_cifar") else {}
    return TimmClassifierConfig(
        timm_model=model_name,
        num_channels=num_channels,
        image_size=image_size,
        model_kwargs=model_kwargs,
        image_mean=image_mean,
        image_std=image_std,
        num_labels=num_labels,
        id2label=id2label,
        label2id={v: k for k, v in id2label.items()} if id2label else None,
    )


def create_classifier(config: TimmClassifierConfig, seed: int) -> TimmImageClassifier:
    """A fresh random draw of the architecture from ``seed``; the global RNG is left untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return TimmImageClassifier(config)


__all__ = [
    "TimmClassifierConfig",
    "TimmImageClassifier",
    "available_models",
    "build_classifier_config",
    "create_classifier",
]
