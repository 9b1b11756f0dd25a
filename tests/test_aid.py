"""AID (activation by interval-wise dropout): the activation against the reference's formulation, the swap
of every ReLU, saving and loading, and the arm through the real loop (with resume)."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from tests.conftest import REPO, crash_at_step, launch_two_cpu_processes
from tests.test_diagnostics import _images, _TwoReLUs
from tests.test_finetune import finetune_recipe, pretrained_dir  # noqa: F401 - fixtures
from warmstart_hf.config import ConfigError, parse_config
from warmstart_hf.loop import MEASURED_FIELDS, run_experiment
from warmstart_hf.metrics.diagnostics import activation_diagnostics
from warmstart_hf.models import TimmClassifierConfig, TimmImageClassifier, create_classifier
from warmstart_hf.models.aid import AID, MaskGenerator
from warmstart_hf.models.export import export_for_hub, load_classifier
from warmstart_hf.strategies.aid import apply_aid


def test_aid_training_masks_keep_positives_with_p_and_negatives_with_1_minus_p():
    n, p = 200_000, 0.9
    x = torch.cat([torch.rand(n) + 0.1, -(torch.rand(n) + 0.1)])  # n positive, n negative, none zero
    torch.manual_seed(0)
    out = AID(p).train()(x)
    kept = out != 0
    assert torch.equal(out[kept], x[kept])  # a kept element passes unchanged: no rescaling
    bound = 5 * math.sqrt(n * p * (1 - p))  # five binomial standard deviations
    assert abs(int(kept[:n].sum()) - n * p) < bound
    assert abs(int(kept[n:].sum()) - n * (1 - p)) < bound
    # masks are independent per element, not one per tensor or per channel
    assert 0 < int(kept[:n].sum()) < n
    torch.manual_seed(0)
    assert torch.equal(AID(p).train()(x), out)  # seeded: the same masks again


def test_aid_evaluation_is_the_references_expected_value_on_hand_set_inputs():
    x = torch.tensor([-2.0, -0.5, 0.0, 0.5, 3.0])
    # p = 0.75: exact in binary, hand-computed (1 - p) * x below 0 and p * x from 0 up
    assert torch.equal(AID(0.75).eval()(x), torch.tensor([-0.5, -0.125, 0.0, 0.375, 2.25]))
    # p = 0.9: the reference's expression, element for element
    reference = (x >= 0).float() * x * 0.9 + (x < 0).float() * x * (1 - 0.9)
    assert torch.equal(AID(0.9).eval()(x), reference)
    # p = 1 is ReLU in training and evaluation
    assert torch.equal(AID(1.0).train()(x), torch.relu(x)) and torch.equal(AID(1.0).eval()(x), torch.relu(x))
    with pytest.raises(ValueError, match="p must be in"):
        AID(1.5)


def test_aid_in_bfloat16_keeps_values_and_scales_with_the_exact_p():
    x = torch.tensor([-2.0, -0.5, 0.5, 3.0], dtype=torch.bfloat16)
    torch.manual_seed(0)
    out = AID(0.9).train()(x)
    assert out.dtype == torch.bfloat16 and all(o in (0, v) for o, v in zip(out.tolist(), x.tolist()))
    # the mean multiplies by the float p (opmath), not by p rounded to bfloat16 (0.8984375)
    assert torch.equal(AID(0.9).eval()(x), torch.where(x >= 0, x * 0.9, x * (1 - 0.9)))
    assert AID(0.9).eval()(x)[3] == torch.tensor(2.7, dtype=torch.bfloat16)


def test_the_mask_generator_is_seeded_leaves_the_global_stream_alone_and_resumes_from_its_state():
    x = torch.randn(4, 1000)
    first = AID(0.5).train()
    first.masks = MaskGenerator(seed=7)
    before = torch.get_rng_state()
    a = first(x)
    assert torch.equal(torch.get_rng_state(), before)  # augmentation draws stay warm's
    state = first.masks.state()
    b = first(x)
    again = AID(0.5).train()
    again.masks = MaskGenerator(seed=7)
    assert torch.equal(again(x), a)  # the same seed: the same masks
    resumed = AID(0.5).train()
    resumed.masks = MaskGenerator(seed=7)
    resumed.masks.load(state)
    assert torch.equal(resumed(x), b)  # from a saved state: the masks that followed
    twin = copy.deepcopy(first)
    assert torch.equal(twin(x), first(x))  # a copy continues in the same state, independently


@pytest.mark.parametrize(("timm_model", "expected"), [("resnet18_cifar", 17), ("resnet50", 1 + 16 * 3)])
def test_every_relu_becomes_aid_and_a_saved_model_rebuilds_them(tmp_path, timm_model, expected):
    """The CIFAR ResNet (stem act1, each BasicBlock's act1 / act2) and a timm ImageNet ResNet as finetune
    uses (Bottleneck: act1 / act2 / act3): no nn.ReLU left; from_pretrained rebuilds AID from aid_p."""
    config = TimmClassifierConfig(timm_model=timm_model, num_channels=3, image_size=32, num_labels=4)
    if timm_model.endswith("_cifar"):
        config.model_kwargs = {"width": 0.125}
    model = create_classifier(config, seed=0)
    theta0 = {k: v.clone() for k, v in model.state_dict().items()}
    assert apply_aid(model, 0.8) == expected
    assert not any(isinstance(m, nn.ReLU) for m in model.modules())
    assert [m.p for m in model.modules() if isinstance(m, AID)] == [0.8] * expected
    assert model.state_dict().keys() == theta0.keys()  # no parameters or buffers: theta0 is warm's
    assert all(torch.equal(model.state_dict()[k], v) for k, v in theta0.items())
    model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["aid_p"] == 0.8
    loaded = TimmImageClassifier.from_pretrained(tmp_path).eval()
    assert sum(isinstance(m, AID) for m in loaded.modules()) == expected
    assert not any(isinstance(m, nn.ReLU) for m in loaded.modules())
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(loaded(x).logits, model.eval()(x).logits)
    # pushed in the package's format: plain transformers / timm would build ReLUs and compute another function
    files = export_for_hub(tmp_path, tmp_path / "hub")
    pushed = json.loads(files["config.json"].read_text())
    assert pushed["model_type"] == "warmstart_timm_classifier" and pushed["aid_p"] == 0.8
    hub = load_classifier(str(files["config.json"].parent))
    assert sum(isinstance(m, AID) for m in hub.modules()) == expected
    assert torch.equal(hub(x).logits, loaded(x).logits)


def test_aid_needs_relus():
    with pytest.raises(ConfigError, match="has none"):
        apply_aid(nn.Sequential(nn.Linear(2, 2), nn.GELU()), 0.9)


def test_dormant_diagnostics_count_aid_units_on_their_pre_activation_and_leave_the_rng_alone():
    """The hand-set two-layer net of test_diagnostics with AID(0.9) for its ReLUs: AID's mean passes the
    negatives scaled by 0.1, yet each unit's pre-activation is positive exactly where the ReLU net's is
    (bright pixel: 0.45 - 0.1 > 0; elsewhere -0.05 - 0.1 < 0), so the dormant counts are the ReLU net's."""
    relu, aid = _TwoReLUs(), _TwoReLUs()
    apply_aid(aid, 0.9)
    torch.manual_seed(3)
    before = torch.get_rng_state()
    got = activation_diagnostics(aid, _images([1] * 50))
    assert torch.equal(torch.get_rng_state(), before)  # no masks drawn: diagnostics do not shift training
    plain = activation_diagnostics(relu, _images([1] * 50))
    assert got["num_units"] == plain["num_units"] == 3
    assert got["dormant_fraction"] == plain["dormant_fraction"] == pytest.approx(2 / 3)
    assert got["dormant_fraction_spatial_mean"] == plain["dormant_fraction_spatial_mean"] == pytest.approx(1 / 3)


def test_aid_refuses_other_tasks_cuda_graphs_and_bad_p(tiny_recipe):
    with pytest.raises(ConfigError, match="does not serve task"):
        parse_config(recipe={**tiny_recipe, "strategies": ["aid"], "task": "mae_pretrain"})
    with pytest.raises(ConfigError, match="aid_p"):
        parse_config(recipe={**tiny_recipe, "strategies": ["aid"], "aid_p": 1.2})
    graphs = {"torch_compile": True, "torch_compile_mode": "reduce-overhead"}
    with pytest.raises(ConfigError, match="aid.*torch_compile_mode"):
        parse_config(recipe={**tiny_recipe, "strategies": ["aid"], **graphs})


def _results(run_dir, arm):
    return [json.loads(line) for line in (run_dir / arm / "results.jsonl").read_text().splitlines()]


def _without_timing(records):
    return [{k: v for k, v in r.items() if k not in {*MEASURED_FIELDS, "resumed_from_checkpoint"}} for r in records]


@pytest.mark.slow
def test_aid_arm_through_the_loop_starts_from_warms_theta0_and_saves_aid_phases(tiny_recipe):
    run_dir = run_experiment(parse_config(recipe={**tiny_recipe, "strategies": ["warm", "aid"]}))
    aid, warm = _results(run_dir, "aid-seed0"), _results(run_dir, "warm-seed0")
    assert [r["strategy_stats"] for r in aid] == [{"aid_p": 0.9, "aid_layers": 17}] * 3
    assert [r["steps"] for r in aid] == [r["steps"] for r in warm]
    assert aid[1]["start_distance_to_previous"] == 0.0  # warm-derived: the previous phase's weights
    init_a, init_w = (load_file(run_dir / arm / "init" / "model.safetensors") for arm in ("aid-seed0", "warm-seed0"))
    assert all(torch.equal(init_a[k], init_w[k]) for k in init_w)  # the same theta0
    assert aid[0]["train_loss"] != warm[0]["train_loss"]  # the activation changes training from phase 0
    for record, plain in zip(aid, warm):  # dormant units counted on the AID layers, as on warm's ReLUs
        assert record["diagnostics"]["num_units"] == plain["diagnostics"]["num_units"] > 0
        assert 0.0 <= record["diagnostics"]["dormant_fraction"] <= 1.0
    phase = TimmImageClassifier.from_pretrained(run_dir / "aid-seed0" / "phase-02")
    assert sum(isinstance(m, AID) for m in phase.modules()) == 17
    assert not any(isinstance(m, nn.ReLU) for m in phase.modules())


@pytest.mark.slow
def test_aid_with_p_1_trains_exactly_as_warm(tiny_recipe):
    """AID(1) is ReLU and its masks do not touch the global stream (augmentation): the arm is warm, to the
    bit, in every phase's results and weights."""
    recipe = {**tiny_recipe, "strategies": ["warm", "aid"], "aid_p": 1.0, "num_train_epochs": 1}
    run_dir = run_experiment(parse_config(recipe=recipe))
    aid, warm = _results(run_dir, "aid-seed0"), _results(run_dir, "warm-seed0")
    drop = {"strategy", "strategy_stats"}
    assert [{k: v for k, v in r.items() if k not in drop} for r in _without_timing(aid)] == [
        {k: v for k, v in r.items() if k not in drop} for r in _without_timing(warm)
    ]
    final_a, final_w = (load_file(run_dir / a / "phase-02" / "model.safetensors") for a in ("aid-seed0", "warm-seed0"))
    assert all(torch.equal(final_a[k], final_w[k]) for k in final_w)


@pytest.mark.slow
def test_an_aid_run_resumed_mid_phase_equals_an_uninterrupted_one(tiny_recipe, monkeypatch):
    """The mask generator's state is in the Trainer's checkpoint (per process); the phase before the crash
    is loaded from its directory, whose config rebuilds the AID layers."""
    recipe = {**tiny_recipe, "strategies": ["aid"], "save_strategy": "steps", "save_steps": 3}
    reference = run_experiment(parse_config(recipe={**recipe, "run_name": "reference"}))
    crash_at_step(monkeypatch, recipe, 6 + 8)  # phase 0 has 6 steps; die at step 8 of phase 1 (after checkpoint-6)
    checkpoint = reference.parent / "resumed" / "aid-seed0" / "phase-01" / "checkpoint-6"
    assert (checkpoint / "aid_masks-rank0.safetensors").exists()
    resumed = run_experiment(parse_config(recipe={**recipe, "run_name": "resumed"}))
    got = _results(resumed, "aid-seed0")
    assert got[1]["resumed_from_checkpoint"] is True
    assert _without_timing(got) == _without_timing(_results(reference, "aid-seed0"))
    final_a = load_file(reference / "aid-seed0" / "phase-02" / "model.safetensors")
    final_b = load_file(resumed / "aid-seed0" / "phase-02" / "model.safetensors")
    assert all(torch.equal(final_a[k], final_b[k]) for k in final_a)


@pytest.mark.slow
def test_two_processes_keep_identical_aid_weights_on_every_rank(tiny_recipe, tmp_path):
    """Every rank seeds the same mask generator; DDP averages the gradients of the ranks' masked batches,
    so both ranks end every phase with the same weights."""
    import yaml

    recipe = {**tiny_recipe, "num_train_epochs": 1, "strategies": ["aid"], "diagnostics": False}
    recipe_path = tmp_path / "tiny.yaml"
    recipe_path.write_text(yaml.safe_dump(recipe))
    out = tmp_path / "weights"
    out.mkdir()
    proc = launch_two_cpu_processes(REPO / "tests" / "rank_weights_probe.py", str(out), str(recipe_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    for phase in range(3):
        zero, one = (torch.load(out / f"rank{r}-aid-seed0-phase-{phase:02d}.pt") for r in (0, 1))
        assert all(torch.equal(zero[k], one[k]) for k in zero), phase


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["full", "lora"])
def test_aid_finetunes_a_pretrained_resnet_and_its_phases_load_back_with_aid(finetune_recipe, mode):  # noqa: F811
    recipe = {**finetune_recipe, "strategies": ["aid"], "finetune_mode": mode, "lora_rank": 2}
    run_dir = run_experiment(parse_config(recipe=recipe))
    records = _results(run_dir, "aid-seed0")
    assert [r["strategy_stats"] for r in records] == [{"aid_p": 0.9, "aid_layers": 17}] * 3
    assert [r["task"] for r in records] == ["finetune"] * 3
    back = TimmImageClassifier.from_pretrained(run_dir / "aid-seed0" / "phase-02")
    assert sum(isinstance(m, AID) for m in back.modules()) == 17
    assert not any(isinstance(m, nn.ReLU) for m in back.modules())
