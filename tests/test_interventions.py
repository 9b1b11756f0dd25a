"""Numeric tests of the interventions against results computed independently in the test."""

from __future__ import annotations

import math
import os
import socket

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from warmstart_hf.config import StrategyArguments
from warmstart_hf.strategies import create_strategy, dash, shrink_perturb
from warmstart_hf.strategies.dash import _shrink_factors
from warmstart_hf.strategies.regularizers import l2_init_penalty


class Tiny(nn.Module):
    """A 2-channel conv, a BatchNorm and a small linear head."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 2, kernel_size=3, padding=1, bias=True)
        self.bn = nn.BatchNorm2d(2)
        self.fc = nn.Linear(2 * 4 * 4, 3)

    def forward(self, x):
        return self.fc(torch.relu(self.bn(self.conv(x))).flatten(1))


def _tiny(seed: int) -> Tiny:
    torch.manual_seed(seed)
    model = Tiny()
    with torch.no_grad():  # non-trivial BatchNorm state, so "untouched" is checkable
        model.bn.running_mean.copy_(torch.tensor([0.3, -0.2]))
        model.bn.running_var.copy_(torch.tensor([1.5, 0.7]))
        model.bn.weight.copy_(torch.tensor([1.2, 0.8]))
        model.bn.bias.copy_(torch.tensor([0.1, -0.1]))
    return model


def _batches(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(6, 2, 4, 4, generator=g), torch.randint(0, 3, (6,), generator=g)) for _ in range(2)]


# ----------------------------------------------------------------------------------------- DASH
def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double().flatten(), b.double().flatten()
    return float(a @ b / (a.norm() * b.norm()))


def test_dash_factors_on_hand_set_weights_and_gradients():
    w = torch.zeros(2, 2, 3, 3)
    g = torch.zeros(2, 2, 3, 3)
    w[0, 0], g[0, 0] = 1.0, 2.0  # aligned: cos 1 -> factor 1
    w[0, 1], g[0, 1] = 1.0, -1.0  # opposite: cos -1 -> clamped at lam
    w[1, 0, 0, 0], g[1, 0, 0, 0], g[1, 0, 0, 1] = 1.0, 1.0, 1.0  # cos 1/sqrt(2)
    w[1, 1, 0, 0], g[1, 1, 1, 1] = 1.0, 1.0  # orthogonal: cos 0 -> lam
    factors = _shrink_factors(g, w, lam=0.3, granularity="kernel").view(2, 2)
    assert factors.flatten().tolist() == pytest.approx([1.0, 0.3, 1 / math.sqrt(2), 0.3])
    per_filter = _shrink_factors(g, w, lam=0.3, granularity="filter").view(2)
    assert per_filter[0].item() == pytest.approx(max(0.3, _cos(g[0], w[0])))  # (2*9 - 9) / (sqrt(18)*sqrt(36))
    assert per_filter[1].item() == pytest.approx(max(0.3, _cos(g[1], w[1])))
    bias = _shrink_factors(torch.tensor([1.0, 0.0]), torch.tensor([1.0, 1.0]), lam=0.3, granularity="kernel")
    assert bias.dim() == 0 and bias.item() == pytest.approx(1 / math.sqrt(2))
    rows = _shrink_factors(
        torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([[1.0, 1.0], [0.0, 1.0]]), 0.3, "kernel"
    )
    assert rows.flatten().tolist() == pytest.approx([1 / math.sqrt(2), 1.0])


def _expected_dash(model: Tiny, batches, alpha: float, lam: float, granularity: str) -> dict[str, torch.Tensor]:
    """Independent re-computation: explicit EMA and explicit per-group cosine loops."""
    probe = _tiny(0)
    probe.load_state_dict(model.state_dict())
    probe.eval()
    ema = {n: torch.zeros_like(p) for n, p in probe.named_parameters() if not n.startswith("bn.")}
    for x, y in batches:
        probe.zero_grad()
        F.cross_entropy(probe(x), y).backward()
        for n in ema:
            ema[n] = (1 - alpha) * ema[n] - alpha * dict(probe.named_parameters())[n].grad
    expected = {k: v.clone() for k, v in model.state_dict().items()}
    w, g = expected["conv.weight"], ema["conv.weight"]
    for o in range(2):
        if granularity == "filter":
            w[o] *= min(max(_cos(g[o], w[o]), lam), 1.0)
            continue
        for i in range(2):
            w[o, i] *= min(max(_cos(g[o, i], w[o, i]), lam), 1.0)
    for row in range(3):
        expected["fc.weight"][row] *= min(max(_cos(ema["fc.weight"][row], expected["fc.weight"][row]), lam), 1.0)
    for name in ("conv.bias", "fc.bias"):
        expected[name] *= min(max(_cos(ema[name], expected[name]), lam), 1.0)
    return expected


@pytest.mark.parametrize("granularity", ["kernel", "filter"])
def test_dash_matches_an_independent_computation(granularity):
    model = _tiny(1)
    batches = _batches()
    # pick lam as a mid value of the actual cosines so some groups clamp and some do not
    expected_loose = _expected_dash(model, batches, 0.3, -1.0, granularity)
    ratios = (expected_loose["fc.weight"].flatten(0) / model.fc.weight.detach().flatten(0)).view(3, -1)[:, 0]
    lam = float(ratios.sort().values[1])
    expected = _expected_dash(model, batches, 0.3, lam, granularity)
    stats = dash(model, batches, alpha=0.3, lam=lam, granularity=granularity)
    for key, value in model.state_dict().items():
        assert torch.allclose(value, expected[key], atol=1e-6), key
    assert 0 < stats["per_layer_clamped_fraction"]["fc.weight"] < 1
    assert stats["num_batches"] == 2 and stats["norm_after"] <= stats["norm_before"]


def test_dash_leaves_batchnorm_untouched_and_micro_batches_are_exact():
    a, b = _tiny(2), _tiny(2)
    bn_before = {k: v.clone() for k, v in a.bn.state_dict().items()}
    dash(a, _batches(), alpha=0.3, lam=0.3)
    dash(b, _batches(), alpha=0.3, lam=0.3, micro_batch_size=4)
    for key, value in a.bn.state_dict().items():
        assert torch.equal(value, bn_before[key])
    for key, value in a.state_dict().items():
        assert torch.allclose(value, b.state_dict()[key], atol=1e-6), key
    assert a.training  # the real model's mode is not changed


# ------------------------------------------------------------------------------ Shrink & Perturb
def test_fresh_init_is_exact_and_takes_batchnorm_statistics_from_the_fresh_model():
    model, fresh = _tiny(3), _tiny(4)
    with torch.no_grad():
        fresh.bn.running_mean.zero_()
        fresh.bn.running_var.fill_(1.0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    shrink_perturb(model, mode="fresh_init", fresh_model=fresh)
    for name, param in model.named_parameters():  # every parameter, BN gamma/beta included
        assert torch.allclose(param, 0.4 * before[name] + 0.1 * dict(fresh.named_parameters())[name]), name
    assert torch.equal(model.bn.running_mean, fresh.bn.running_mean)
    assert torch.equal(model.bn.running_var, fresh.bn.running_var)


def test_interpolate_init_is_exact_with_a_separate_head_coefficient():
    model, init = _tiny(5), _tiny(6)
    theta0 = {k: v.clone() for k, v in init.state_dict().items()}
    before = {k: v.clone() for k, v in model.state_dict().items()}
    shrink_perturb(model, mode="interpolate_init", init_state=theta0, interpolation=0.8, head_interpolation=0.5)
    for name, param in model.named_parameters():
        c = 0.5 if name.startswith("fc.") else 0.8
        assert torch.allclose(param, (1 - c) * before[name] + c * theta0[name]), name
    assert torch.equal(model.bn.running_mean, before["bn.running_mean"])  # buffers untouched


def test_gaussian_is_reproducible_from_the_generator_and_skips_batchnorm():
    model = _tiny(7)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    shrink_perturb(model, mode="gaussian", generator=torch.Generator().manual_seed(11))
    g = torch.Generator().manual_seed(11)
    for name in ("conv.weight", "conv.bias", "fc.weight", "fc.bias"):  # module order, weight then bias
        expected = 0.3 * before[name] + 0.01 * torch.randn(before[name].shape, generator=g)
        assert torch.allclose(model.state_dict()[name], expected), name
    for name in ("bn.weight", "bn.bias", "bn.running_mean", "bn.running_var"):
        assert torch.equal(model.state_dict()[name], before[name]), name
    with_norm = _tiny(7)
    shrink_perturb(with_norm, mode="gaussian", include_norm=True, generator=torch.Generator().manual_seed(11))
    assert not torch.equal(with_norm.bn.weight, before["bn.weight"])
    assert torch.equal(with_norm.bn.running_var, before["bn.running_var"])


def test_gaussian_noise_has_the_requested_distribution():
    layer = nn.Linear(500, 400)
    before = layer.weight.detach().clone()
    shrink_perturb(layer, mode="gaussian", shrink=0.6, noise=1e-4, generator=torch.Generator().manual_seed(0))
    residual = (layer.weight.detach() - 0.6 * before) / 1e-4
    assert abs(residual.mean().item()) < 0.01  # 200k draws: standard error 0.0022
    assert abs(residual.std().item() - 1.0) < 0.01


def test_unknown_mode_and_missing_inputs_fail():
    with pytest.raises(ValueError, match="mode"):
        shrink_perturb(_tiny(0), mode="spicy")
    with pytest.raises(ValueError, match="fresh_model"):
        shrink_perturb(_tiny(0), mode="fresh_init")
    with pytest.raises(ValueError, match="init_state"):
        shrink_perturb(_tiny(0), mode="interpolate_init")


@pytest.mark.parametrize(
    ("name", "options", "carries"),
    [
        ("warm", {}, False),
        ("warm", {"optimizer_state": "carry"}, True),
        ("shrink_perturb", {"sp_mode": "gaussian"}, True),
        ("shrink_perturb", {"sp_mode": "gaussian", "optimizer_state": "reset"}, False),
        ("shrink_perturb", {"sp_mode": "fresh_init"}, False),
        ("shrink_perturb", {"sp_mode": "interpolate_init"}, False),
        ("dash", {}, True),
        ("dash", {"optimizer_state": "reset"}, False),
        ("reset_head", {}, False),
        ("l2_init", {}, False),
        ("hare_tortoise", {}, False),
        ("cold", {"optimizer_state": "carry"}, False),
    ],
)
def test_optimizer_state_defaults_follow_each_reference(name, options, carries):
    assert create_strategy(name, StrategyArguments(**options)).carries_optimizer_state() is carries


# ------------------------------------------------------------------------------------- L2-init
def test_l2_init_penalty_is_the_sum_of_squares_over_all_parameters():
    model, init = _tiny(8), _tiny(9)
    theta0 = {k: v.clone() for k, v in init.state_dict().items()}
    penalty = l2_init_penalty(theta0, lam=0.01)(model)
    expected = 0.01 * sum(((p.detach() - theta0[n]) ** 2).sum() for n, p in model.named_parameters())
    assert penalty.item() == pytest.approx(expected.item(), rel=1e-6)
    penalty.backward()
    assert torch.allclose(model.fc.weight.grad, 0.02 * (model.fc.weight.detach() - theta0["fc.weight"]))


# ------------------------------------------------------------------------------ Hare & Tortoise
def test_hare_tortoise_ema_and_periodic_reset():
    from types import SimpleNamespace

    from warmstart_hf.strategies.hare_tortoise import HareTortoiseCallback

    hare, tortoise = _tiny(10), _tiny(11)
    slow_before = {k: v.clone() for k, v in tortoise.state_dict().items()}
    callback = HareTortoiseCallback(tortoise, ema=0.9, reset_epochs=2)
    callback.on_step_end(None, None, None, model=hare)
    for key, value in tortoise.state_dict().items():
        fast = hare.state_dict()[key]
        if value.is_floating_point():
            assert torch.allclose(value, 0.9 * slow_before[key] + 0.1 * fast), key
        else:
            assert torch.equal(value, fast), key
    # the reference resets after 0-indexed epochs 0, 2, 4 (reset_epochs 2), i.e. after epochs 1, 3, 5
    resets_after = []
    for epoch in range(1, 6):
        hare.fc.weight.data.add_(1.0)  # training moves the hare away from the tortoise
        callback.on_epoch_end(None, SimpleNamespace(epoch=float(epoch)), None, model=hare)
        if torch.equal(hare.fc.weight, tortoise.fc.weight):
            resets_after.append(epoch)
    assert resets_after == [1, 3, 5] and callback.resets == 3
    assert all(torch.equal(v, tortoise.state_dict()[k]) for k, v in hare.state_dict().items())
    assert hare.fc.weight.data_ptr() != tortoise.fc.weight.data_ptr()  # a copy, not shared storage


# ------------------------------------------------------------------ identical weights on every rank
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_worker(rank: int, world: int, port: int, out_dir: str) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        results = {}
        for mode in ("dash", "gaussian"):
            model = _tiny(20 + rank)  # different on purpose: only the broadcast makes them equal
            if mode == "dash":
                dash(model, _batches(rank), alpha=0.3, lam=0.3)
            else:
                shrink_perturb(model, mode="gaussian", generator=torch.Generator().manual_seed(rank))
            results[mode] = model.state_dict()
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_dash_and_shrink_perturb_leave_identical_weights_on_two_processes(tmp_path):
    torch.multiprocessing.spawn(_rank_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    zero, one = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    for mode in ("dash", "gaussian"):
        for key in zero[mode]:
            assert torch.equal(zero[mode][key], one[mode][key]), (mode, key)
    assert not torch.equal(zero["dash"]["conv.weight"], _tiny(20).conv.weight)  # it did intervene
