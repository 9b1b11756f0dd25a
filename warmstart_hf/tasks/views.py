"""The two views of stored images that 224-pixel tasks (finetune, mae_pretrain) share: the
evaluation view (resize + centre crop to ``crop_size``) and the training view (RandomResizedCrop
to ``crop_size`` plus the recipe's other augmentations; without it, the evaluation view first)."""

from __future__ import annotations

from warmstart_hf.config import ConfigError, RecipeConfig, register_recipe_check
from warmstart_hf.data import build_augmentation
from warmstart_hf.data.augment import BatchTransform, resize_center_crop
from warmstart_hf.tasks.registry import TASKS


class CroppedViews:
    """Mixin for tasks whose data carries ``crop_size``: the evaluation and training views above."""

    crops = True

    def eval_transform(self, data) -> BatchTransform:
        return evaluation_view(self.config, data.crop_size)

    def augmentation(self, data) -> BatchTransform:
        return training_view(self.config, data.crop_size)


@register_recipe_check
def check_random_resized_crop(config: RecipeConfig) -> None:
    """Recipe check: random_resized_crop sets the input size, so it belongs to the tasks that crop and
    comes first."""
    inc = config.incremental
    crops = inc.task in TASKS and TASKS[inc.task].crops
    if "random_resized_crop" in inc.augmentation and (not crops or inc.augmentation[0] != "random_resized_crop"):
        croppers = sorted(name for name, task in TASKS.items() if task.crops)
        raise ConfigError(
            f"Recipe field `augmentation` has value {inc.augmentation!r}; random_resized_crop belongs to the tasks "
            f"that crop ({', '.join(croppers)}) and must come first (it sets the input size). Fix: reorder or "
            "remove it."
        )


def evaluation_view(config: RecipeConfig, crop_size: int) -> BatchTransform:
    pct = config.incremental.eval_crop_pct
    return lambda images: resize_center_crop(images, crop_size, pct)


def training_view(config: RecipeConfig, crop_size: int) -> BatchTransform:
    """random_resized_crop (+ the rest of the list), or the evaluation view then the list: every
    training batch has the model's input size; ``augmentation: []`` trains on the evaluation view."""
    inc = config.incremental
    options = {"crop_size": crop_size, "crop_scale": inc.crop_scale, "crop_padding": inc.crop_padding}
    augment = build_augmentation(inc.augmentation, rotation_degrees=inc.rotation_degrees, **options)
    if "random_resized_crop" in inc.augmentation:
        return augment
    view = evaluation_view(config, crop_size)
    return view if augment is None else (lambda images: augment(view(images)))
