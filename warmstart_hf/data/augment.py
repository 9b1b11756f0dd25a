"""Batched data augmentation on the training device.

Each transform draws its randomness per sample but works on the whole ``(B, C, H, W)`` uint8 batch
at once (as Keller Jordan's airbench does): on a GPU the per-sample PIL path would dominate the step
time. torchvision.transforms.v2 applies one random draw to a whole batch, so it cannot be used for
per-sample crops and flips.
Randomness comes from torch's global generator, which the Trainer seeds per phase from the run's
master seed and saves in every checkpoint, so an interrupted phase resumes with the same draws.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from warmstart_hf.config import REGISTERED_NAMES, ConfigError, RecipeConfig, register_recipe_check
from warmstart_hf.models.normalize import normalize_pixels, unnormalize_pixels

BatchTransform = Callable[[torch.Tensor], torch.Tensor]


def random_crop(images: torch.Tensor, padding: int) -> torch.Tensor:
    """Zero-pad by ``padding`` and crop back to the input size at a random offset per sample."""
    if padding == 0:
        return images
    b, _, h, w = images.shape
    padded = F.pad(images, (padding, padding, padding, padding))
    dy = torch.randint(0, 2 * padding + 1, (b,), device=images.device)
    dx = torch.randint(0, 2 * padding + 1, (b,), device=images.device)
    rows = (dy[:, None] + torch.arange(h, device=images.device))[:, None, :, None]  # B,1,H,1
    cols = (dx[:, None] + torch.arange(w, device=images.device))[:, None, None, :]  # B,1,1,W
    batch = torch.arange(b, device=images.device)[:, None, None, None]
    channels = torch.arange(images.shape[1], device=images.device)[None, :, None, None]
    return padded[batch, channels, rows, cols]


def random_horizontal_flip(images: torch.Tensor) -> torch.Tensor:
    """Mirror each sample left-right with probability 1/2."""
    flip = torch.rand(images.shape[0], device=images.device) < 0.5
    return torch.where(flip[:, None, None, None], images.flip(-1), images)


def rotate(images: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """Rotate sample ``b`` by ``angles[b]`` radians about the centre (bilinear, zero fill)."""
    cos, sin = angles.cos(), angles.sin()
    zeros = torch.zeros_like(cos)
    theta = torch.stack([torch.stack([cos, -sin, zeros], 1), torch.stack([sin, cos, zeros], 1)], 1)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    rotated = F.grid_sample(images.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return rotated if images.is_floating_point() else rotated.round().clamp(0, 255).to(images.dtype)


def random_rotation(images: torch.Tensor, degrees: float) -> torch.Tensor:
    """Each sample rotated by its own angle, uniform in [-degrees, degrees] (torchvision's
    RandomRotation(degrees), but one draw per sample on the whole batch)."""
    angles = (torch.rand(images.shape[0], device=images.device) * 2 - 1) * (degrees * torch.pi / 180.0)
    return rotate(images, angles)


def _crop_boxes(b: int, h: int, w: int, scale: tuple[float, float], ratio: tuple[float, float], device, tries=10):
    """(B, 4) boxes (top, left, height, width) drawn as torchvision's RandomResizedCrop.get_params: up to
    ``tries`` draws of area fraction and log-uniform aspect ratio, the first that fits; else the
    whole image clamped to the ratio range, centred."""
    area = torch.empty(b, tries, device=device).uniform_(*scale) * (h * w)
    log_ratio = torch.empty(b, tries, device=device).uniform_(math.log(ratio[0]), math.log(ratio[1]))
    cw = torch.sqrt(area * log_ratio.exp()).round()
    ch = torch.sqrt(area / log_ratio.exp()).round()
    fits = (cw > 0) & (cw <= w) & (ch > 0) & (ch <= h)
    first = fits.float().argmax(1)
    ch, cw = ch.gather(1, first[:, None])[:, 0], cw.gather(1, first[:, None])[:, 0]
    top = (torch.rand(b, device=device) * (h - ch + 1)).floor()
    left = (torch.rand(b, device=device) * (w - cw + 1)).floor()
    fallback_w = min(w, round(h * ratio[1])) if w / h > ratio[1] else w
    fallback_h = min(h, round(w / ratio[0])) if w / h < ratio[0] else h
    none = ~fits.any(1)
    ch = torch.where(none, torch.full_like(ch, fallback_h), ch)
    cw = torch.where(none, torch.full_like(cw, fallback_w), cw)
    top = torch.where(none, torch.full_like(top, (h - fallback_h) // 2), top)
    left = torch.where(none, torch.full_like(left, (w - fallback_w) // 2), left)
    return torch.stack([top, left, ch, cw], 1)


def resample_boxes(images: torch.Tensor, boxes: torch.Tensor, size: int, mode: str = "bilinear") -> torch.Tensor:
    """Each sample's box (top, left, height, width) resized to ``size`` x ``size`` in one ``grid_sample``
    over the batch. Bilinear: the same values as cropping the box and resizing it with
    ``F.interpolate(mode="bilinear", align_corners=False)``. Bicubic: the same inside the box, but the
    4 x 4 kernel at the box's edge reads the image's pixels beyond it where cropping first would repeat
    the edge. Without antialiasing: the recipes store images at about crop_size / 0.875, so a crop is
    never shrunk by more than that factor."""
    b, _, h, w = images.shape
    top, left, ch, cw = boxes.float().unbind(1)
    zeros = torch.zeros_like(top)
    theta = torch.stack(
        [
            torch.stack([cw / w, zeros, (2 * left + cw) / w - 1], 1),
            torch.stack([zeros, ch / h, (2 * top + ch) / h - 1], 1),
        ],
        1,
    )
    grid = F.affine_grid(theta, [b, images.shape[1], size, size], align_corners=False)
    # Clamp to the box's outer pixel centres: an enlarged crop repeats its edge pixels, as cropping first
    # and then resizing does, instead of blending in the pixels beyond the box.
    low = torch.stack([(2 * left + 1) / w - 1, (2 * top + 1) / h - 1], 1)[:, None, None, :]
    high = torch.stack([(2 * (left + cw) - 1) / w - 1, (2 * (top + ch) - 1) / h - 1], 1)[:, None, None, :]
    grid = torch.maximum(torch.minimum(grid, high), low)
    out = F.grid_sample(images.float(), grid, mode=mode, padding_mode="border", align_corners=False)
    return out if images.is_floating_point() else out.round().clamp(0, 255).to(images.dtype)


def random_resized_crop(
    images: torch.Tensor, size: int, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), mode: str = "bilinear"
) -> torch.Tensor:
    """torchvision's RandomResizedCrop(size, scale, ratio), one draw per sample, on the whole batch."""
    b, _, h, w = images.shape
    return resample_boxes(images, _crop_boxes(b, h, w, tuple(scale), tuple(ratio), images.device), size, mode)


def resize_center_crop(
    images: torch.Tensor, size: int, crop_pct: float = 0.875, mode: str = "bilinear"
) -> torch.Tensor:
    """The evaluation view: resize to ``floor(size / crop_pct)`` (antialiased ``mode``, as torchvision's
    Resize on tensors) and keep the centre ``size`` x ``size`` (Resize(256) + CenterCrop(224))."""
    resized = math.floor(size / crop_pct + 1e-6)  # timm's scale size (the epsilon absorbs 16 / 0.8 = 19.99..)
    if images.shape[-1] != resized or images.shape[-2] != resized:
        out = F.interpolate(images.float(), size=(resized, resized), mode=mode, antialias=True)
        images = out if images.is_floating_point() else out.round().clamp(0, 255).to(images.dtype)
    top = int(round((images.shape[-2] - size) / 2.0))  # torchvision's CenterCrop offsets
    left = int(round((images.shape[-1] - size) / 2.0))
    return images[..., top : top + size, left : left + size]


def random_erasing(images: torch.Tensor, probability: float, mean, std) -> torch.Tensor:
    """timm's RandomErasing(probability, mode="pixel", max_count=1) where MAE's finetuning applies it
    (``--reprob 0.25``, in ``util/datasets.py``): on the normalised image, before mixup. The batch is
    normalised with the model's ``mean`` / ``std``, erased (per-pixel N(0, 1) boxes, each sample its own
    draw), and mapped back to unit range without clipping: the models take floats as [0, 1] images and
    normalise them, which restores the erased values exactly (up to float rounding), and mixup / CutMix
    are linear, so mixing before or after the normalisation is the same."""
    from timm.data.random_erasing import RandomErasing

    normalised = normalize_pixels(images, mean, std)
    RandomErasing(probability, mode="pixel", max_count=1, device=images.device)(normalised)  # in place
    return unnormalize_pixels(normalised, mean, std)


# name -> factory(options) -> batch transform; recipes list names under `augmentation`.
AUGMENTATIONS: dict[str, Callable[..., BatchTransform]] = {
    "crop": lambda crop_padding=4, **_: lambda x: random_crop(x, crop_padding),
    "random_resized_crop": lambda crop_size=224, crop_scale=(0.08, 1.0), interpolation="bilinear", **_: (
        lambda x: random_resized_crop(x, crop_size, crop_scale, mode=interpolation)
    ),
    "flip": lambda **_: random_horizontal_flip,
    "rotate": lambda rotation_degrees=15.0, **_: lambda x: random_rotation(x, rotation_degrees),
}
REGISTERED_NAMES["augmentation"] = AUGMENTATIONS  # --help lists them


@register_recipe_check
def check_augmentations(config: RecipeConfig) -> None:
    """Recipe check: every name under ``augmentation`` is a registered transform."""
    for name in config.incremental.augmentation:
        if name not in AUGMENTATIONS:
            raise ConfigError(
                f"Recipe field `augmentation` has value {name!r}; known augmentations are {sorted(AUGMENTATIONS)}. "
                "Fix: change `augmentation`."
            )


def build_augmentation(names: list[str], **options) -> BatchTransform | None:
    """Compose the named transforms in order; ``None`` when the list is empty (no augmentation)."""
    transforms = [AUGMENTATIONS[name](**options) for name in names]
    if not transforms:
        return None

    def augment(images: torch.Tensor) -> torch.Tensor:
        for transform in transforms:
            images = transform(images)
        return images

    return augment
