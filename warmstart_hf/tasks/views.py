"""The two views of the images that 224-pixel tasks (finetune, linear_probe, mae_finetune,
mae_pretrain) share: the evaluation view (resize + centre crop to ``crop_size``) and the training view
(RandomResizedCrop to ``crop_size`` plus the recipe's other augmentations; without it, the evaluation
view first), and where they are made (``views``):

- ``device``: from the stored ``image_size`` squares, batched on the training device
  (``warmstart_hf/data/augment.py``); the embedded demos.
- ``worker``: per sample from the full-resolution image in the DataLoader workers
  (``warmstart_hf/data/sample_views.py``), as the MAE reference does: every split reads as its
  evaluation view, and the training loader reads the phase's rows through the training view. A run is
  reproducible from its seed; a resumed phase draws new views after the resume (see that module).

Random erasing (``random_erasing``) is applied on the device on either path, after the view and
before mixup; RandAugment (``rand_augment``) runs in the workers.
"""

from __future__ import annotations

from datasets import Dataset

from warmstart_hf.config import ConfigError, RecipeConfig, register_recipe_check
from warmstart_hf.data import build_augmentation, sample_views
from warmstart_hf.data.augment import BatchTransform, random_erasing, resize_center_crop
from warmstart_hf.data.pixels import to_view_dataset, with_view
from warmstart_hf.tasks.registry import TASKS

WORKER_AUGMENTATIONS = ("random_resized_crop", "flip")


class CroppedViews:
    """Mixin for tasks whose data carries ``crop_size``: the evaluation and training views above."""

    crops = True

    def eval_transform(self, data) -> BatchTransform | None:
        return evaluation_view(self.config, data.crop_size)

    def augmentation(self, data) -> BatchTransform | None:
        """The device's training transform: the device path's view, then random erasing (if on)."""
        view = None if self.config.incremental.views == "worker" else training_view(self.config, data.crop_size)
        probability = self.config.incremental.random_erasing
        if not probability:
            return view
        mean, std = model_statistics(data.model_config)
        erase = lambda images: random_erasing(images, probability, mean, std)  # noqa: E731
        return erase if view is None else (lambda images: erase(view(images)))

    def train_rows(self, data):
        """The worker path: the phase's rows read through the training view (None on the device path)."""
        if self.config.incremental.views != "worker":
            return None
        view = worker_training_view(self.config, data.crop_size, model_statistics(data.model_config)[0])
        return lambda rows: with_view(rows, view)

    def decode_split(self, split: Dataset, crop_size: int) -> Dataset:
        """A source split as the task reads it: on the worker path, the evaluation view of each full image."""
        if self.config.incremental.views != "worker":
            return super().decode_split(split, crop_size)
        inc, d = self.config.incremental, self.config.data
        view = sample_views.evaluation_view(crop_size, inc.eval_crop_pct, inc.interpolation, d.num_channels)
        return to_view_dataset(split, view)


def model_statistics(model_config) -> tuple[list[float], list[float]]:
    """The normalisation a model applies inside (the probes keep it in their encoder's config)."""
    source = getattr(model_config, "encoder", model_config)
    return list(source.image_mean), list(source.image_std)


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


@register_recipe_check
def check_views(config: RecipeConfig) -> None:
    """Recipe check: the worker path, RandAugment and random erasing only where they can apply."""
    inc, d = config.incremental, config.data
    crops = inc.task in TASKS and TASKS[inc.task].crops
    croppers = ", ".join(sorted(name for name, task in TASKS.items() if task.crops))
    if inc.views == "worker":
        if not crops:
            raise ConfigError(
                f"Recipe field `views` has value 'worker', but task {inc.task!r} does not crop (the worker path "
                f"makes crop_size views for {croppers}). Fix: remove `views` or use one of those tasks."
            )
        if d.decode != "lazy":
            raise ConfigError(
                f"Recipe field `views` has value 'worker', but `decode` is {d.decode!r}: the worker path crops "
                "from the full-resolution image, which only decode: lazy keeps. Fix: set `decode: lazy`."
            )
        if inc.data_on_device == "always":
            raise ConfigError(
                "Recipe field `views` has value 'worker', but `data_on_device` is 'always': the worker path makes "
                "each batch in the DataLoader workers, so nothing can be held on the device. Fix: set "
                "`data_on_device: auto` (or never)."
            )
        others = [name for name in inc.augmentation if name not in WORKER_AUGMENTATIONS]
        if others:
            raise ConfigError(
                f"Recipe field `augmentation` has value {inc.augmentation!r}; with views: worker only "
                f"{list(WORKER_AUGMENTATIONS)} are made (in the workers). Fix: remove {others} or use views: device."
            )
    if inc.rand_augment is not None:
        _check_rand_augment(config)
    if not 0 <= inc.random_erasing < 1:
        raise ConfigError(
            f"Recipe field `random_erasing` has value {inc.random_erasing!r}; it is a probability in [0, 1) "
            "(MAE finetuning: 0.25). Fix: change `random_erasing`."
        )
    if inc.random_erasing and not crops:
        raise ConfigError(
            f"Recipe field `random_erasing` has value {inc.random_erasing!r}, but task {inc.task!r} has no training "
            f"view to erase in ({croppers} have). Fix: remove `random_erasing`."
        )


def _check_rand_augment(config: RecipeConfig) -> None:
    inc = config.incremental
    if inc.views != "worker":
        raise ConfigError(
            f"Recipe field `rand_augment` has value {inc.rand_augment!r}, but `views` is {inc.views!r}: RandAugment "
            "works on each PIL image in the DataLoader workers. Fix: set `views: worker` (with `decode: lazy`) or "
            "remove `rand_augment`."
        )
    try:
        sample_views.rand_augment(inc.rand_augment, 224, (0.5, 0.5, 0.5), inc.interpolation)
    except Exception as err:  # noqa: BLE001 - timm raises assorted errors on a bad config string
        raise ConfigError(
            f"Recipe field `rand_augment` has value {inc.rand_augment!r}, which timm's rand_augment_transform "
            f"cannot read ({type(err).__name__}: {err}). Fix: use a timm RandAugment string, e.g. "
            "rand-m9-mstd0.5-inc1."
        ) from None


def evaluation_view(config: RecipeConfig, crop_size: int) -> BatchTransform | None:
    """The device path's evaluation view; None on the worker path (the rows are that view already)."""
    inc = config.incremental
    if inc.views == "worker":
        return None
    return lambda images: resize_center_crop(images, crop_size, inc.eval_crop_pct, inc.interpolation)


def training_view(config: RecipeConfig, crop_size: int) -> BatchTransform:
    """random_resized_crop (+ the rest of the list), or the evaluation view then the list: every
    training batch has the model's input size; ``augmentation: []`` trains on the evaluation view."""
    inc = config.incremental
    options = {"crop_size": crop_size, "crop_scale": inc.crop_scale, "crop_padding": inc.crop_padding}
    augment = build_augmentation(
        inc.augmentation, rotation_degrees=inc.rotation_degrees, interpolation=inc.interpolation, **options
    )
    if "random_resized_crop" in inc.augmentation:
        return augment
    view = evaluation_view(config, crop_size)
    return view if augment is None else (lambda images: augment(view(images)))


def worker_training_view(config: RecipeConfig, crop_size: int, mean: list[float]) -> sample_views.PixelView:
    """The worker path's training view from the recipe: the listed crop and flip, then RandAugment."""
    inc = config.incremental
    return sample_views.training_view(
        crop_size,
        crop_scale=inc.crop_scale if "random_resized_crop" in inc.augmentation else None,
        flip="flip" in inc.augmentation,
        interpolation=inc.interpolation,
        num_channels=config.data.num_channels,
        crop_pct=inc.eval_crop_pct,
        rand_augment_config=inc.rand_augment,
        mean=mean,
    )
