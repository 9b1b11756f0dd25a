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


def test_random_resized_crop_draws_boxes_as_torchvision_and_resamples_them_exactly():
    from warmstart_hf.data.augment import _crop_boxes, random_resized_crop, resample_boxes

    torch.manual_seed(0)
    boxes = _crop_boxes(4000, 400, 300, (0.08, 1.0), (3 / 4, 4 / 3), "cpu")
    top, left, h, w = boxes.unbind(1)
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= 400).all() and (left + w <= 300).all()
    area, ratio = h * w / (400 * 300), w / h
    assert area.min() >= 0.079 and area.max() <= 1.0 and ratio.min() > 0.74 and ratio.max() < 1.34
    assert 0.3 < area.median() < 0.6  # the area is uniform over [0.08, 1] among the draws that fit
    assert len(set(zip(top.tolist(), left.tolist()))) > 1000  # one draw per sample
    images = torch.rand(2, 3, 30, 30) * 255
    boxes = torch.tensor([[2.0, 3.0, 12.0, 9.0], [5.0, 0.0, 20.0, 25.0]])
    for size in (24, 6):  # enlarged and shrunk: the box cropped, then resized (no pixel from beyond the box)
        expected = [
            F.interpolate(images[i : i + 1, :, t : t + h, x : x + w], size=(size, size), mode="bilinear")[0]
            for i, (t, x, h, w) in enumerate(boxes.int().tolist())
        ]
        assert torch.allclose(resample_boxes(images, boxes, size), torch.stack(expected), atol=1e-3)
    out = random_resized_crop(torch.randint(0, 256, (8, 3, 20, 20), dtype=torch.uint8), 16)
    assert out.shape == (8, 3, 16, 16) and out.dtype == torch.uint8


def test_resize_center_crop_is_torchvisions_resize_then_center_crop():
    from torchvision.transforms.v2 import functional as TF

    from warmstart_hf.data.augment import resize_center_crop

    images = torch.randint(0, 256, (2, 3, 40, 40), dtype=torch.uint8)
    expected = TF.center_crop(TF.resize(images, [32], antialias=True), [28])
    got = resize_center_crop(images, 28, 0.875)
    assert (got.int() - expected.int()).abs().max() <= 1  # rounding of the interpolated values
    assert torch.equal(resize_center_crop(images, 35, 0.875), images[..., 2:37, 2:37])  # already 40: crop only
    assert torch.equal(resize_center_crop(images, 37, 0.925), TF.center_crop(images, [37]))  # odd margin: round()


def test_random_resized_crop_falls_back_as_torchvision_when_no_draw_fits():
    from torchvision.transforms import RandomResizedCrop

    from warmstart_hf.data.augment import _crop_boxes

    scale, ratio = (0.9, 1.0), (3 / 4, 4 / 3)  # a 10 x 100 image: no box of >= 90% area has ratio <= 4/3
    expected = RandomResizedCrop.get_params(torch.zeros(1, 10, 100), list(scale), list(ratio))
    boxes = _crop_boxes(50, 10, 100, scale, ratio, "cpu")
    assert {tuple(int(v) for v in box) for box in boxes} == {tuple(expected)}
