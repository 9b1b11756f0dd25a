#!/usr/bin/env python
"""Images/s of the data path alone (no model): the worker path (``views: worker``: each full-resolution
JPEG decoded and cropped per sample, through a DataLoader) next to the device path (``views: device``:
images decoded once to 256-px squares, then batched crops on the device), on synthetic JPEGs of
ImageNet's typical size. Prints a table and one JSON line.

python scripts/benchmark_views.py                                   # this CPU, main process only
python scripts/benchmark_views.py --workers 8 --device cuda --images 4096
"""

from __future__ import annotations

import argparse
import io
import json
import time

import numpy as np
import torch
from datasets import ClassLabel, Dataset, Features, Image
from PIL import Image as PILImage

from warmstart_hf.data.augment import random_horizontal_flip, random_resized_crop
from warmstart_hf.data.pixels import collate_pixels, to_pixel_dataset, to_view_dataset, with_view
from warmstart_hf.data.sample_views import evaluation_view, training_view


def synthetic_jpegs(count: int, width: int, height: int) -> Dataset:
    """Seeded smooth RGB images with noise, JPEG-encoded (quality 90), in an Image column: read as the
    Hub's image sets are, decoded from their bytes at every access."""
    rng = np.random.default_rng(0)
    rows = []
    for _ in range(count):
        coarse = rng.integers(0, 256, (height // 16 + 1, width // 16 + 1, 3), dtype=np.uint8)
        image = PILImage.fromarray(coarse).resize((width, height), PILImage.BICUBIC)
        noisy = np.clip(np.asarray(image, dtype=np.int16) + rng.integers(-20, 21, (height, width, 3)), 0, 255)
        buffer = io.BytesIO()
        PILImage.fromarray(noisy.astype(np.uint8)).save(buffer, format="JPEG", quality=90)
        rows.append({"bytes": buffer.getvalue(), "path": None})
    features = Features({"image": Image(), "label": ClassLabel(num_classes=10)})
    return Dataset.from_dict({"image": rows, "label": [i % 10 for i in range(count)]}, features=features)


def _rate(dataset, args, device: torch.device, augment=None) -> float:
    """Images/s of one pass of a shuffled DataLoader over ``dataset`` to ``device`` (+ ``augment`` there)."""
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=args.batch, shuffle=True, num_workers=args.workers, collate_fn=collate_pixels
    )
    began = time.perf_counter()
    for batch in loader:
        images = batch["pixel_values"].to(device, non_blocking=True)
        if augment is not None:
            images = augment(images)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return len(dataset) / (time.perf_counter() - began)


def measure(args) -> dict:
    device = torch.device(args.device)
    width, height = (int(v) for v in args.size.split("x"))
    source = synthetic_jpegs(args.images, width, height)
    crop = args.crop
    view = training_view(
        crop, crop_scale=(0.2, 1.0), flip=True, interpolation=args.interpolation, num_channels=3, crop_pct=0.875,
        rand_augment_config=args.rand_augment,
    )
    rows = to_view_dataset(source, evaluation_view(crop, 0.875, args.interpolation, 3))
    worker = _rate(with_view(rows, view), args, device)
    began = time.perf_counter()
    stored = to_pixel_dataset(source, round(crop / 0.875), 3, "center_square")
    decode_once = args.images / (time.perf_counter() - began)

    def device_view(images):
        return random_horizontal_flip(random_resized_crop(images, crop, (0.2, 1.0), mode=args.interpolation))

    return {
        "images": args.images, "size": args.size, "crop": crop, "workers": args.workers, "device": args.device,
        "rand_augment": args.rand_augment, "interpolation": args.interpolation,
        "torch_threads": torch.get_num_threads(),
        "worker_path_images_per_s": round(worker, 1),
        "device_path_decode_once_images_per_s": round(decode_once, 1),
        "device_path_images_per_s": round(_rate(stored, args, device, device_view), 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--size", default="500x375", help="WIDTHxHEIGHT of the full-resolution images")
    parser.add_argument("--crop", type=int, default=224)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--workers", type=int, default=0, help="DataLoader worker processes (0: the main one)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--interpolation", choices=["bilinear", "bicubic"], default="bicubic")
    parser.add_argument("--rand_augment", default=None, help="e.g. rand-m9-mstd0.5-inc1 (MAE finetuning)")
    result = measure(parser.parse_args())
    print("| path | images/s |\n|---|---|")
    print(f"| worker: full {result['size']} JPEG -> crop {result['crop']} | {result['worker_path_images_per_s']} |")
    print(f"| device: decode once to {round(result['crop'] / 0.875)}-px squares | "
          f"{result['device_path_decode_once_images_per_s']} |")
    print(f"| device: stored squares -> crop {result['crop']} | {result['device_path_images_per_s']} |")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
