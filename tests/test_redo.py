"""ReDo (strategy ``redo``): the reference's score, one recycle on a hand-set block, the real loop."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file
from timm.models.resnet import BasicBlock
from torch import nn

from tests import test_finetune
from tests.conftest import crash_at_step
from warmstart_hf.config import ConfigError, parse_config
from warmstart_hf.loop import MEASURED_FIELDS, run_experiment
from warmstart_hf.strategies.redo import recycle

SEED = 1234
pretrained_dir, finetune_recipe = test_finetune.pretrained_dir, test_finetune.finetune_recipe  # fixtures


class OneBlock(nn.Module):
    """One timm BasicBlock of 4 channels: units ``block.act1`` are what ReDo may recycle."""

    def __init__(self):
        super().__init__()
        self.block = BasicBlock(4, 4)

    def forward_features(self, x):
        return self.block(x)


def _hand_set_block(model: OneBlock | None = None) -> OneBlock:
    """conv1 passes channel c to unit c (centre tap 1); BatchNorm beta -5 silences units 0 and 2."""
    model = model or OneBlock()
    b = model.block
    with torch.no_grad():
        b.conv1.weight.zero_()
        for c in range(4):
            b.conv1.weight[c, c, 1, 1] = 1.0
        b.bn1.bias.copy_(torch.tensor([-5.0, 0.0, -5.0, 0.0]))
        b.bn1.weight.copy_(torch.tensor([3.0, 1.0, 3.0, 1.0]))
        b.bn1.running_mean.copy_(torch.tensor([0.5, 0.0, 0.5, 0.0]))
        b.bn1.running_var.copy_(torch.tensor([2.0, 1.0, 2.0, 1.0]))
        b.conv2.weight.copy_(torch.randn(b.conv2.weight.shape, generator=torch.Generator().manual_seed(1)))
    return model


def _images(scale: float = 1.0) -> torch.Tensor:
    """Two 3x3 images, constant per channel: sample A (1, 2, 1, 4), sample B (1, -2, 1, 0), times ``scale``."""
    a = torch.tensor([1.0, 2.0, 1.0, 4.0]).view(4, 1, 1).expand(4, 3, 3)
    b = torch.tensor([1.0, -2.0, 1.0, 0.0]).view(4, 1, 1).expand(4, 3, 3)
    return torch.stack([a, b]) * scale


def _step_once(model, optimizer):
    """One real step so the optimizer has state, then every state tensor set to ones (easy to read)."""
    model.forward_features(torch.randn(2, 4, 3, 3)).sum().backward()
    optimizer.step()
    for state in optimizer.state.values():
        for key, value in state.items():
            if key != "step":
                value.fill_(1.0)


@pytest.mark.parametrize("optimizer_name", ["sgd", "adam"])
def test_one_recycle_replaces_exactly_the_two_dormant_units(optimizer_name):
    model = OneBlock()
    if optimizer_name == "sgd":
        optimizer = torch.optim.SGD(model.parameters(), lr=0.0, momentum=0.9)
    else:
        optimizer = torch.optim.Adam(model.parameters(), lr=0.0)
    _step_once(model, optimizer)
    _hand_set_block(model)  # after the step, whose forward moved the running statistics
    b = model.block
    before = {k: v.clone() for k, v in model.state_dict().items()}
    steps = {id(p): s.get("step") for p, s in optimizer.state.items()}

    # By hand, in eval mode: unit c is relu(gamma (x - mean) / sqrt(var + eps) + beta). Units 0 and 2
    # are 0 on both samples; unit 1 is (2/s, 0), unit 3 (4/s, 0) with s = sqrt(1 + 1e-5): mean |h|
    # (0, 1/s, 0, 2/s), layer mean 0.75/s, scores (0, 4/3, 0, 8/3). tau 0.025: units 0 and 2. The
    # score is scale-free: at 1/100 of the input the live units' mean |h| is <= 0.02, yet they stay.
    event = recycle(model, _images(0.01), 0.025, torch.Generator().manual_seed(SEED), optimizer)

    assert event["recycled"] == {"block.act1": [0, 2]}
    assert event["units_recycled"] == 2 and event["num_units"] == 4
    assert event["dormant_fraction_before"] == 0.5
    assert model.training  # scored in eval mode, handed back in train mode
    dead, alive = [0, 2], [1, 3]
    # incoming: the layer's init (timm ResNet: Kaiming normal, fan_out = 4 * 3 * 3), drawn whole from the seed
    fresh = torch.empty(4, 4, 3, 3)
    nn.init.kaiming_normal_(fresh, mode="fan_out", nonlinearity="relu", generator=torch.Generator().manual_seed(SEED))
    assert torch.equal(b.conv1.weight[dead], fresh[dead])
    assert abs(float(fresh.std()) - math.sqrt(2 / 36)) < 0.1
    assert torch.equal(b.conv1.weight[alive], before["block.conv1.weight"][alive])
    # its BatchNorm back to init: gamma 1, beta 0 (the reference's zeroed bias), running stats 0 / 1
    assert b.bn1.weight.tolist() == [1.0, 1.0, 1.0, 1.0]
    assert b.bn1.bias.tolist() == [0.0, 0.0, 0.0, 0.0]
    assert b.bn1.running_mean.tolist() == [0.0, 0.0, 0.0, 0.0]
    assert b.bn1.running_var.tolist() == [1.0, 1.0, 1.0, 1.0]
    # outgoing: zero, and nothing else of conv2 touched
    assert torch.equal(b.conv2.weight[:, dead], torch.zeros(4, 2, 3, 3))
    assert torch.equal(b.conv2.weight[:, alive], before["block.conv2.weight"][:, alive])
    # every other tensor of the model is untouched
    changed = {"block.conv1.weight", "block.conv2.weight", *(f"block.bn1.{n}" for n in ("weight", "bias"))}
    changed |= {"block.bn1.running_mean", "block.bn1.running_var"}
    for key, value in model.state_dict().items():
        if key not in changed:
            assert torch.equal(value, before[key]), key
    # optimizer: the moments of exactly those kernel entries are zero; 1-D parameters (the reference
    # masks biases as None) and the step count are kept
    for param in model.parameters():
        state = optimizer.state[param]
        assert state.get("step") is steps[id(param)]
        for key, value in state.items():
            if key == "step":
                continue
            expected = torch.ones_like(value)
            if param is b.conv1.weight:
                expected[dead] = 0
            elif param is b.conv2.weight:
                expected[:, dead] = 0
            assert torch.equal(value, expected), (key, [n for n, p in model.named_parameters() if p is param])


def test_tau_zero_recycles_only_exact_zeros_and_a_silent_layer_is_recycled_whole():
    model = _hand_set_block()
    event = recycle(model, _images(), 0.0, torch.Generator().manual_seed(0))
    assert event["recycled"] == {"block.act1": [0, 2]}
    model = _hand_set_block()
    with torch.no_grad():
        model.block.bn1.bias.fill_(-100.0)
    event = recycle(model, _images(), 0.0, torch.Generator().manual_seed(0))  # scores 0 / (0 + 1e-9) = 0
    assert event["recycled"] == {"block.act1": [0, 1, 2, 3]}


def test_a_bf16_channels_last_model_recycles_the_same_units():
    model = _hand_set_block().to(torch.bfloat16).to(memory_format=torch.channels_last)
    event = recycle(model, _images().to(torch.bfloat16), 0.025, torch.Generator().manual_seed(SEED))
    assert event["recycled"] == {"block.act1": [0, 2]}
    assert model.block.conv1.weight.dtype == torch.bfloat16
    assert torch.equal(model.block.conv2.weight[:, [0, 2]].float(), torch.zeros(4, 2, 3, 3))


def _results(run_dir, arm="redo-seed0"):
    return [json.loads(line) for line in (run_dir / arm / "results.jsonl").read_text().splitlines()]


REDO = {"strategies": ["redo"], "redo_interval": 2, "redo_tau": 0.1, "redo_score_batch_size": 64, "diagnostics": False}


@pytest.mark.slow
def test_redo_runs_through_the_loop_at_the_reference_steps_also_with_accumulation(tiny_recipe):
    run_dir = run_experiment(parse_config(recipe={**tiny_recipe, **REDO}))
    records = _results(run_dir)
    # phases of 80, 160, 240 examples, batch 32, 2 epochs: 6, 10, 16 updates; recycles after update
    # k + 1 for the 0-indexed k > 0 with k % 2 == 0
    expected = [[3, 5], [3, 5, 7, 9], [3, 5, 7, 9, 11, 13, 15]]
    assert [[e["step"] for e in r["strategy_stats"]["recycles"]] for r in records] == expected
    events = [e for r in records for e in r["strategy_stats"]["recycles"]]
    assert sum(e["units_recycled"] for e in events) > 0
    for e in events:
        assert e["num_units"] == 2 * (8 + 16 + 32 + 64)  # width 0.125: two blocks per stage, act1 as wide as the stage
        assert sum(map(len, e["recycled"].values())) == e["units_recycled"]
        assert e["dormant_fraction_after"] <= e["dormant_fraction_before"] or e["units_recycled"] == 0
    # 2 micro-batches of 16 per update: the same updates, so the same recycle steps (weights differ: BatchNorm
    # sees batches of 16); two phases are enough
    accumulated = {**tiny_recipe, **REDO, "per_device_train_batch_size": 16, "gradient_accumulation_steps": 2}
    accumulated |= {"num_phases": 2, "max_train_examples": 160, "run_name": "accumulated"}
    records = _results(run_experiment(parse_config(recipe=accumulated)))
    assert [[e["step"] for e in r["strategy_stats"]["recycles"]] for r in records] == [[3, 5], [3, 5, 7, 9]]


@pytest.mark.slow
def test_a_redo_phase_resumed_mid_phase_equals_an_uninterrupted_one(tiny_recipe, monkeypatch):
    recipe = {**tiny_recipe, **REDO, "save_strategy": "steps", "save_steps": 3}
    reference = run_experiment(parse_config(recipe={**recipe, "run_name": "reference"}))
    crash_at_step(monkeypatch, recipe, 6 + 8)  # step 8 of phase 1: after checkpoint-6 (holds the recycles at 3, 5)
    resumed = run_experiment(parse_config(recipe={**recipe, "run_name": "resumed"}))
    timing = {*MEASURED_FIELDS, "resumed_from_checkpoint"}
    got, want = _results(resumed), _results(reference)
    assert got[1]["resumed_from_checkpoint"] is True
    assert [{k: v for k, v in r.items() if k not in timing} for r in got] == [
        {k: v for k, v in r.items() if k not in timing} for r in want
    ]
    a = load_file(reference / "redo-seed0" / "phase-02" / "model.safetensors")
    b = load_file(resumed / "redo-seed0" / "phase-02" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"redo_interval": 0}, "redo_interval"),
        ({"redo_score_batch_size": 0}, "redo_score_batch_size"),
        ({"redo_tau": -0.1}, "redo_tau"),
        ({"torch_compile": True, "torch_compile_mode": "reduce-overhead"}, "`redo`.*torch_compile_mode"),
    ],
)
def test_bad_redo_settings_fail_fast_naming_the_field(tiny_recipe, changes, named):
    with pytest.raises(ConfigError, match=named):
        parse_config(recipe={**tiny_recipe, **REDO, **changes})


@pytest.mark.slow
def test_two_processes_recycle_the_same_units_and_end_every_phase_with_identical_weights(tiny_recipe, tmp_path):
    import yaml

    from tests.conftest import REPO, launch_two_cpu_processes

    recipe = {**tiny_recipe, **REDO, "redo_interval": 1}
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(recipe))
    out = tmp_path / "weights"
    out.mkdir()
    proc = launch_two_cpu_processes(REPO / "tests" / "rank_weights_probe.py", str(out), str(tmp_path / "tiny.yaml"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = _results(tmp_path / "runs" / "tiny")
    # 64 examples per update over two ranks: 4, 6, 8 updates; recycles after updates 2, 3, ...
    assert [[e["step"] for e in r["strategy_stats"]["recycles"]] for r in records] == [
        list(range(2, n + 1)) for n in (4, 6, 8)
    ]
    assert sum(r["strategy_stats"]["units_recycled"] for r in records) > 0
    for phase in range(3):
        zero, one = (torch.load(out / f"rank{r}-redo-seed0-phase-{phase:02d}.pt") for r in (0, 1))
        assert all(torch.equal(zero[k], one[k]) for k in zero), phase


@pytest.mark.slow
def test_redo_finetunes_a_pretrained_resnet_in_the_evaluation_view(finetune_recipe):
    run_dir = run_experiment(parse_config(recipe={**finetune_recipe, **REDO, "redo_interval": 1}))
    records = _results(run_dir)
    # 1 epoch of 80, 160, 240 examples at 32: 3, 5, 8 updates; recycles after updates 2, 3, ...
    assert [[e["step"] for e in r["strategy_stats"]["recycles"]] for r in records] == [
        list(range(2, n + 1)) for n in (3, 5, 8)
    ]
    layers = {name for r in records for e in r["strategy_stats"]["recycles"] for name in e["recycled"]}
    assert layers and all(name.startswith("timm_model.layer") and name.endswith(".act1") for name in layers)


@pytest.mark.parametrize("mode", ["lora", "linear"])
def test_redo_refuses_a_frozen_backbone(finetune_recipe, mode):
    with pytest.raises(ConfigError, match=f"`redo`.*finetune_mode.*{mode}"):
        parse_config(recipe={**finetune_recipe, **REDO, "finetune_mode": mode})
