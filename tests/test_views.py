"""Where the 224-px views are made (``views``): the worker path crops each full-resolution image as the
MAE reference does (torchvision's PIL transforms, bicubic), RandAugment and random erasing are applied
when on and only then, random erasing on the normalised image is what the reference's is, and a run
through the worker path finishes."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from datasets import ClassLabel, Dataset, Features, Image
from PIL import Image as PILImage
from torchvision.transforms import InterpolationMode, RandomResizedCrop
from torchvision.transforms import functional as TF

from tests.conftest import REPO
from warmstart_hf.config import ConfigError, parse_config
from warmstart_hf.data.augment import random_erasing, random_resized_crop, resize_center_crop
from warmstart_hf.loop import run_experiment
from warmstart_hf.models.normalize import normalize_pixels
from warmstart_hf.tasks import create_task

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
TINY_MAE = {
    "task": "mae_pretrain",
    "dataset": "synthetic:3:40:30:10",
    "image_column": "image",
    "label_column": "label",
    "train_split": "train",
    "test_split": "test",
    "image_size": 32,
    "crop_size": 16,
    "patch_size": 4,
    "mae_hidden_size": 16,
    "mae_layers": 1,
    "mae_heads": 2,
    "mae_decoder_hidden_size": 8,
    "mae_decoder_layers": 1,
    "mae_decoder_heads": 2,
    "image_mean": MEAN,
    "image_std": STD,
    "augmentation": ["random_resized_crop"],
    "use_cpu": True,
}
WORKER = {"views": "worker", "decode": "lazy", "interpolation": "bicubic"}


def _task(**fields):
    return create_task(parse_config(recipe={**TINY_MAE, **fields}))


def _images_dataset(images: list[PILImage.Image]) -> Dataset:
    features = Features({"image": Image(), "label": ClassLabel(num_classes=1)})
    return Dataset.from_dict({"image": images, "label": [0] * len(images)}, features=features)


def _wide_image_with_marked_edges(width: int = 40, height: int = 32) -> PILImage.Image:
    """Noise, with a pure red band along the left edge and a pure blue band along the right edge."""
    pixels = np.random.default_rng(0).integers(60, 200, (height, width, 3)).astype(np.uint8)
    pixels[:, :3] = (255, 0, 0)
    pixels[:, -3:] = (0, 0, 255)
    return PILImage.fromarray(pixels, mode="RGB")


def _data(crop_size: int = 16):
    return SimpleNamespace(crop_size=crop_size, model_config=SimpleNamespace(image_mean=MEAN, image_std=STD))


def _training_views(task, images: list[PILImage.Image], crop_size: int = 16) -> np.ndarray:
    rows = task.decode_split(_images_dataset(images), crop_size)
    return np.stack(task.train_rows(_data(crop_size))(rows)[:]["pixel_values"])


def test_worker_crop_is_made_from_the_full_image_bicubic():
    """The worker path's crop is torchvision's RandomResizedCrop (bicubic) of the full 40 x 32 image, the
    same draw; with crop_scale [1, 1] it covers (nearly) the whole image, so both marked edges show. The
    device path's stored 32-px square has lost them."""
    image = _wide_image_with_marked_edges()
    task = _task(**WORKER, augmentation=["random_resized_crop"], crop_scale=[1.0, 1.0])
    for seed in range(5):
        torch.manual_seed(seed)
        view = _training_views(task, [image])[0]
        torch.manual_seed(seed)
        crop = RandomResizedCrop(16, scale=(1.0, 1.0), interpolation=InterpolationMode.BICUBIC)(image)
        assert view.dtype == np.uint8 and view.shape == (3, 16, 16)
        np.testing.assert_array_equal(view, np.asarray(crop).transpose(2, 0, 1))
        assert view[0, :, 0].min() > 200 and view[2, :, -1].min() > 200  # red left edge, blue right edge
    device = _task(augmentation=["random_resized_crop"], crop_scale=[1.0, 1.0], resize_mode="center_square")
    stored = torch.from_numpy(np.stack(device.decode_split(_images_dataset([image]), 16)[:]["pixel_values"]))
    cropped = device.augmentation(_data())(stored)[0].numpy()
    assert cropped[0, :, 0].max() < 255 and cropped[2, :, -1].max() < 255  # cut off with the square


def test_worker_evaluation_view_is_torchvision_resize_then_centre_crop():
    """Every split reads as Resize(floor(16 / 0.875) = 18, bicubic) + CenterCrop(16) of the full image."""
    images = [_wide_image_with_marked_edges(50, 37), _wide_image_with_marked_edges(23, 41)]
    task = _task(**WORKER, eval_crop_pct=0.875)
    rows = task.decode_split(_images_dataset(images), 16)
    for image, view in zip(images, rows[:]["pixel_values"]):
        resized = TF.resize(image, 18, interpolation=InterpolationMode.BICUBIC)
        expected = np.asarray(TF.center_crop(resized, [16, 16])).transpose(2, 0, 1)
        np.testing.assert_array_equal(view, expected)
    assert task.eval_transform(_data()) is None  # nothing more on the device


def test_rand_augment_changes_the_views_only_when_on():
    """A 48 x 24 image with crop_scale [1, 1]: no whole-area box fits the ratio range, so every crop is
    torchvision's fallback, the centre 32 x 24, resized: without RandAugment all views are that."""
    images = [_wide_image_with_marked_edges(48, 24)] * 24
    fixed = {**WORKER, "augmentation": ["random_resized_crop"], "crop_scale": [1.0, 1.0]}
    centre = TF.resize(TF.center_crop(images[0], [24, 32]), [16, 16], interpolation=InterpolationMode.BICUBIC)
    expected = np.asarray(centre).transpose(2, 0, 1)
    plain = _training_views(_task(**fixed), images)
    assert all(np.array_equal(view, expected) for view in plain)
    augmented = _training_views(_task(**fixed, rand_augment="rand-m9-mstd0.5-inc1"), images)
    changed = sum(not np.array_equal(view, expected) for view in augmented)
    assert changed >= len(images) // 2  # two ops per image, each applied with probability 1/2: most change


def test_random_erasing_erases_about_its_probability_of_images_and_nothing_when_off():
    images = torch.randint(0, 256, (400, 3, 16, 16), dtype=torch.uint8)
    task = _task(**WORKER, random_erasing=0.25)
    torch.manual_seed(0)
    out = task.augmentation(_data())(images)
    unit = images.float() / 255
    erased = (~torch.isclose(out, unit, atol=1e-5)).flatten(1).any(1).float().mean()
    assert 0.15 < erased < 0.35
    assert _task(**WORKER).augmentation(_data()) is None  # off: the worker's view goes to the model as it is
    device = _task(augmentation=[], image_size=16, random_erasing=0.25)  # the device path erases too
    assert (~torch.isclose(device.augmentation(_data())(images), unit, atol=1e-5)).any()


def test_erasing_before_normalisation_is_the_references_erasing_on_the_normalised_image():
    """The reference erases the normalised tensor (timm RandomErasing, mode pixel), then mixes. Here the
    batch is erased, mapped back to unit range unclipped, mixed, and normalised by the model: the model
    sees the same tensor."""
    from timm.data import Mixup
    from timm.data.random_erasing import RandomErasing

    images = torch.randint(0, 256, (8, 3, 16, 16), dtype=torch.uint8)
    labels = torch.arange(8) % 4
    reference_input = normalize_pixels(images, MEAN, STD)
    torch.manual_seed(1), np.random.seed(1), __import__("random").seed(1)
    RandomErasing(0.9, mode="pixel", max_count=1, device="cpu")(reference_input)
    reference, reference_targets = Mixup(mixup_alpha=0.8, cutmix_alpha=1.0, num_classes=4)(reference_input, labels)
    torch.manual_seed(1), np.random.seed(1), __import__("random").seed(1)
    ours = random_erasing(images, 0.9, MEAN, STD)
    assert ours.min() < 0 or ours.max() > 1  # unclipped: N(0, 1) boxes leave the unit range
    mixed, targets = Mixup(mixup_alpha=0.8, cutmix_alpha=1.0, num_classes=4)(ours, labels)
    assert not torch.equal(reference_input, normalize_pixels(images, MEAN, STD))  # something was erased
    torch.testing.assert_close(normalize_pixels(mixed, MEAN, STD), reference, atol=2e-5, rtol=0)
    torch.testing.assert_close(targets, reference_targets)


def test_device_path_bicubic_resamples_as_torch_interpolate():
    images = torch.randint(0, 256, (2, 3, 12, 12), dtype=torch.uint8)
    full = random_resized_crop(images, 20, scale=(1.0, 1.0), ratio=(1.0, 1.0), mode="bicubic")
    expected = F.interpolate(images.float(), size=(20, 20), mode="bicubic", align_corners=False)
    inner = (slice(None), slice(None), slice(2, -2), slice(2, -2))  # the box's edge: see resample_boxes
    assert (full[inner].float() - expected.round().clamp(0, 255)[inner]).abs().max() <= 1
    bilinear = random_resized_crop(images, 20, scale=(1.0, 1.0), ratio=(1.0, 1.0))
    assert not torch.equal(full, bilinear)
    view = resize_center_crop(images, 8, 0.5, mode="bicubic")
    resized = F.interpolate(images.float(), size=(16, 16), mode="bicubic", antialias=True)
    assert torch.equal(view, resized.round().clamp(0, 255).to(torch.uint8)[..., 4:12, 4:12])


def test_the_training_loader_reads_the_training_view_and_prediction_the_evaluation_view(tmp_path):
    """48 x 24 images, crop_scale [1, 1]: the training view is the centre 32 x 24 resized to 16 (the
    crop's fallback), the evaluation view Resize(18) + CenterCrop(16): the trainer's training batches
    are the first, its evaluation batches the second."""
    from transformers import TrainingArguments

    from warmstart_hf.data.pixels import collate_pixels
    from warmstart_hf.trainer import PhaseTrainer

    images = [_wide_image_with_marked_edges(48, 24)] * 4
    task = _task(**WORKER, crop_scale=[1.0, 1.0])
    rows = task.decode_split(_images_dataset(images), 16)
    args = TrainingArguments(
        output_dir=str(tmp_path),
        use_cpu=True,
        per_device_train_batch_size=4,
        per_device_eval_batch_size=4,
        remove_unused_columns=False,
        report_to="none",
    )
    trainer = PhaseTrainer(
        model=torch.nn.Linear(1, 1),
        args=args,
        train_dataset=rows,
        data_collator=collate_pixels,
        train_rows=task.train_rows(_data()),
    )
    centre = TF.resize(TF.center_crop(images[0], [24, 32]), [16, 16], interpolation=InterpolationMode.BICUBIC)
    trained = next(iter(trainer.get_train_dataloader()))["pixel_values"]
    assert all(np.array_equal(view, np.asarray(centre).transpose(2, 0, 1)) for view in trained.numpy())
    evaluated = next(iter(trainer.get_eval_dataloader(rows)))["pixel_values"]
    np.testing.assert_array_equal(evaluated.numpy(), np.stack(rows[:]["pixel_values"]))
    assert not torch.equal(trained, evaluated)


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"views": "worker"}, "`views`"),  # decode: eager
        ({**WORKER, "data_on_device": "always"}, "`views`"),
        ({**WORKER, "augmentation": ["random_resized_crop", "rotate"]}, "`augmentation`"),
        ({"rand_augment": "rand-m9-mstd0.5-inc1"}, "`rand_augment`"),  # views: device
        ({**WORKER, "rand_augment": "bogus"}, "`rand_augment`"),
        ({"random_erasing": 1.0}, "`random_erasing`"),
    ],
)
def test_recipe_checks_refuse_what_cannot_apply(fields, field):
    with pytest.raises(ConfigError, match=field):
        parse_config(recipe={**TINY_MAE, **fields})


def test_worker_views_and_erasing_need_a_task_that_crops():
    digits = yaml.safe_load((REPO / "recipes" / "digits.yaml").read_text())
    with pytest.raises(ConfigError, match="`views`"):
        parse_config(recipe={**digits, "views": "worker", "decode": "lazy"})
    with pytest.raises(ConfigError, match="`random_erasing`"):
        parse_config(recipe={**digits, "random_erasing": 0.25})


REAL = sorted(REPO.glob("recipes/mae/[fip]*.yaml")) + [
    REPO / "recipes" / "finetune" / f"{name}.yaml"
    for name in ("aircraft", "caltech101", "cars", "dtd", "flowers102", "pets")
]


@pytest.mark.parametrize("path", REAL, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_real_recipes_crop_the_full_image_with_the_references_settings(path: Path):
    config = parse_config([str(path)])
    inc = config.incremental
    assert (inc.views, config.data.decode) == ("worker", "lazy")
    mae = path.parent.name == "mae"
    assert inc.interpolation == ("bicubic" if mae else "bilinear")
    finetune = path.stem.startswith("finetune_")
    assert inc.rand_augment == ("rand-m9-mstd0.5-inc1" if finetune else None)
    assert inc.random_erasing == (0.25 if finetune else 0.0)


def test_a_run_through_the_worker_path_finishes(tmp_path):
    """MAE pretraining on synthetic 40-px images through the worker path (one worker process), with
    RandAugment and random erasing: two phases, their records and models."""
    recipe = {
        **TINY_MAE,
        **WORKER,
        "augmentation": ["random_resized_crop", "flip"],
        "crop_scale": [0.2, 1.0],
        "rand_augment": "rand-m9-mstd0.5-inc1",
        "random_erasing": 0.25,
        "num_phases": 2,
        "strategies": ["warm"],
        "num_train_epochs": 1,
        "per_device_train_batch_size": 8,
        "dataloader_num_workers": 1,
        "probe_examples": 8,
        "diagnostics": False,
        "output_dir": str(tmp_path),
        "run_name": "worker",
        "seed": 0,
    }
    run_dir = run_experiment(parse_config(recipe=recipe))
    records = [json.loads(line) for line in (run_dir / "warm-seed0" / "results.jsonl").read_text().splitlines()]
    assert [r["phase"] for r in records] == [0, 1]
    assert all(math.isfinite(r["probe_loss"]) and r["steps"] > 0 for r in records)
    assert (run_dir / "warm-seed0" / "phase-01" / "model.safetensors").exists()
