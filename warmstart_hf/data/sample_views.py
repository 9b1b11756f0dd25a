"""Per-sample views made from the full-resolution image in the DataLoader workers (``views: worker``):
the MAE reference's input pipeline, ending in uint8 C x H x W arrays at the crop size (1 byte per
pixel to the device; the models normalise inside).

Reproduces facebookresearch/mae: ``main_pretrain.py`` and ``main_linprobe.py`` (RandomResizedCrop(224,
scale, bicubic) + RandomHorizontalFlip), ``util/datasets.py`` ``build_transform`` (training: timm's
``create_transform`` with RandAugment ``rand-m9-mstd0.5-inc1``; evaluation: Resize(int(224 / crop_pct),
bicubic) + CenterCrop(224)). torchvision's PIL transforms and timm's RandAugment do the work; left out:
ToTensor + Normalize (the model normalises) and RandomErasing (on the normalised batch on the device,
``warmstart_hf.data.augment.random_erasing``). timm's create_transform crops with its own
RandomResizedCropAndInterpolation, the same draw as torchvision's RandomResizedCrop used here.

Randomness and resume: torchvision's crop and flip draw from torch's generator, RandAugment from
python's ``random`` (and numpy's). In a DataLoader worker the DataLoader seeds all three from a base seed
that it draws from the main process's torch generator when an epoch's iterator starts; with
``dataloader_num_workers: 0`` they are the main process's generators. The Trainer seeds those per
phase from the run's seed, so a run is reproducible from its seed. A phase resumed from a checkpoint
is not bit-exact on this path: the Trainer restores the generators and skips the finished batches by
index (the data order is the same), but the views of the batches after the resume are drawn afresh
(the workers' base seed is drawn at a different point of the generator's stream), so the resumed
phase matches an uninterrupted one in distribution only (checked: a tiny run interrupted mid-phase and
resumed ends with other weights than the uninterrupted one, with 0 or 1 workers; a rerun from scratch
is identical). The on-device path (``views: device``) draws from the generators the checkpoints restore.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
from PIL import Image as PILImage
from torchvision import transforms
from torchvision.transforms import InterpolationMode

SampleView = Callable[[PILImage.Image], np.ndarray]

INTERPOLATION = {"bilinear": InterpolationMode.BILINEAR, "bicubic": InterpolationMode.BICUBIC}
PIL_INTERPOLATION = {"bilinear": PILImage.BILINEAR, "bicubic": PILImage.BICUBIC}


class PixelView:
    """A PIL image (any mode) -> uint8 C x H x W array through a torchvision transform; picklable, so
    it can travel to spawned workers."""

    def __init__(self, transform: Callable, num_channels: int):
        self.transform = transform
        self.mode = "L" if num_channels == 1 else "RGB"

    def __call__(self, image: PILImage.Image) -> np.ndarray:
        array = np.asarray(self.transform(image.convert(self.mode)), dtype=np.uint8)
        return np.ascontiguousarray(array[None] if array.ndim == 2 else array.transpose(2, 0, 1))


def resize_size(crop_size: int, crop_pct: float) -> int:
    """The evaluation resize, floor(crop / crop_pct) (timm's; the epsilon absorbs 16 / 0.8 = 19.99..)."""
    return math.floor(crop_size / crop_pct + 1e-6)


def evaluation_view(crop_size: int, crop_pct: float, interpolation: str, num_channels: int) -> PixelView:
    """Resize the shorter side to crop_size / crop_pct and keep the centre crop_size square (MAE's
    Resize(256, bicubic) + CenterCrop(224))."""
    size = resize_size(crop_size, crop_pct)
    steps = [transforms.Resize(size, interpolation=INTERPOLATION[interpolation]), transforms.CenterCrop(crop_size)]
    return PixelView(transforms.Compose(steps), num_channels)


def rand_augment(config_str: str, crop_size: int, mean: Sequence[float], interpolation: str):
    """timm's RandAugment with the hyper-parameters timm's create_transform gives it (MAE finetuning):
    translations up to 45% of the crop, the normalisation mean as fill colour, the crop's interpolation."""
    from timm.data.auto_augment import rand_augment_transform

    hparams = {
        "translate_const": int(crop_size * 0.45),
        "img_mean": tuple(min(255, round(255 * x)) for x in mean),
        "interpolation": PIL_INTERPOLATION[interpolation],
    }
    return rand_augment_transform(config_str, hparams)


def training_view(
    crop_size: int,
    *,
    crop_scale: Sequence[float] | None,
    flip: bool,
    interpolation: str,
    num_channels: int,
    crop_pct: float,
    rand_augment_config: str | None = None,
    mean: Sequence[float] = (0.485, 0.456, 0.406),
) -> PixelView:
    """RandomResizedCrop(crop_size, crop_scale) (or, with ``crop_scale=None``, the evaluation view's
    resize + centre crop), then a horizontal flip with probability 1/2, then RandAugment: the order of
    timm's create_transform and of MAE's pretraining and probe transforms."""
    resample = INTERPOLATION[interpolation]
    if crop_scale is None:
        steps = [transforms.Resize(resize_size(crop_size, crop_pct), interpolation=resample)]
        steps.append(transforms.CenterCrop(crop_size))
    else:
        steps = [transforms.RandomResizedCrop(crop_size, scale=tuple(crop_scale), interpolation=resample)]
    if flip:
        steps.append(transforms.RandomHorizontalFlip())
    if rand_augment_config:
        steps.append(rand_augment(rand_augment_config, crop_size, mean, interpolation))
    return PixelView(transforms.Compose(steps), num_channels)
