from __future__ import annotations

import timm
import torch
from transformers import AutoModelForImageClassification

import warmstart_hf.models  # noqa: F401 - registers the model
from warmstart_hf.models import build_classifier_config, create_classifier


def test_resnet18_cifar_is_registered_with_a_cifar_stem():
    model = timm.create_model("resnet18_cifar", num_classes=100)
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert isinstance(model.maxpool, torch.nn.Identity)
    assert 11.1e6 < sum(p.numel() for p in model.parameters()) < 11.3e6  # ResNet-18 for CIFAR-100
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 100)
    narrow = timm.create_model("resnet18_cifar", num_classes=10, width=0.25)
    assert narrow.conv1.out_channels == 16 and narrow.num_features == 128
    assert narrow.layer1[0].downsample is None


def _config(**kw):
    return build_classifier_config(
        "resnet18_cifar",
        num_labels=10,
        num_channels=1,
        image_size=8,
        width=0.125,
        image_mean=[0.3],
        image_std=[0.2],
        id2label={i: str(i) for i in range(10)},
        **kw,
    )


def test_fresh_draws_are_seeded():
    a, b, c = create_classifier(_config(), 1), create_classifier(_config(), 1), create_classifier(_config(), 2)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert not torch.equal(a.timm_model.conv1.weight, c.timm_model.conv1.weight)


def test_safetensors_checkpoint_round_trips_exactly(tmp_path):
    model = create_classifier(_config(), 0)
    model.train()
    model(torch.randint(0, 255, (16, 1, 8, 8), dtype=torch.uint8))  # move BatchNorm statistics
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists() and not list(tmp_path.glob("*.bin"))
    loaded = AutoModelForImageClassification.from_pretrained(tmp_path)
    original, restored = model.state_dict(), loaded.state_dict()
    assert original.keys() == restored.keys()
    for key in original:
        assert torch.equal(original[key], restored[key]), key
    x = torch.randint(0, 255, (4, 1, 8, 8), dtype=torch.uint8)
    model.eval()
    loaded.eval()
    assert torch.equal(model(x).logits, loaded(x).logits)
    assert torch.allclose(model(x).logits, model(x.float() / 255).logits, atol=1e-5)
