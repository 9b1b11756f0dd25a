"""The fast path's building blocks; that it trains the default path's update is tested in
tests/test_loss_scaling.py (one step through the real PhaseTrainer, compiled too)."""

from __future__ import annotations

import pytest
import torch

from warmstart_hf.fast_path import FastPathError, channels_last_batch, fused, to_channels_last
from warmstart_hf.models.probe import lars_optimizer


def _model() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.Linear(64, 2))


def test_fused_keeps_groups_and_hyperparameters():
    model = _model()
    decay, rest = list(model[0].parameters()), list(model[2].parameters())
    groups = [{"params": decay, "weight_decay": 5e-4}, {"params": rest, "weight_decay": 0.0}]
    optimizer = fused(torch.optim.SGD(groups, lr=0.1, momentum=0.9, nesterov=True))
    assert isinstance(optimizer, torch.optim.SGD) and optimizer.defaults["fused"]
    assert [g["weight_decay"] for g in optimizer.param_groups] == [5e-4, 0.0]
    assert all(g["fused"] and g["momentum"] == 0.9 and g["nesterov"] for g in optimizer.param_groups)
    assert [p for g in optimizer.param_groups for p in g["params"]] == decay + rest


def test_fused_adamw_keeps_its_hyperparameters():
    optimizer = fused(torch.optim.AdamW(_model().parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.05))
    group = optimizer.param_groups[0]
    assert isinstance(optimizer, torch.optim.AdamW) and group["fused"]
    assert (group["betas"], group["weight_decay"], group["lr"]) == ((0.9, 0.95), 0.05, 1e-3)


def test_fused_refuses_an_optimizer_without_a_fused_kernel():
    model = _model()
    with pytest.raises(FastPathError, match="fused_optimizer"):
        fused(lars_optimizer(model, 0.1))


def test_channels_last_converts_4d_weights_and_image_batches_only():
    model = to_channels_last(_model())
    assert model[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert not model[0].weight.is_contiguous()
    batch = channels_last_batch(torch.zeros(2, 3, 5, 5, dtype=torch.uint8))
    assert batch.is_contiguous(memory_format=torch.channels_last) and batch.dtype == torch.uint8
    flat = torch.zeros(2, 7)
    assert channels_last_batch(flat) is flat


def test_a_carried_state_is_loaded_under_the_new_optimizers_kernel_choice():
    from warmstart_hf.optimizer_state import apply_optimizer_state

    model = _model()
    plain = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.zeros(2, 3, 6, 6)).sum().backward()
    plain.step()
    fast = fused(torch.optim.AdamW(model.parameters(), lr=5e-4))
    apply_optimizer_state(fast, plain.state_dict())
    group = fast.param_groups[0]
    assert group["fused"] and group["lr"] == 5e-4  # the new kernel and hyperparameters, the old moments
    first = next(iter(fast.state.values()))
    assert torch.equal(first["exp_avg"], next(iter(plain.state.values()))["exp_avg"])
    fast.step()  # the loaded state runs under the fused kernel


def test_fused_optimizer_is_refused_for_a_task_with_its_own_optimizer():
    from tests.conftest import REPO
    from warmstart_hf.config import ConfigError, parse_config

    with pytest.raises(ConfigError, match="fused_optimizer.*LARS"):
        parse_config([str(REPO / "recipes" / "mae" / "demo_probe_digits.yaml"), "--fused_optimizer", "true"])
