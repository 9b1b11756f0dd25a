from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from datasets import Array3D, Dataset, Features, Value

from warmstart_hf.metrics.diagnostics import (
    _rank_measures,
    activation_diagnostics,
    diagnostic_sample,
    gradient_norm,
    weight_diagnostics,
)
from warmstart_hf.models import build_classifier_config, create_classifier


def test_effective_and_stable_rank_of_known_spectra():
    q1, _ = torch.linalg.qr(torch.randn(50, 50, generator=torch.Generator().manual_seed(0)))
    q2, _ = torch.linalg.qr(torch.randn(8, 8, generator=torch.Generator().manual_seed(1)))
    s = torch.tensor([3.0, 1.0, 0, 0, 0, 0, 0, 0])
    features = q1[:, :8] @ torch.diag(s) @ q2.T
    effective, stable = _rank_measures(features)
    assert effective == pytest.approx(math.exp(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25))), rel=1e-6)
    assert stable == 2
    s = torch.tensor([100.0, 0.5, 0.2, 0, 0, 0, 0, 0])  # 99% of the sum is in the first value
    _, stable = _rank_measures(q1[:, :8] @ torch.diag(s) @ q2.T)
    assert stable == 1


def _pixels(n=64):
    rng = np.random.default_rng(0)
    features = Features({"pixel_values": Array3D((1, 8, 8), "uint8"), "labels": Value("int64")})
    return Dataset.from_dict(
        {"pixel_values": rng.integers(0, 255, (n, 1, 8, 8), dtype=np.uint8), "labels": rng.integers(0, 4, n)},
        features=features,
    ).with_format("numpy")


def _model():
    cfg = build_classifier_config(
        "resnet18_cifar", num_labels=4, num_channels=1, image_size=8, width=0.125, image_mean=[0.5], image_std=[0.5]
    )
    return create_classifier(cfg, 0).eval()


class _TwoReLUs(torch.nn.Module):
    """conv(1->2) + ReLU, then conv(2->1) + ReLU (the last one, pooled), with hand-set weights: on an
    image with one bright pixel, channel 0 of the first ReLU is non-zero at that position only, channel
    1 never; the last ReLU is non-zero at that position."""

    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(1, 2, kernel_size=1)
        self.act1 = torch.nn.ReLU()
        self.conv2 = torch.nn.Conv2d(2, 1, kernel_size=1)
        self.act2 = torch.nn.ReLU()
        with torch.no_grad():
            self.conv1.weight.copy_(torch.tensor([1.0, 0.0]).view(2, 1, 1, 1))
            self.conv1.bias.copy_(torch.tensor([-0.5, -1.0]))
            self.conv2.weight.fill_(1.0)
            self.conv2.bias.zero_()

    def forward_features(self, x):
        return self.act2(self.conv2(self.act1(self.conv1(x.float() / 255.0)))).mean((2, 3))


def _images(bright_pixels: list[int], size: int = 32):
    """One image per entry: black, with ``n`` bright pixels in its first row."""
    features = Features({"pixel_values": Array3D((1, size, size), "uint8"), "labels": Value("int64")})
    pixels = np.zeros((len(bright_pixels), 1, size, size), dtype=np.uint8)
    for image, n in zip(pixels, bright_pixels):
        image[0, 0, :n] = 255
    return Dataset.from_dict({"pixel_values": pixels, "labels": [0] * len(pixels)}, features=features).with_format(
        "numpy"
    )


def test_dormant_units_follow_dohare_per_entry_definition():
    # one bright pixel of 1,024 in every image: channel 0 is non-zero on 0.1% of (sample x position)
    # entries, so dormant for Dohare, but its spatial mean is > 0 on every image (active for the old rule)
    d = activation_diagnostics(_TwoReLUs(), _images([1] * 50))
    assert d["num_units"] == 3 and d["num_samples"] == 50
    assert d["dormant_fraction"] == pytest.approx(2 / 3)  # channels 0 and 1; the pooled last ReLU is active
    assert d["dormant_fraction_spatial_mean"] == pytest.approx(1 / 3)  # channel 1 only
    # 11 bright pixels of 1,024 (1.07%) in every image: active for both
    assert activation_diagnostics(_TwoReLUs(), _images([11] * 50))["dormant_fraction"] == pytest.approx(1 / 3)
    # the last ReLU is pooled: active on 1 image of 200 (0.5% of samples) -> dormant
    assert activation_diagnostics(_TwoReLUs(), _images([32] + [0] * 199))["dormant_fraction"] == 1.0


def test_activation_diagnostics_use_batch_statistics_on_a_copy():
    model = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    d = activation_diagnostics(model, _pixels())
    assert not model.training and all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    train_mode = _model().train()
    with torch.no_grad():
        features = train_mode.forward_features(torch.from_numpy(np.asarray(_pixels()[:]["pixel_values"])))
    assert d["effective_rank"] == pytest.approx(_rank_measures(features.float())[0], rel=1e-6)
    assert 0.0 <= d["dormant_fraction"] < 1.0


def test_weight_diagnostics_and_gradient_norm():
    model = _model()
    theta0 = {k: v.clone() for k, v in model.state_dict().items()}
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    d = weight_diagnostics(model, theta0, flat + 1.0)
    assert d["distance_from_init"] == 0.0
    assert d["distance_from_previous_phase"] == pytest.approx(math.sqrt(flat.numel()), rel=1e-5)
    assert d["mean_abs_weight"] == pytest.approx(flat.abs().mean().item())
    pixels = _pixels()
    norm = gradient_norm(model, pixels, batch_size=10)
    model.zero_grad()
    x = torch.from_numpy(np.asarray(pixels[:]["pixel_values"]).astype(np.uint8))
    y = torch.as_tensor(np.asarray(pixels[:]["labels"]))
    model(x, labels=y).loss.backward()
    expected = torch.sqrt(sum((p.grad**2).sum() for p in model.parameters())).item()
    assert norm == pytest.approx(expected, rel=1e-4)
    assert gradient_norm(model, None) is None


def test_diagnostic_sample_is_fixed_and_bounded():
    assert diagnostic_sample(10, 20, 0) == list(range(10))
    a, b = diagnostic_sample(1000, 50, 3), diagnostic_sample(1000, 50, 3)
    assert a == b and len(set(a)) == 50
