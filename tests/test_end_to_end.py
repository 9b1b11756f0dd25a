"""Tiny real runs: real datasets, Trainer and Accelerate, checked on the numbers they write."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import REPO, crash_at_step, launch_two_cpu_processes
from warmstart_hf.config import ConfigError, parse_config
from warmstart_hf.loop import MEASURED_FIELDS, run_experiment

FIELDS = {
    "phase",
    "task",
    "strategy",
    "seed",
    "num_train_examples",
    "classes_seen",
    "train_accuracy",
    "train_loss",
    "test_accuracy",
    "test_accuracy_masked",
    "test_accuracy_full",
    "accuracy_per_group",
    "start_distance_to_previous",
    "epochs",
    "steps",
    "train_seconds",
    "samples_per_second",
}
TIMING = {*MEASURED_FIELDS, "resumed_from_checkpoint"}


def _results(run_dir, arm):
    return [json.loads(line) for line in (run_dir / arm / "results.jsonl").read_text().splitlines()]


def _without_timing(records):
    return [{k: v for k, v in r.items() if k not in TIMING} for r in records]


@pytest.mark.slow
def test_tiny_data_incremental_run_writes_everything(tiny_recipe):
    run_dir = run_experiment(parse_config(recipe=tiny_recipe))
    assert (run_dir / "config.yaml").exists()
    for name in ("summary.md", "summary.csv", "fig1.png"):
        assert (run_dir / name).stat().st_size > 0
    split = json.loads((run_dir / "warm-seed0" / "split.json").read_text())
    assert split == json.loads((run_dir / "cold-seed0" / "split.json").read_text())  # paired arms
    warm, cold = _results(run_dir, "warm-seed0"), _results(run_dir, "cold-seed0")
    assert [r["phase"] for r in warm] == [0, 1, 2]
    for record in warm + cold:
        assert set(record) >= FIELDS
        assert record["num_train_examples"] == len(split["phases"][record["phase"]]["train_indices"])
        assert record["test_accuracy"] == record["test_accuracy_masked"] == record["test_accuracy_full"]
        assert len(record["accuracy_per_group"]) == 3
        assert 0.0 <= record["train_accuracy"] <= 1.0
        assert record["epochs"] == 2.0
    assert [r["num_train_examples"] for r in warm] == [80, 160, 240]
    assert [r["steps"] for r in warm] == [6, 10, 16]  # ceil(n / 32) per epoch, 2 epochs
    # phase 0 starts from the same theta0 in both arms, on the same data: identical results
    assert _without_timing(warm[:1]) == [{**r, "strategy": "warm"} for r in _without_timing(cold[:1])]
    assert warm[1]["start_distance_to_previous"] == 0.0 and warm[2]["start_distance_to_previous"] == 0.0
    assert cold[1]["start_distance_to_previous"] > 1.0 and cold[2]["start_distance_to_previous"] > 1.0
    # the warm phase really starts from the previous phase's final weights: phase-01 differs from
    # phase-00 by training only, and the saved checkpoint files are safetensors
    p0 = load_file(run_dir / "warm-seed0" / "phase-00" / "model.safetensors")
    theta0 = load_file(run_dir / "warm-seed0" / "init" / "model.safetensors")
    assert any(not torch.equal(p0[k], theta0[k]) for k in p0)
    assert not list((run_dir / "warm-seed0").rglob("*.bin")) and not list(
        (run_dir / "warm-seed0").rglob("checkpoint-*")
    )
    table = (run_dir / "summary.md").read_text()
    assert "| warm |" in table and "| cold |" in table


@pytest.mark.slow
def test_class_incremental_masks_and_restricts_to_seen_classes(tiny_recipe):
    recipe = {**tiny_recipe, "scenario": "class", "num_train_epochs": 1, "strategies": ["warm"]}
    run_dir = run_experiment(parse_config(recipe=recipe))
    split = json.loads((run_dir / "warm-seed0" / "split.json").read_text())
    records = _results(run_dir, "warm-seed0")
    assert [r["classes_seen"] for r in records] == [4, 7, 10]
    assert [len(g) for g in split["class_groups"]] == [4, 3, 3]
    for r in records[:-1]:
        assert r["test_accuracy_masked"] >= r["test_accuracy"]  # masking can only help
    last = records[-1]
    assert last["test_accuracy"] == pytest.approx(last["test_accuracy_full"])


@pytest.mark.slow
def test_finished_arms_are_skipped_and_other_settings_refused(tiny_recipe):
    recipe = {**tiny_recipe, "num_train_epochs": 1, "strategies": ["warm"]}
    run_dir = run_experiment(parse_config(recipe=recipe))
    before = (run_dir / "warm-seed0" / "results.jsonl").read_text()
    run_experiment(parse_config(recipe=recipe))
    assert (run_dir / "warm-seed0" / "results.jsonl").read_text() == before
    with pytest.raises(ConfigError, match="learning_rate"):
        run_experiment(parse_config(recipe={**recipe, "learning_rate": 0.2}))


@pytest.mark.slow
@pytest.mark.parametrize(
    ("strategy", "options"),
    [("warm", {"optimizer_state": "carry"}), ("hare_tortoise", {"ht_reset_epochs": 1, "ht_ema": 0.5})],
)
def test_resume_after_interruption_equals_an_uninterrupted_run(tiny_recipe, monkeypatch, strategy, options):
    recipe = {**tiny_recipe, "strategies": [strategy], **options, "save_strategy": "steps", "save_steps": 3}
    reference = run_experiment(parse_config(recipe={**recipe, "run_name": "reference"}))

    crash_at_step(monkeypatch, recipe, 6 + 8)  # phase 0 has 6 steps; die at step 8 of phase 1 (after checkpoint-6)
    arm = reference.parent / "resumed" / f"{strategy}-seed0"
    assert len(_results(arm.parent, f"{strategy}-seed0")) == 1
    assert (arm / "phase-01" / "checkpoint-6").is_dir()
    resumed = run_experiment(parse_config(recipe={**recipe, "run_name": "resumed"}))
    got = _results(resumed, f"{strategy}-seed0")
    assert got[1]["resumed_from_checkpoint"] is True
    assert _without_timing(got) == _without_timing(_results(reference, f"{strategy}-seed0"))
    final_a = load_file(reference / f"{strategy}-seed0" / "phase-02" / "model.safetensors")
    final_b = load_file(resumed / f"{strategy}-seed0" / "phase-02" / "model.safetensors")
    assert all(torch.equal(final_a[k], final_b[k]) for k in final_a)


@pytest.mark.slow
def test_two_cpu_processes_with_accelerate(tiny_recipe, tmp_path):
    import yaml

    recipe_path = tmp_path / "tiny.yaml"
    recipe_path.write_text(yaml.safe_dump({**tiny_recipe, "num_train_epochs": 1}))
    proc = launch_two_cpu_processes(REPO / "scripts" / "train_incremental.py", str(recipe_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = tmp_path / "runs" / "tiny"
    warm = _results(run_dir, "warm-seed0")
    assert [r["phase"] for r in warm] == [0, 1, 2]
    # two ranks with 32 per device: each step sees 64 examples, so half the single-process steps
    assert [r["steps"] for r in warm] == [2, 3, 4]
    assert "world_size=2" in proc.stdout + proc.stderr


@pytest.mark.slow
def test_two_processes_end_every_phase_with_identical_weights(tiny_recipe, tmp_path):
    import yaml

    recipe_path = tmp_path / "tiny.yaml"
    recipe = {**tiny_recipe, "num_train_epochs": 1, "strategies": ["shrink_perturb", "dash"], "diagnostics": False}
    recipe_path.write_text(yaml.safe_dump(recipe))
    out = tmp_path / "weights"
    out.mkdir()
    proc = launch_two_cpu_processes(REPO / "tests" / "rank_weights_probe.py", str(out), str(recipe_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    for arm in ("shrink_perturb-seed0", "dash-seed0"):
        for phase in range(3):
            zero, one = (torch.load(out / f"rank{r}-{arm}-phase-{phase:02d}.pt") for r in (0, 1))
            assert zero.keys() == one.keys()
            assert all(torch.equal(zero[k], one[k]) for k in zero), (arm, phase)
    final = load_file(tmp_path / "runs" / "tiny" / "dash-seed0" / "phase-02" / "model.safetensors")
    assert all(torch.equal(final[k], zero[k]) for k in final)  # what the main process saved


@pytest.mark.slow
def test_every_strategy_runs_end_to_end_with_diagnostics(tiny_recipe):
    from warmstart_hf.strategies import STRATEGIES

    recipe = {
        **tiny_recipe,
        "num_train_epochs": 1,
        "strategies": sorted(STRATEGIES),
        "ht_reset_epochs": 1,
        "diagnostics_samples": 100,
    }
    run_dir = run_experiment(parse_config(recipe=recipe))
    table = (run_dir / "summary.md").read_text()
    for name in STRATEGIES:
        records = _results(run_dir, f"{name}-seed0")
        assert [r["phase"] for r in records] == [0, 1, 2], name
        assert f"| {name} |" in table
        for r in records:
            d = r["diagnostics"]
            assert 0.0 <= d["dormant_fraction"] <= 1.0 and d["effective_rank"] > 1
            # a sample of the phase's own training images (80, 160, 240 of them), not of the test set (90)
            assert d["num_samples"] == min(100, r["num_train_examples"])
            assert (d["grad_norm_old_data"] is None) == (r["phase"] == 0) and d["grad_norm_new_data"] > 0
    warm = _results(run_dir, "warm-seed0")
    sp = _results(run_dir, "shrink_perturb-seed0")
    assert sp[1]["strategy_stats"]["mode"] == "gaussian"
    assert sp[1]["strategy_stats"]["norm_after"] < sp[1]["strategy_stats"]["norm_before"]
    assert sp[1]["start_distance_to_previous"] > 0
    d = _results(run_dir, "dash-seed0")[1]["strategy_stats"]
    assert 0 <= d["clamped_fraction"] <= 1 and d["batch_size"] == 80 and d["num_batches"] == 2
    assert _results(run_dir, "reset_head-seed0")[1]["strategy_stats"]["reset_modules"] == ["timm_model.fc"]
    assert _results(run_dir, "reset_last_k-seed0")[1]["strategy_stats"]["reset_modules"] == [
        "timm_model.layer4",
        "timm_model.fc",
    ]
    l2 = _results(run_dir, "l2_init-seed0")
    assert l2[0]["train_loss"] != warm[0]["train_loss"]  # the penalty changes training from the first phase
    ht = _results(run_dir, "hare_tortoise-seed0")
    assert {"test_accuracy", "train_accuracy"} <= set(ht[2]["companions"]["tortoise"])
    assert (run_dir / "hare_tortoise-seed0" / "phase-02" / "tortoise.safetensors").exists()
    assert (run_dir / "dash-seed0" / "phase-01" / "optimizer_state.safetensors").exists()  # DASH carries
    assert not (run_dir / "warm-seed0" / "phase-01" / "optimizer_state.safetensors").exists()
    assert (run_dir / "fig1.png").stat().st_size > 0


@pytest.mark.slow
def test_early_stopping_reloads_the_best_epoch_and_label_noise_is_applied(tiny_recipe):
    recipe = {
        **tiny_recipe,
        "strategies": ["warm"],
        "num_phases": 2,
        "phase_fractions": [0.3, 1.0],
        "label_noise": [0.5, 0.0],
        "validation_per_class": 3,
        "stop_rule": "early_stopping",
        "num_train_epochs": 3,
        "track_test_curve": True,
    }
    run_dir = run_experiment(parse_config(recipe=recipe))
    records = _results(run_dir, "warm-seed0")
    split = json.loads((run_dir / "warm-seed0" / "split.json").read_text())
    assert len(split["noisy_labels"][0]) == round(0.5 * len(split["chunks"][0])) and split["noisy_labels"][1] == {}
    first = records[0]
    assert first["label_noise"] == 0.5 and first["train_accuracy"] != first["train_accuracy_clean"]
    for record in records:
        curve = record["curve"]
        assert [p["epoch"] for p in curve] == [1, 2, 3]
        best = max(p["validation_accuracy_masked"] for p in curve)
        assert record["best_validation_accuracy"] == pytest.approx(best)
        assert record["best_step"] in [p["step"] for p in curve]
        assert all("test_accuracy" in p and "train_accuracy_running" in p for p in curve)


@pytest.mark.slow
def test_mixed_optimizer_policies_warn_and_every_table_shows_each_arms_policy(tiny_recipe, capsys):
    from warmstart_hf.config import StrategyArguments
    from warmstart_hf.report.study import write_study_report
    from warmstart_hf.strategies import mixed_optimizer_policies

    recipe = {**tiny_recipe, "num_phases": 2, "num_train_epochs": 1, "diagnostics": False}
    recipe["strategies"] = ["warm", "cold", "shrink_perturb"]  # defaults: warm resets, gaussian S&P carries
    run_dir = run_experiment(parse_config(recipe=recipe))
    out = capsys.readouterr().out
    assert "warning: the warm-derived arms mix optimizer-state policies (warm: reset, shrink_perturb: carry)" in out
    policies = {arm: {r["optimizer_state"] for r in _results(run_dir, f"{arm}-seed0")} for arm in recipe["strategies"]}
    assert policies == {"warm": {"reset"}, "cold": {"reset"}, "shrink_perturb": {"carry"}}
    summary = (run_dir / "summary.md").read_text()
    assert "| shrink_perturb | carry | 1 |" in summary and "| warm | reset | 1 |" in summary
    report = write_study_report([run_dir], run_dir / "report")
    rows = {line.split(",")[2]: line for line in (report / "strategies.csv").read_text().splitlines()[1:]}
    assert ",shrink_perturb,carry," in rows["shrink_perturb"] and ",warm,reset," in rows["warm"]
    same = StrategyArguments(optimizer_state="carry")
    assert mixed_optimizer_policies(recipe["strategies"], same) is None


@pytest.mark.slow
def test_phase_epochs_give_each_phase_its_own_length(tiny_recipe):
    recipe = {**tiny_recipe, "strategies": ["warm"], "phase_epochs": [3, 1, 2], "diagnostics": False}
    warm = _results(run_experiment(parse_config(recipe=recipe)), "warm-seed0")
    assert [r["epochs"] for r in warm] == [3.0, 1.0, 2.0]
    # 240 train examples in 3 chunks, batch 32: ceil(80/32)=3, ceil(160/32)=5, ceil(240/32)=8 steps per epoch
    assert [r["steps"] for r in warm] == [9, 5, 16]
