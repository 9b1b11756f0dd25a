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


class _FourChannels(torch.nn.Module):
    """conv(1->4) + ReLU with hand-set weights: channel 0 is always active, channel 1 never, channels
    2 and 3 exactly on the non-blank images."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, kernel_size=1)
        self.act = torch.nn.ReLU()
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([0.0, 0.0, 1.0, 1.0]).view(4, 1, 1, 1))
            self.conv.bias.copy_(torch.tensor([1.0, -1.0, -0.5, -0.5]))

    def forward_features(self, x):
        return self.act(self.conv(x.float() / 255.0)).mean((2, 3))


def _images(values):
    features = Features({"pixel_values": Array3D((1, 2, 2), "uint8"), "labels": Value("int64")})
    pixels = np.stack([np.full((1, 2, 2), v, dtype=np.uint8) for v in values])
    return Dataset.from_dict({"pixel_values": pixels, "labels": [0] * len(values)}, features=features).with_format(
        "numpy"
    )


def test_dormant_units_are_counted_per_channel():
    blank_but_one = [255] + [0] * 199
    d = activation_diagnostics(_FourChannels(), _images(blank_but_one), batch_size=64)
    assert d["num_units"] == 4 and d["num_samples"] == 200
    assert d["dormant_fraction"] == 0.75  # 1 never; 2 and 3 on 0.5% of the inputs (< 1%)
    two_of_200 = [255, 255] + [0] * 198
    assert activation_diagnostics(_FourChannels(), _images(two_of_200))["dormant_fraction"] == 0.25  # 1% is not < 1%
    half = [255] * 100 + [0] * 100
    assert activation_diagnostics(_FourChannels(), _images(half))["dormant_fraction"] == 0.25
    model = _model()
    assert 0.0 <= activation_diagnostics(model, _pixels())["dormant_fraction"] < 1.0


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
