"""How every model of the project reads images: uint8 in [0, 255] or float in [0, 1], normalised
with per-channel statistics on the device (the batched augmentation feeds uint8 straight in)."""

from __future__ import annotations

from functools import lru_cache

import torch


def unit_float(pixel_values: torch.Tensor) -> torch.Tensor:
    """Images as float in [0, 1] (uint8 divided by 255; floats are taken to be in [0, 1] already)."""
    return pixel_values.float() if pixel_values.is_floating_point() else pixel_values.float() / 255.0


@lru_cache(maxsize=16)
def _statistics(mean: tuple[float, ...], std: tuple[float, ...], device: torch.device):
    """The (1, C, 1, 1) tensors, built once per device: no host-to-device copy in every forward."""
    shape = (1, -1, 1, 1)
    return torch.tensor(mean, device=device).view(shape), torch.tensor(std, device=device).view(shape)


def normalize_pixels(pixel_values: torch.Tensor, mean, std) -> torch.Tensor:
    x = unit_float(pixel_values)
    mean_t, std_t = _statistics(tuple(mean), tuple(std), x.device)
    return (x - mean_t) / std_t


def unnormalize_pixels(x: torch.Tensor, mean, std) -> torch.Tensor:
    """The inverse of :func:`normalize_pixels`, to unit range and without clipping (a model that takes the
    result normalises it back to ``x``)."""
    mean_t, std_t = _statistics(tuple(mean), tuple(std), x.device)
    return x * std_t + mean_t
