"""Continual backprop (strategies/cbp.py) against the formula of the reference's ``ResGnT``."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from timm.models.resnet import BasicBlock
from torch import nn

from tests import test_finetune
from tests.conftest import crash_at_step
from tests.test_end_to_end import _results, _without_timing
from warmstart_hf.config import ConfigError, parse_config
from warmstart_hf.loop import run_experiment
from warmstart_hf.strategies.cbp import ContinualBackprop

pretrained_dir, finetune_recipe = test_finetune.pretrained_dir, test_finetune.finetune_recipe  # fixtures


class _Tiny(nn.Module):
    """Stem conv (2 ch) + one BasicBlock (2 ch) + a 2-way head: three replaceable layers."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 2, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(2)
        self.act1 = nn.ReLU()
        self.layer1 = nn.Sequential(BasicBlock(2, 2))
        self.fc = nn.Linear(2, 2)

    def forward(self, x):
        return self.fc(self.layer1(self.act1(self.bn1(self.conv1(x)))).mean(dim=(2, 3)))


def _feed(cbp: ContinualBackprop, per_layer: list[list[float]]) -> None:
    for layer, values in zip(cbp.layers, per_layer):
        layer.observe(torch.tensor(values).view(1, -1, 1, 1))


def _hand_set() -> _Tiny:
    net = _Tiny()
    block = net.layer1[0]
    with torch.no_grad():
        block.conv1.weight[:, 0], block.conv1.weight[:, 1] = 1.0, 0.5  # mean |W| per input channel: 1, 0.5
        block.conv2.weight[:, 0], block.conv2.weight[:, 1] = 0.2, -2.0  # 0.2, 2
        net.fc.weight.copy_(torch.tensor([[1.0, -1.0], [3.0, 1.0]]))  # 2, 1
        for bn in (net.bn1, block.bn1, block.bn2):
            bn.weight.fill_(0.3), bn.bias.fill_(0.7), bn.running_mean.fill_(5.0), bn.running_var.fill_(9.0)
    return net


def test_one_step_replaces_the_units_the_reference_formula_picks():
    net = _hand_set()
    block = net.layer1[0]
    before = {k: v.clone() for k, v in net.state_dict().items()}
    cbp = ContinualBackprop(net, rate=0.5, maturity=1, decay=0.9)  # 0.5 x 2 channels: one unit a step
    assert [la.name for la in cbp.layers] == ["conv1", "layer1.0.conv1", "layer1.0.conv2"]
    _feed(cbp, [[1, 1], [1, 1], [2, 0]])
    cbp.step(generator_seed=7)  # age 1: not yet mature (the reference needs age > maturity)
    assert cbp.replaced == {"conv1": 0, "layer1.0.conv1": 0, "layer1.0.conv2": 0}
    _feed(cbp, [[3, 1], [1, 1], [0, 1]])
    cbp.step(generator_seed=7)
    # by hand: mag = 0.1 x (f1 + f2); utility = mean |W_next| (over out, kh, kw) x mag
    # stem   [0.4, 0.2] x [1, 0.5] = [0.4, 0.1]   -> unit 1
    # conv1  [0.2, 0.2] x [0.2, 2] = [0.04, 0.4]  -> unit 0
    # conv2  [0.2, 0.1] x [2, 1]   = [0.4, 0.1]   -> unit 1
    assert torch.allclose(cbp.layers[0].util, torch.tensor([0.4, 0.0]))
    assert torch.allclose(cbp.layers[1].util, torch.tensor([0.0, 0.4]))
    assert torch.allclose(cbp.layers[2].util, torch.tensor([0.4, 0.0]))
    assert cbp.replaced == {"conv1": 1, "layer1.0.conv1": 1, "layer1.0.conv2": 1}
    assert [la.ages.tolist() for la in cbp.layers] == [[2, 0], [0, 2], [2, 0]]
    # incoming weights: new draws, in layer order from one generator, std sqrt(2 / fan_out) (fan_out 18)
    g = torch.Generator().manual_seed(7)
    draws = [torch.randn(shape, generator=g) / 3.0 for shape in ((1, 1, 3, 3), (1, 2, 3, 3), (1, 2, 3, 3))]
    assert torch.allclose(net.conv1.weight[1:2], draws[0])
    assert torch.equal(net.conv1.weight[0], before["conv1.weight"][0])
    assert torch.allclose(block.conv1.weight[0:1], draws[1])
    assert torch.allclose(block.conv2.weight[1:2], draws[2])
    # outgoing weights zeroed (except a row that its own layer redrew), the rest untouched
    assert torch.equal(block.conv1.weight[1, 1], torch.zeros(3, 3))
    assert torch.equal(block.conv1.weight[1, 0], before["layer1.0.conv1.weight"][1, 0])
    assert torch.equal(block.conv2.weight[0, 0], torch.zeros(3, 3))
    assert torch.equal(net.fc.weight, torch.tensor([[1.0, 0.0], [3.0, 0.0]]))
    # the BatchNorm after each replaced conv: gamma 1, beta 0, running mean 0, variance 1 at that channel
    for bn, unit in ((net.bn1, 1), (block.bn1, 0), (block.bn2, 1)):
        state = torch.stack([bn.weight, bn.bias, bn.running_mean, bn.running_var]).detach()
        assert state[:, unit].tolist() == [1, 0, 0, 1]
        assert torch.allclose(state[:, 1 - unit], torch.tensor([0.3, 0.7, 5.0, 9.0]))


def test_fractional_rate_accumulates_and_only_mature_units_are_candidates():
    net = _hand_set()
    cbp = ContinualBackprop(net, rate=0.25, maturity=2, decay=0.9)  # 0.5 unit per mature step
    counts = []
    for _ in range(6):
        _feed(cbp, [[1, 2], [1, 2], [1, 2]])
        cbp.step(generator_seed=1)
        counts.append(cbp.replaced["conv1"])
    # mature from step 3 (age > 2): 0.5, 1.0 -> replace at step 4; the new unit (age 0) is not a candidate
    assert counts == [0, 0, 0, 1, 1, 2]
    assert cbp.layers[0].accumulated == 0.0


def test_hooks_record_the_reference_features_in_training_only():
    net = _hand_set().train()
    cbp = ContinualBackprop(net, rate=0.5, maturity=1, decay=0.9)
    x = torch.randn(4, 1, 5, 5)
    with torch.no_grad():  # BN in training mode normalizes by batch statistics: the hooked pass sees the same
        stem = net.act1(net.bn1(net.conv1(x)))
        block_out = net.layer1[0](stem)
    cbp.attach()
    net(x)
    assert torch.allclose(cbp.layers[0].step_sum, stem.abs().mean(dim=(0, 2, 3)))
    assert torch.allclose(cbp.layers[2].step_sum, block_out.abs().mean(dim=(0, 2, 3)))
    net.eval()(x)
    assert cbp.layers[0].step_count == 1  # evaluation forwards are not recorded
    cbp.detach()


def test_options_fail_fast(tiny_recipe):
    with pytest.raises(ConfigError, match="cbp_replacement_rate"):
        parse_config(recipe={**tiny_recipe, "strategies": ["cbp"], "cbp_replacement_rate": 0.0})
    with pytest.raises(ConfigError, match="cbp_decay_rate"):
        parse_config(recipe={**tiny_recipe, "strategies": ["cbp"], "cbp_decay_rate": 1.0})
    graphs = {"torch_compile": True, "torch_compile_mode": "reduce-overhead"}
    with pytest.raises(ConfigError, match="`cbp`.*torch_compile_mode"):
        parse_config(recipe={**tiny_recipe, "strategies": ["warm", "cbp"], **graphs})
    parse_config(recipe={**tiny_recipe, "strategies": ["warm"], **graphs})  # only the cbp arm is refused


def test_the_optimizer_state_carries_by_default_as_in_the_reference():
    from warmstart_hf.config import StrategyArguments
    from warmstart_hf.strategies import create_strategy

    assert create_strategy("cbp").carries_optimizer_state()
    assert not create_strategy("cbp", StrategyArguments(optimizer_state="reset")).carries_optimizer_state()


def test_a_model_without_the_reference_layer_map_is_refused():
    with pytest.raises(ConfigError, match="Strategy `cbp` has no layer map for Linear"):
        ContinualBackprop(nn.Linear(2, 2), rate=0.5, maturity=1, decay=0.9)


# two phases of 4 and 8 steps; at width 0.125 the stem's 8 channels accrue 0.4 units a step
CBP_TINY = {"strategies": ["cbp"], "num_phases": 2, "num_train_epochs": 1}
CBP_TINY |= {"cbp_replacement_rate": 0.05, "cbp_maturity_threshold": 2}


@pytest.mark.slow
def test_cbp_run_replaces_units_and_resumes_exactly(tiny_recipe, monkeypatch):

    recipe = {**tiny_recipe, **CBP_TINY, "save_strategy": "steps", "save_steps": 3}
    reference = run_experiment(parse_config(recipe={**recipe, "run_name": "reference"}))
    records = _results(reference, "cbp-seed0")
    assert all(r["strategy_stats"]["cbp_replaced_total"] > 0 for r in records)
    assert (reference / "cbp-seed0" / "phase-01" / "cbp_state.safetensors").exists()
    crash_at_step(monkeypatch, recipe, 4 + 5)  # die at step 5 of phase 1 (after checkpoint-3)
    resumed = run_experiment(parse_config(recipe={**recipe, "run_name": "resumed"}))
    got = _results(resumed, "cbp-seed0")
    assert got[1]["resumed_from_checkpoint"] is True
    assert _without_timing(got) == _without_timing(records)
    final_a = load_file(reference / "cbp-seed0" / "phase-01" / "model.safetensors")
    final_b = load_file(resumed / "cbp-seed0" / "phase-01" / "model.safetensors")
    assert all(torch.equal(final_a[k], final_b[k]) for k in final_a)


def _rank_worker(rank: int, world: int, port: int, out_dir: str) -> None:
    import os

    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)
        net = _hand_set()
        cbp = ContinualBackprop(net, rate=0.5, maturity=1, decay=0.9)
        # each rank sees other features: alone, rank 0 would replace stem unit 1, rank 1 unit 0
        for _ in range(2):
            _feed(cbp, [[4, 0], [1, 1], [2, 0]] if rank == 0 else [[0, 6], [1, 1], [2, 0]])
            cbp.step(generator_seed=3)
        torch.save({"model": net.state_dict(), "cbp": cbp.state_dict()}, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_processes_make_the_decision_of_the_mean_features(tmp_path):
    from tests.test_interventions import _free_port

    torch.multiprocessing.spawn(_rank_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    zero, one = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    torch.manual_seed(0)
    net = _hand_set()
    single = ContinualBackprop(net, rate=0.5, maturity=1, decay=0.9)
    for _ in range(2):
        _feed(single, [[2, 3], [1, 1], [2, 0]])  # the mean of the two ranks' features
        single.step(generator_seed=3)
    # stem utility: 0.2 x [2, 3] x [1, 0.5] = [0.4, 0.3] -> unit 1, as the mean decides
    assert single.layers[0].ages.tolist() == [2, 0]
    for got in (zero, one):
        assert all(torch.equal(v, net.state_dict()[k]) for k, v in got["model"].items())
        assert all(torch.allclose(v, single.state_dict()[k]) for k, v in got["cbp"].items())


def test_the_recipe_resnet_gets_the_reference_layer_list_and_values():
    import timm

    from tests.conftest import REPO
    from warmstart_hf.config import load_recipe_file

    net = timm.create_model("resnet18_cifar", num_classes=100, width=0.25)
    layers = ContinualBackprop(net, rate=1e-5, maturity=1000, decay=0.99).layers
    blocks = [f"layer{s}.{b}.conv{c}" for s in range(1, 5) for b in range(2) for c in (1, 2)]
    assert [la.name for la in layers] == ["conv1", *blocks]  # 17: no downsample conv, no classifier
    assert [la.next for la in layers] == [la.conv for la in layers[1:]] + [net.fc]
    assert all(la.norm.num_features == la.conv.out_channels == la.next.weight.shape[1] for la in layers)
    assert layers[6].feature is net.layer2[0]  # a block's conv2 is judged by the block's output
    recipe = load_recipe_file(REPO / "recipes/references/dohare_icifar100.yaml")
    # lop/incremental_cifar/cfg/continual_backpropagation.json and ResGnT's decay_rate in the experiment
    assert (recipe["cbp_replacement_rate"], recipe["cbp_maturity_threshold"], recipe["cbp_decay_rate"]) == (
        1e-5,
        1000,
        0.99,
    )
    assert "cbp" in recipe["strategies"]


@pytest.mark.slow
def test_bf16_with_gradient_accumulation_replaces_at_the_reference_rate(tiny_recipe):
    """The count of replaced units depends on the optimizer steps only: rate x channels a step once
    mature, the fraction carried, across phases (rate 1/16 keeps the sums exact in floating point)."""
    recipe = {**tiny_recipe, **CBP_TINY, "num_phases": 3, "cbp_replacement_rate": 0.0625}
    recipe |= {"bf16": True, "per_device_train_batch_size": 16, "gradient_accumulation_steps": 2}
    records = _results(run_experiment(parse_config(recipe=recipe)), "cbp-seed0")
    steps = [0]
    for r in records:
        steps.append(steps[-1] + r["steps"])
    for phase, r in enumerate(records):
        replaced = r["strategy_stats"]["cbp_replaced"]
        for name, channels in (("conv1", 8), ("layer2.0.conv1", 16), ("layer4.1.conv2", 64)):
            total = [int(0.0625 * channels * max(0, t - 2)) for t in steps[phase : phase + 2]]
            assert replaced[name] == total[1] - total[0], (phase, name)
        assert sum(replaced.values()) == r["strategy_stats"]["cbp_replaced_total"] > 0
    assert all(torch.isfinite(torch.tensor(r["train_loss"])) for r in records)


@pytest.mark.parametrize("mode", ["lora", "linear"])
def test_cbp_refuses_a_frozen_backbone(finetune_recipe, mode):
    with pytest.raises(ConfigError, match=f"`cbp`.*finetune_mode.*{mode}"):
        parse_config(recipe={**finetune_recipe, "strategies": ["cbp"], "finetune_mode": mode})


def test_a_rate_above_the_mature_units_replaces_them_all_and_keeps_the_rest_accrued():
    """Where the reference's topk would ask for more units than are mature, every mature unit is
    replaced and the remainder waits."""
    net = _hand_set()
    cbp = ContinualBackprop(net, rate=1.0, maturity=0, decay=0.9)  # 2 units a step, 2 channels per layer
    _feed(cbp, [[1, 2], [1, 2], [1, 2]])
    cbp.step(generator_seed=1)  # every unit is mature (age 1 > 0): both replaced
    assert cbp.replaced["conv1"] == 2 and cbp.layers[0].accumulated == 0.0
    cbp.step(generator_seed=2)  # the replaced units are mature again after one step
    assert cbp.replaced["conv1"] == 4
