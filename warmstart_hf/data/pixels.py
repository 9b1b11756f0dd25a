"""Decode images once into fixed-size uint8 tensors, the format every phase trains from.

Training reads an ``Array3D``-typed column with torch formatting: whole uint8 arrays, not per-row
nested lists (datasets' guide "Use with PyTorch", N-dimensional arrays:
https://huggingface.co/docs/datasets/use_with_pytorch).
"""

from __future__ import annotations

from functools import partial

import numpy as np
import torch
from datasets import Array3D, Dataset, Features, Value
from PIL import Image as PILImage


def center_square(image: PILImage.Image, size: int) -> PILImage.Image:
    """Resize the shorter side to ``size`` and keep the central ``size`` x ``size`` square (bilinear, as
    torchvision's Resize(size) + CenterCrop(size))."""
    w, h = image.size
    new_w, new_h = (size, int(size * h / w)) if w <= h else (int(size * w / h), size)  # torchvision truncates
    image = image.resize((new_w, new_h), PILImage.BILINEAR)
    left, top = int(round((new_w - size) / 2.0)), int(round((new_h - size) / 2.0))
    return image.crop((left, top, left + size, top + size))


def _decode_images(images: list, image_size: int, num_channels: int, resize_mode: str) -> list[np.ndarray]:
    mode = "L" if num_channels == 1 else "RGB"
    arrays = []
    for image in images:
        image = image.convert(mode)
        if image.size != (image_size, image_size) and resize_mode == "center_square":
            image = center_square(image, image_size)
        elif image.size != (image_size, image_size):
            image = image.resize((image_size, image_size), PILImage.BILINEAR)
        array = np.asarray(image, dtype=np.uint8)
        arrays.append(array[None] if array.ndim == 2 else array.transpose(2, 0, 1))
    return arrays


def _decode_batch(batch: dict, image_size: int, num_channels: int, resize_mode: str = "stretch") -> dict:
    return {
        "pixel_values": _decode_images(batch["image"], image_size, num_channels, resize_mode),
        "labels": batch["label"],
    }


def _decode_on_access(batch: dict, image_size: int, num_channels: int, resize_mode: str) -> dict:
    """The lazy path's transform: the rows' images decoded when they are read (other columns as they are)."""
    out = {key: value for key, value in batch.items() if key != "image"}
    if "image" in batch:
        out["pixel_values"] = _decode_images(batch["image"], image_size, num_channels, resize_mode)
    return out


def _view_on_access(batch: dict, view) -> dict:
    """The worker path's transform: each row's full-resolution image made into ``view`` (a uint8 array)
    when it is read, in the DataLoader's workers (other columns as they are)."""
    out = {key: value for key, value in batch.items() if key != "image"}
    if "image" in batch:
        out["pixel_values"] = [view(image) for image in batch["image"]]
    return out


def to_view_dataset(ds: Dataset, view) -> Dataset:
    """``pixel_values`` (``view`` of each full-resolution image, made when read: nothing decoded is stored)
    and ``labels``; :func:`with_view` gives the same rows another view (the training view)."""
    return with_view(ds.rename_column("label", "labels"), view)


def with_view(ds: Dataset, view) -> Dataset:
    """The same rows (of a :func:`to_view_dataset` set, or a selection of one) read through ``view``."""
    return ds.with_transform(partial(_view_on_access, view=view))


def to_pixel_dataset(
    ds: Dataset, image_size: int, num_channels: int, resize_mode: str = "stretch", lazy: bool = False
) -> Dataset:
    """``pixel_values`` (stored as uint8, C x H x W) and ``labels``, numpy-formatted.

    datasets' numpy and torch formatters return integer arrays as int64; :func:`collate_pixels`
    narrows each batch back to uint8, so what moves to the device is 1 byte per pixel. ``lazy``: no
    decoded copy is written; each row's image is decoded (to the same uint8 array) when it is read, in
    the DataLoader's workers, for sets whose decoded copy would not fit on disk (ImageNet-1K)."""
    if lazy:
        fn = partial(_decode_on_access, image_size=image_size, num_channels=num_channels, resize_mode=resize_mode)
        return ds.rename_column("label", "labels").with_transform(fn)
    features = Features(
        {
            "pixel_values": Array3D(shape=(num_channels, image_size, image_size), dtype="uint8"),
            "labels": Value("int64"),
        }
    )
    pixels = ds.map(
        _decode_batch,
        batched=True,
        batch_size=256,
        fn_kwargs={"image_size": image_size, "num_channels": num_channels, "resize_mode": resize_mode},
        remove_columns=ds.column_names,
        features=features,
        desc="Decoding images to uint8 tensors",
    )
    return pixels.with_format("numpy")


def collate_pixels(rows: list[dict]) -> dict[str, torch.Tensor]:
    """Stack rows into ``pixel_values`` (uint8) and ``labels`` (int64) tensors."""
    return {
        "pixel_values": torch.from_numpy(np.stack([r["pixel_values"] for r in rows]).astype(np.uint8)),
        "labels": torch.as_tensor(np.asarray([r["labels"] for r in rows], dtype=np.int64)),
    }


def channel_statistics(pixels: Dataset, batch_size: int = 4096) -> tuple[list[float], list[float]]:
    """Per-channel mean and std in [0, 1] over a pixel dataset (for normalization on the device)."""
    total = None
    total_sq = None
    count = 0
    for start in range(0, len(pixels), batch_size):
        x = torch.from_numpy(np.asarray(pixels[start : start + batch_size]["pixel_values"])).double() / 255.0
        s = x.sum(dim=(0, 2, 3))
        sq = (x * x).sum(dim=(0, 2, 3))
        total = s if total is None else total + s
        total_sq = sq if total_sq is None else total_sq + sq
        count += x.shape[0] * x.shape[2] * x.shape[3]
    mean = total / count
    std = (total_sq / count - mean * mean).clamp_min(1e-12).sqrt()
    return [round(float(v), 6) for v in mean], [round(float(v), 6) for v in std]


def iter_pixel_batches(pixels: Dataset, batch_size: int):
    """``(pixel_values uint8, labels int64)`` tensors over a pixel dataset, in order, no augmentation."""
    for start in range(0, len(pixels), batch_size):
        rows = pixels[start : start + batch_size]
        yield (
            torch.from_numpy(np.asarray(rows["pixel_values"]).astype(np.uint8)),
            torch.as_tensor(np.asarray(rows["labels"], dtype=np.int64)),
        )
