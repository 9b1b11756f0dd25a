from __future__ import annotations

import torch
import torch.nn.functional as F

from warmstart_hf.data.augment import build_augmentation, random_crop, random_horizontal_flip


def test_random_crop_is_a_window_of_the_padded_image_per_sample():
    torch.manual_seed(0)
    images = torch.randint(1, 255, (64, 3, 6, 6), dtype=torch.uint8)
    out = random_crop(images, padding=2)
    assert out.shape == images.shape and out.dtype == torch.uint8
    padded = F.pad(images, (2, 2, 2, 2))
    offsets = set()
    for b in range(images.shape[0]):
        matches = [
            (dy, dx)
            for dy in range(5)
            for dx in range(5)
            if torch.equal(padded[b, :, dy : dy + 6, dx : dx + 6], out[b])
        ]
        assert matches, "every output must be a window of its own padded input"
        offsets.add(matches[0])
    assert len(offsets) > 5  # offsets differ between samples of one batch


def test_horizontal_flip_mirrors_about_half_of_the_batch():
    torch.manual_seed(0)
    images = torch.randint(0, 255, (400, 1, 4, 5), dtype=torch.uint8)
    out = random_horizontal_flip(images)
    flipped = [torch.equal(out[b], images[b].flip(-1)) and not torch.equal(out[b], images[b]) for b in range(400)]
    kept = [torch.equal(out[b], images[b]) for b in range(400)]
    assert all(f or k for f, k in zip(flipped, kept))
    assert 150 < sum(flipped) < 250


def test_no_augmentation_is_none_and_composition_keeps_shape():
    assert build_augmentation([]) is None
    augment = build_augmentation(["crop", "flip"], crop_padding=4)
    x = torch.randint(0, 255, (8, 3, 32, 32), dtype=torch.uint8)
    assert augment(x).shape == x.shape


def test_rotation_by_a_quarter_turn_is_exact_and_angles_differ_per_sample():
    import math

    from warmstart_hf.data.augment import random_rotation, rotate

    images = torch.randint(0, 255, (1, 3, 6, 6), dtype=torch.uint8).repeat(2, 1, 1, 1)
    quarter = rotate(images, torch.tensor([math.pi / 2, -math.pi / 2]))
    assert torch.equal(quarter[0], torch.rot90(images[0], k=1, dims=(1, 2))) or torch.equal(
        quarter[0], torch.rot90(images[0], k=-1, dims=(1, 2))
    )
    assert torch.equal(quarter[1], torch.rot90(quarter[0], k=2, dims=(1, 2)))  # opposite directions
    assert torch.equal(rotate(images, torch.zeros(2)), images)
    torch.manual_seed(0)
    same = torch.randint(0, 255, (1, 1, 9, 9), dtype=torch.uint8).repeat(16, 1, 1, 1)
    out = random_rotation(same, degrees=15)
    assert out.dtype == torch.uint8 and out.shape == same.shape
    assert len({tuple(o.flatten().tolist()) for o in out}) > 8  # one angle per sample


def test_built_augmentations_apply_each_named_transform():
    torch.manual_seed(0)
    x = torch.randint(1, 255, (64, 1, 6, 6), dtype=torch.uint8)
    padded = F.pad(x, (2, 2, 2, 2))
    crop = build_augmentation(["crop"], crop_padding=2)(x)
    windows = [[padded[b, :, dy : dy + 6, dx : dx + 6] for dy in range(5) for dx in range(5)] for b in range(64)]
    assert all(any(torch.equal(crop[b], w) for w in windows[b]) for b in range(64))
    assert sum(not torch.equal(crop[b], x[b]) for b in range(64)) > 48  # 24 of 25 offsets move the image
    flip = build_augmentation(["flip"])(x)
    flipped = sum(torch.equal(flip[b], x[b].flip(-1)) for b in range(64))
    assert all(torch.equal(flip[b], x[b]) or torch.equal(flip[b], x[b].flip(-1)) for b in range(64))
    assert 16 < flipped < 48
    rotated = build_augmentation(["rotate"], rotation_degrees=30)(x)
    assert sum(not torch.equal(rotated[b], x[b]) for b in range(64)) > 48
    both = build_augmentation(["crop", "flip"], crop_padding=2)(x)
    assert sum(not torch.equal(both[b], x[b]) for b in range(64)) > 48
