"""MAE pretraining warm vs cold, loss alignment and the linear probe: a deterministic probe loss,
where each phase starts, the alignment rule (and its flag), a probe that trains only its head, and
pretrain -> align -> probe end to end on tiny sizes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file
from transformers import ViTMAEForPreTraining

from tests.conftest import REPO, crash_at_step
from warmstart_hf.config import parse_config
from warmstart_hf.loop import run_experiment
from warmstart_hf.models.mae import build_mae_config, create_mae, fixed_noise, probe_loss
from warmstart_hf.report.alignment import align_phase, write_alignment
from warmstart_hf.tasks.mae_pretrain import MaePretrain

SHRINK = {"max_train_examples": 300, "max_test_examples": 120, "probe_examples": 40, "num_train_epochs": 1}


def _recipe(tmp_path: Path, name: str, **extra) -> dict:
    recipe = yaml.safe_load((REPO / "recipes" / "mae" / name).read_text())
    return {**recipe, **SHRINK, "output_dir": str(tmp_path / "runs"), **extra}


def _records(run_dir: Path, arm: str) -> list[dict]:
    return [json.loads(line) for line in (run_dir / arm / "results.jsonl").read_text().splitlines()]


_TINY = {
    "image_size": 8,
    "num_channels": 1,
    "patch_size": 4,
    "hidden_size": 16,
    "layers": 1,
    "heads": 2,
    "decoder_hidden_size": 8,
    "decoder_layers": 1,
    "decoder_heads": 2,
    "mask_ratio": 0.75,
    "layer_norm_eps": 1e-6,
    "image_mean": [0.3],
    "image_std": [0.2],
}


def _tiny_config():
    return build_mae_config(**_TINY)


def test_probe_loss_is_deterministic_and_is_plain_vitmae_loss_on_normalised_pixels():
    config = _tiny_config()
    model = create_mae(config, seed=1)
    images = torch.randint(0, 256, (10, 1, 8, 8), dtype=torch.uint8)
    noise = fixed_noise(10, config, seed=5)
    first = probe_loss(model, images, noise, batch_size=3)
    assert first == pytest.approx(probe_loss(model, images, noise, batch_size=256), rel=1e-6)
    plain = ViTMAEForPreTraining(config).eval()
    plain.load_state_dict(model.state_dict())
    with torch.no_grad():
        per_image = [
            float(plain(pixel_values=(images[i : i + 1].float() / 255 - 0.3) / 0.2, noise=noise[i : i + 1]).loss)
            for i in range(10)
        ]
    assert first == pytest.approx(sum(per_image) / 10, rel=1e-5)
    assert first != probe_loss(create_mae(config, seed=2), images, noise)  # another model, another loss


def test_reference_initialisation_differs_from_transformers_where_documented():
    config = _tiny_config()
    reference, hf = create_mae(config, 0, "reference"), create_mae(config, 0, "hf")
    assert hf.decoder.mask_token.abs().sum() == 0 and reference.decoder.mask_token.abs().sum() > 0
    query = reference.vit.layers[0].attention.q_proj.weight
    bound = (6 / (3 * query.shape[0] + query.shape[1])) ** 0.5  # Xavier-uniform of the fused 3d x d qkv matrix
    assert query.abs().max() <= bound and query.abs().max() > 0.8 * bound
    fc = reference.vit.layers[0].mlp.fc1.weight
    fc_bound = (6 / (fc.shape[0] + fc.shape[1])) ** 0.5
    assert fc.abs().max() <= fc_bound and fc.abs().max() > 0.8 * fc_bound
    assert torch.all(reference.vit.layers[0].attention.q_proj.bias == 0)


def test_reference_initialisation_draws_the_patch_embedding_and_tokens_as_the_reference():
    """MAE models_mae.py initialize_weights: the patch projection's weight is drawn as a Linear's,
    xavier_uniform over the flattened (out, in x k x k) weight, so bound sqrt(6 / (out + in k k)); not
    PyTorch's Conv2d default (bound 1 / sqrt(in k k)) nor xavier of the 4-D weight (sqrt(6 / (in k k +
    out k k))). Its bias keeps PyTorch's default; class and mask tokens are N(0, 0.02). Pooled over 16
    seeded draws of the tiny model (16 x 1 x 4 x 4 weights, 16 + 8 token entries each)."""
    models = [create_mae(_tiny_config(), seed, "reference").requires_grad_(False) for seed in range(16)]
    conv = models[0].vit.embeddings.patch_embeddings.projection
    out, fan_in = conv.weight.shape[0], conv.weight[0].numel()
    bound = (6 / (out + fan_in)) ** 0.5
    weights = torch.cat([m.vit.embeddings.patch_embeddings.projection.weight.flatten() for m in models])
    assert weights.abs().max() <= bound and weights.abs().max() > 0.98 * bound
    assert float(weights.std()) == pytest.approx(bound / 3**0.5, rel=0.05)  # uniform(-b, b): std b / sqrt(3)
    assert float(weights.mean()) == pytest.approx(0.0, abs=0.02)
    biases = torch.cat([m.vit.embeddings.patch_embeddings.projection.bias for m in models])
    assert biases.abs().max() <= fan_in**-0.5 and biases.abs().min() > 0  # Conv2d's default bias
    for tokens in (
        torch.cat([m.vit.embeddings.cls_token.flatten() for m in models]),
        torch.cat([m.decoder.mask_token.flatten() for m in models]),
    ):
        assert float(tokens.std()) == pytest.approx(0.02, rel=0.15)
        assert float(tokens.mean()) == pytest.approx(0.0, abs=3 * 0.02 / len(tokens) ** 0.5)


def test_alignment_picks_the_nearest_snapshot_and_flags_an_impossible_phase():
    curve = [{"step": s, "probe_loss": loss, "snapshot": f"s{s}"} for s, loss in ((10, 0.9), (20, 0.7), (30, 0.5))]
    warm = {"phase": 1, "probe_curve": curve, "probe_loss": 0.5, "steps": 30}
    cold = {"phase": 1, "probe_loss": 0.68, "steps": 30}
    chosen = align_phase(warm, cold, tolerance=0.05)
    assert (chosen["chosen_step"], chosen["chosen_snapshot"], chosen["within_tolerance"]) == (20, "s20", True)
    assert chosen["gap"] == pytest.approx(0.02) and chosen["end_of_phase_gap"] == pytest.approx(-0.18)
    unreachable = align_phase(warm, {**cold, "probe_loss": 0.2}, tolerance=0.05)
    assert unreachable["chosen_step"] == 30 and not unreachable["within_tolerance"]
    tie = align_phase({**warm, "probe_curve": [*curve, {"step": 40, "probe_loss": 0.7}]}, cold, tolerance=0.05)
    assert tie["chosen_step"] == 20  # ties go to the earlier step


@pytest.mark.slow
def test_pretrain_align_probe_end_to_end(tmp_path, capsys):
    from warmstart_hf.downstream import evaluate_run

    recipe = _recipe(tmp_path, "demo_pretrain_mnist.yaml", num_phases=2, probe_every_steps=2)
    config = parse_config(recipe=recipe)
    assert config.training.learning_rate == pytest.approx(4e-3 * 64 / 256)  # base_learning_rate x batch / 256
    run_dir = run_experiment(config)
    warm, cold = _records(run_dir, "warm-seed0"), _records(run_dir, "cold-seed0")
    # warm phase 1 starts where phase 0 ended; cold phase 1 from the seeded fresh draw of phase 1
    assert warm[1]["start_probe_loss"] == pytest.approx(warm[0]["probe_loss"], rel=1e-6)
    task = MaePretrain(config)
    data = task.prepare()
    fresh = probe_loss(task.fresh_model(data, 0, 1), data.probe_images, data.probe_noise)
    assert cold[1]["start_probe_loss"] == pytest.approx(fresh, rel=1e-6)
    assert warm[0]["probe_loss"] == pytest.approx(cold[0]["probe_loss"], rel=1e-6)  # phase 0: the same run
    # every snapshot loads with plain transformers and reproduces its recorded probe loss
    point = warm[1]["probe_curve"][1]
    snapshot = ViTMAEForPreTraining.from_pretrained(run_dir / "warm-seed0" / point["snapshot"])
    assert isinstance(snapshot, ViTMAEForPreTraining)
    reloaded = task.load_model(run_dir / "warm-seed0" / point["snapshot"])
    assert probe_loss(reloaded, data.probe_images, data.probe_noise) == pytest.approx(point["probe_loss"], rel=1e-5)
    alignment = json.loads((run_dir / "alignment.json").read_text())
    for chosen in alignment["seeds"]["0"]["phases"]:
        target = cold[chosen["phase"]]["probe_loss"]
        earlier = [p for r in warm[: chosen["phase"] + 1] for p in r["probe_curve"]]  # phases <= p are candidates
        best = min(abs(p["probe_loss"] - target) for p in earlier)
        assert abs(chosen["gap"]) == pytest.approx(best)
    assert (run_dir / "fig4.png").exists()
    from warmstart_hf.report.study import write_study_report

    report = write_study_report([run_dir])
    assert (report / "fig4.png").exists() and "## Fig. 4" in (report / "report.md").read_text()
    assert len((report / "alignment.csv").read_text().splitlines()) == 1 + 2  # a row per phase
    assert json.loads(write_alignment(run_dir, "cold_to_warm").read_text())["direction"] == "cold_to_warm"
    write_alignment(run_dir, "warm_to_cold")

    files = []
    for name in ("demo_probe_digits.yaml", "demo_finetune_digits.yaml"):
        files.append(tmp_path / name.removeprefix("demo_").replace("_digits", ""))
        files[-1].write_text(yaml.safe_dump(_recipe(tmp_path, name, num_train_epochs=2)))
    capsys.readouterr()
    out = evaluate_run(run_dir, [str(f) for f in files])
    console = capsys.readouterr().out  # each evaluation names its checkpoint, not the probe's own "warm" arm
    cold_end = run_dir / "cold-seed0" / "phase-01"
    assert f"probe: evaluating arm cold, seed 0, phase 1, end_of_phase checkpoint {cold_end}" in console
    assert "arms ['warm']" not in console
    lines = (out / "downstream.csv").read_text().splitlines()
    assert len(lines) == 1 + 2 * 2 * 2 * 2 and (out / "fig5.png").exists()  # recipes x phases x arms x kinds
    table = (out / "downstream.md").read_text()
    assert "| finetune | aligned | warm |" in table and "| probe | end_of_phase | cold |" in table
    # the probe trained its head only: the encoder is bit-identical to the pretrained phase
    probed = load_file(
        next((out / "probe").glob("warm-seed0-phase01-end_of_phase/warm-seed0/phase-00/model.safetensors"))
    )
    pretrained = load_file(run_dir / "warm-seed0" / "phase-01" / "model.safetensors")
    encoder = [k for k in pretrained if k.startswith("vit.")]
    assert encoder and all(torch.equal(probed[k], pretrained[k]) for k in encoder)
    init = load_file(next((out / "probe").glob("warm-seed0-phase01-end_of_phase/warm-seed0/init/model.safetensors")))
    assert not torch.equal(probed["head.1.weight"], init["head.1.weight"])


def test_the_probe_head_is_a_batchnorm_without_affine_parameters_and_lars_adapts_the_matrix_only():
    from warmstart_hf.models.probe import MaeLinearProbe, MaeProbeConfig, lars_optimizer

    model = MaeLinearProbe(MaeProbeConfig(encoder=_tiny_config().to_dict(), num_labels=3))
    norm = model.head[0]
    assert not norm.affine and list(norm.parameters()) == [] and norm.eps == 1e-6
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["head.1.weight", "head.1.bias"]
    assert model.head[1].weight.std() < 0.02 and torch.all(model.head[1].bias == 0)
    groups = lars_optimizer(model, 1.0).param_groups
    assert [(len(g["params"]), g["always_adapt"], g["weight_decay"]) for g in groups] == [
        (1, True, 0.0),
        (1, False, 0.0),
    ]
    model.train()
    assert not model.vit.training and model.head.training  # the frozen encoder stays in eval mode


def _reference_lars(weight: torch.Tensor, grads: list[torch.Tensor], lr: float, weight_decay: float = 0.0):
    """MAE util/lars.py LARS.step (momentum 0.9, trust coefficient 0.001) written out for one parameter,
    in float64: for ndim > 1, dp = g + weight_decay x w and dp x= 0.001 ||w|| / ||dp|| when both norms are
    positive (else 1); 1-D parameters take g unchanged; mu = 0.9 mu + dp; w -= lr mu."""
    w, mu = weight.double().clone(), torch.zeros_like(weight, dtype=torch.float64)
    for grad in grads:
        dp = grad.double()
        if w.ndim > 1:
            dp = dp + weight_decay * w
            w_norm, dp_norm = w.norm(), dp.norm()
            dp = dp * (0.001 * w_norm / dp_norm if w_norm > 0 and dp_norm > 0 else 1.0)
        mu = 0.9 * mu + dp
        w = w - lr * mu
    return w


def test_two_lars_steps_equal_the_reference_update_by_hand():
    """The probe's optimizer against MAE's LARS computed by hand: the matrix is adapted, the bias is
    not; momentum carries the first step into the second. A matrix starting at zero takes its first
    step unadapted (ratio 1)."""
    from warmstart_hf.models.probe import MaeLinearProbe, MaeProbeConfig, lars_optimizer

    draw = torch.Generator().manual_seed(0)
    lr = 0.1
    for start in ("drawn", "zero"):
        model = MaeLinearProbe(MaeProbeConfig(encoder=_tiny_config().to_dict(), num_labels=3))
        matrix, bias = model.head[1].weight, model.head[1].bias
        with torch.no_grad():
            matrix.copy_(torch.randn(3, 16, generator=draw) * (start == "drawn"))
            bias.copy_(torch.randn(3, generator=draw))
        initial = {"matrix": matrix.detach().clone(), "bias": bias.detach().clone()}
        grads = {
            "matrix": [torch.randn(3, 16, generator=draw) * 0.002 for _ in range(2)],
            "bias": [torch.randn(3, generator=draw) * 0.002 for _ in range(2)],
        }
        if start == "drawn":  # a trust ratio that a LARC-style clip of ratio / lr at 1 would change
            ratio = 0.001 * initial["matrix"].norm() / grads["matrix"][0].norm()
            assert 0.1 < ratio < 1 < ratio / lr
        optimizer = lars_optimizer(model, lr)
        assert all(group["weight_decay"] == 0.0 for group in optimizer.param_groups)  # MAE probes without it
        for step in range(2):
            matrix.grad, bias.grad = grads["matrix"][step].clone(), grads["bias"][step].clone()
            optimizer.step()
        for name, parameter in (("matrix", matrix), ("bias", bias)):
            expected = _reference_lars(initial[name], grads[name], lr).float()
            torch.testing.assert_close(parameter.detach(), expected, rtol=1e-5, atol=1e-8, msg=f"{start} {name}")
            assert not torch.equal(parameter.detach(), initial[name])


@pytest.mark.slow
def test_phases_and_aligned_checkpoints_are_pushed_and_load_back_by_revision(hub, tmp_path):
    from huggingface_hub import HfApi

    base = hub.repo("mae")
    recipe = _recipe(tmp_path, "demo_pretrain_mnist.yaml", num_phases=2, probe_every_steps=2)
    run_dir = run_experiment(parse_config(recipe={**recipe, "push_to_hub": True, "hub_model_id": base}))
    alignment = json.loads((run_dir / "alignment.json").read_text())["seeds"]["0"]["phases"]
    branches = {ref.name for ref in HfApi().list_repo_refs(f"{base}-warm-seed0").branches}
    assert branches == {"main", "phase-00", "phase-01", "phase-00-aligned", "phase-01-aligned"}
    state = json.loads((run_dir / "warm-seed0" / "hub.json").read_text())
    assert sorted(state["aligned"]) == ["phase-00-aligned", "phase-01-aligned"]
    for chosen in alignment:
        branch = f"phase-{chosen['phase']:02d}-aligned"
        model = ViTMAEForPreTraining.from_pretrained(f"{base}-warm-seed0", revision=branch)
        local = ViTMAEForPreTraining.from_pretrained(run_dir / "warm-seed0" / chosen["chosen_snapshot"])
        assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), local.state_dict().values()))
    card = HfApi().hf_hub_download(f"{base}-warm-seed0", "README.md", revision="phase-01-aligned")
    text = Path(card).read_text()
    assert "Loss-aligned checkpoint of phase 1" in text and "`vit_mae` masked autoencoder (pretraining)" in text
    cold = {ref.name for ref in HfApi().list_repo_refs(f"{base}-cold-seed0").branches}
    assert cold == {"main", "phase-00", "phase-01"}  # warm_to_cold: cold's end of phase is the target
    from warmstart_hf.downstream import evaluate_run

    probe = tmp_path / "probe.yaml"
    probe.write_text(yaml.safe_dump(_recipe(tmp_path, "demo_probe_digits.yaml", num_train_epochs=1)))
    evaluate_run(run_dir, [str(probe)])
    rows = [line.split(",") for line in (run_dir / "downstream" / "downstream.csv").read_text().splitlines()]
    header = rows[0]
    aligned = next(r for r in rows[1:] if r[header.index("kind")] == "aligned" and r[header.index("arm")] == "warm")
    phase = aligned[header.index("phase")]
    card = HfApi().hf_hub_download(f"{base}-warm-seed0", "README.md", revision=f"phase-{int(phase):02d}-aligned")
    accuracy = 100 * float(aligned[header.index("test_accuracy")])
    assert (
        "## Downstream evaluation" in Path(card).read_text() and f"| probe | {accuracy:.2f} |" in Path(card).read_text()
    )


def test_layer_decay_groups_and_the_finetuning_head():
    from warmstart_hf.models.probe import MaeClassifier, MaeFinetuneConfig, layer_decay_optimizer

    encoder = _tiny_config().to_dict()
    encoder["num_hidden_layers"] = 2
    model = MaeClassifier(MaeFinetuneConfig(encoder=encoder, num_labels=3, drop_path_rate=0.2))
    optimizer = layer_decay_optimizer(model, lr=1.0, weight_decay=0.05, decay=0.5)
    lr_of = {id(p): (g["lr"], g["weight_decay"]) for g in optimizer.param_groups for p in g["params"]}
    named = dict(model.named_parameters())
    assert lr_of[id(named["vit.embeddings.patch_embeddings.projection.weight"])] == (0.125, 0.05)  # 0.5^(2+1-0)
    assert lr_of[id(named["vit.layers.0.attention.q_proj.weight"])] == (0.25, 0.05)
    assert lr_of[id(named["vit.layers.1.mlp.fc1.bias"])] == (0.5, 0.0)  # no decay on 1-D parameters
    assert lr_of[id(named["vit.embeddings.cls_token"])][1] == 0.0
    assert lr_of[id(named["head.weight"])] == (1.0, 0.05) and lr_of[id(named["fc_norm.weight"])] == (1.0, 0.0)
    assert isinstance(model.vit.layernorm, torch.nn.Identity)
    rates = [layer.dropout[1].drop_prob for layer in model.vit.layers]
    assert rates == pytest.approx([0.0, 0.2])  # stochastic depth, linear over depth
    model.eval()
    images = torch.randint(0, 256, (3, 1, 8, 8), dtype=torch.uint8)
    assert torch.equal(model(images).logits, model(images).logits)  # deterministic in eval mode


def test_mixup_mixes_each_batch_with_its_reverse_and_the_targets_say_how(tmp_path):
    from warmstart_hf.config import ConfigError
    from warmstart_hf.tasks import create_task

    recipe = _recipe(tmp_path, "demo_finetune_digits.yaml", cutmix_alpha=0.0, label_smoothing_factor=0.1)
    with pytest.raises(ConfigError, match="dataloader_drop_last"):
        parse_config(recipe={**recipe, "dataloader_drop_last": False})
    config = parse_config(recipe=recipe)
    task = create_task(config)
    num_classes = 10

    class Data:
        model_config = type("C", (), {"num_labels": num_classes})

    mix = task.batch_mix(Data)
    torch.manual_seed(0)
    images = torch.randint(0, 256, (6, 1, 4, 4), dtype=torch.uint8)
    labels = torch.tensor([0, 1, 2, 3, 4, 5])
    mixed, targets = mix(images, labels)
    assert torch.allclose(targets.sum(-1), torch.ones(6))
    lam = (targets[0, 0] - 0.01) / 0.9  # smoothed one-hot: 0.9 + 0.01 on the label, 0.01 elsewhere
    expected = lam * images.float() / 255 + (1 - lam) * images.flip(0).float() / 255
    assert torch.allclose(mixed, expected, atol=1e-6)
    assert targets[0, 5] == pytest.approx(float((1 - lam) * 0.9 + 0.01), abs=1e-6)  # the reversed partner


def _reference_sincos_table(dim: int, grid: int) -> np.ndarray:
    """MAE util/pos_embed.py get_2d_sincos_pos_embed(dim, grid, cls_token=True), written out: per axis
    D/2 features, [sin | cos] of position x omega with omega = 1 / 10000^(i / (D/4)), i < D/4. The
    first half encodes the column (the reference's "emb_h" is fed grid[0] of meshgrid(grid_w, grid_h),
    the w coordinate), the second half the row; patches row-major; the class token's row is zeros."""
    quarter = dim // 4
    omega = 1.0 / 10000 ** (np.arange(quarter) / quarter)
    patch = np.arange(grid * grid)
    halves = []
    for position in (patch % grid, patch // grid):  # column, then row
        angles = position[:, None] * omega[None, :]
        halves.append(np.concatenate([np.sin(angles), np.cos(angles)], axis=1))
    return np.concatenate([np.zeros((1, dim)), np.concatenate(halves, axis=1)], axis=0)


def test_position_embeddings_are_the_reference_sin_cos_tables():
    """Encoder and decoder tables equal the reference's (built above with numpy, not with the function
    the code calls), in both inits; fixed (no gradient) during pretraining. transformers leaves the
    tables at zero when the model is built from a config, so the code writes them. A 4 x 4 patch grid."""
    config = build_mae_config(**{**_TINY, "image_size": 16, "hidden_size": 32, "decoder_hidden_size": 16})
    for init in ("reference", "hf"):
        model = create_mae(config, 0, init)
        for table in (model.vit.embeddings.position_embeddings, model.decoder.decoder_pos_embed):
            expected = torch.from_numpy(_reference_sincos_table(table.shape[-1], 4)).float()
            assert table.shape == (1, 17, table.shape[-1])
            torch.testing.assert_close(table[0], expected, rtol=0, atol=1e-6)
            assert not table.requires_grad


def test_the_probe_and_finetuning_models_reload_with_identical_outputs():
    """The probe and finetuning models round-trip through from_pretrained; finetuning trains the
    position table that pretraining froze."""
    import tempfile

    from warmstart_hf.models.probe import MaeClassifier, MaeFinetuneConfig, MaeLinearProbe, MaeProbeConfig

    images = torch.randint(0, 256, (2, 1, 8, 8), dtype=torch.uint8)
    for cls, config in ((MaeLinearProbe, MaeProbeConfig), (MaeClassifier, MaeFinetuneConfig)):
        model = cls(config(encoder=_tiny_config().to_dict(), num_labels=3)).eval()
        with tempfile.TemporaryDirectory() as folder:
            model.save_pretrained(folder)
            back = cls.from_pretrained(folder).eval()
        assert torch.equal(model(images).logits, back(images).logits)
    assert MaeClassifier(
        MaeFinetuneConfig(encoder=_tiny_config().to_dict(), num_labels=3)
    ).vit.embeddings.position_embeddings.requires_grad


@pytest.mark.slow
def test_an_mae_phase_resumed_mid_epoch_equals_an_uninterrupted_one(tmp_path, monkeypatch):
    """The Trainer loads a checkpoint's keys non-strictly and ViTMAE saves its attention under other names
    than it holds in memory: without the project's strict load, a resumed phase silently kept the
    previous phase's attention weights (and the reloaded warm model trained its fixed sin-cos tables)."""

    recipe = _recipe(tmp_path, "demo_pretrain_mnist.yaml", num_train_epochs=3, num_phases=2, strategies=["warm"])
    recipe.update(save_strategy="steps", save_steps=2, save_interval_minutes=0, probe_every_steps=2)
    reference = run_experiment(parse_config(recipe={**recipe, "run_name": "reference"}))
    crash_at_step(monkeypatch, recipe, 9 + 4)  # step 4 of phase 1 (phase 0: 9), after checkpoint-2, mid-epoch
    resumed = run_experiment(parse_config(recipe={**recipe, "run_name": "resumed"}))
    got, want = _records(resumed, "warm-seed0"), _records(reference, "warm-seed0")
    assert got[1]["resumed_from_checkpoint"] is True
    assert [r["probe_curve"] for r in got] == [r["probe_curve"] for r in want]
    a = load_file(reference / "warm-seed0" / "phase-01" / "model.safetensors")
    b = load_file(resumed / "warm-seed0" / "phase-01" / "model.safetensors")
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


def test_loaded_models_keep_their_frozen_parameters_frozen(tmp_path):
    from warmstart_hf.models.mae import PixelViTMAE
    from warmstart_hf.models.probe import MaeLinearProbe, MaeProbeConfig

    mae = create_mae(_tiny_config(), seed=0)
    mae.save_pretrained(tmp_path / "mae")
    loaded = PixelViTMAE.from_pretrained(tmp_path / "mae")  # what MaePretrain.load_model does for a warm arm
    frozen = {"vit.embeddings.position_embeddings", "decoder.decoder_pos_embed"}
    assert {n for n, p in loaded.named_parameters() if not p.requires_grad} == frozen
    probe = MaeLinearProbe(MaeProbeConfig(encoder=_tiny_config().to_dict(), num_labels=3))
    probe.save_pretrained(tmp_path / "probe")
    trainable = [n for n, p in MaeLinearProbe.from_pretrained(tmp_path / "probe").named_parameters() if p.requires_grad]
    assert trainable == ["head.1.weight", "head.1.bias"]
