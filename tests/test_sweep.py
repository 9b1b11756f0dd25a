from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO
from warmstart_hf.config import ConfigError, parse_config
from warmstart_hf.report.study import steps_to_reach, write_study_report
from warmstart_hf.strategies import mixed_optimizer_policies
from warmstart_hf.sweep import arm_commands, configuration_config, load_sweep, run_sweep, write_cluster_files

ALL_YAML = sorted(p for p in (REPO / "recipes").rglob("*.yaml") if "accelerate_configs" not in p.parts)


@pytest.mark.parametrize("path", ALL_YAML, ids=lambda p: str(p.relative_to(REPO / "recipes")))
def test_every_recipe_and_grid_validates_and_states_its_command(path):
    text = path.read_text()
    assert text.startswith("#") and str(path.relative_to(REPO)) in text.split("\n\n")[0]
    spec = yaml.safe_load(text)
    if "grid" in spec:
        sweep = load_sweep(path)
        assert sweep.arm_count() > 0
        configs = [configuration_config(sweep, c, sweep.seeds[0]) for c in sweep.configurations]
    else:
        configs = [parse_config([str(path)])]
        assert configs[0].training.run_name
    for config in configs:  # comparisons state the optimizer policy, the same for every warm-derived arm
        assert config.strategy.optimizer_state in ("reset", "carry"), path
        assert mixed_optimizer_policies(config.incremental.strategies, config.strategy) is None


def _grid(tmp_path, tiny_recipe, **extra) -> Path:
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump({**tiny_recipe, "num_train_epochs": 1, "num_phases": 2, "track_test_curve": True}))
    grid = {
        "recipe": str(base),
        "name": "mini",
        "grid": {
            "augmentation": [{"label": "standard", "augmentation": ["crop"]}, {"label": "none", "augmentation": []}],
            "scenario": ["data", "class"],
        },
        "standard": {"augmentation": "standard"},
        "strategies": ["warm", "cold"],
        "seeds": [0, 1],
        **extra,
    }
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(grid))
    return path


def test_grid_expansion_labels_and_standard(tmp_path, tiny_recipe):
    sweep = load_sweep(_grid(tmp_path, tiny_recipe))
    labels = [c.label for c in sweep.configurations]
    assert labels == [
        "augmentation=standard,scenario=data",
        "augmentation=standard,scenario=class",
        "augmentation=none,scenario=data",
        "augmentation=none,scenario=class",
    ]
    assert [c.standard for c in sweep.configurations] == [True, True, False, False]
    assert sweep.arm_count() == 4 * 2 * 2
    config = configuration_config(sweep, sweep.configurations[2], seed=1)
    assert config.incremental.augmentation == [] and config.incremental.scenario == "data"
    assert config.training.seed == 1 and config.training.run_name == "mini/augmentation=none,scenario=data"
    assert config.incremental.strategies == ["warm", "cold"]


def test_bad_grids_fail_fast(tmp_path, tiny_recipe):
    with pytest.raises(ConfigError, match="unknown_key"):
        load_sweep(_grid(tmp_path, tiny_recipe, unknown_key=1))
    bad = _grid(tmp_path, tiny_recipe)
    spec = yaml.safe_load(bad.read_text())
    spec["grid"]["num_phases"] = [2, 0]
    bad.write_text(yaml.safe_dump(spec))
    with pytest.raises(ConfigError, match="num_phases=0"):
        load_sweep(bad)


def test_cluster_files_have_one_command_per_arm(tmp_path, tiny_recipe):
    sweep = load_sweep(_grid(tmp_path, tiny_recipe))
    commands_path, slurm_path = write_cluster_files(sweep)
    commands = commands_path.read_text().splitlines()
    assert len(commands) == sweep.arm_count() == len(set(commands))
    assert all(c.startswith("accelerate launch scripts/train_incremental.py ") for c in commands)
    assert "--array=1-16" in slurm_path.read_text()
    recipe = commands[0].split()[3]
    config = parse_config([recipe, "--seed", "1"])  # the generated recipe reproduces the configuration
    assert config.training.run_name == "mini/augmentation=standard,scenario=data"
    assert config.incremental.augmentation == ["crop"]
    assert arm_commands(sweep) == commands


@pytest.mark.slow
def test_tiny_sweep_is_paired_and_reported(tmp_path, tiny_recipe):
    sweep = load_sweep(_grid(tmp_path, tiny_recipe))
    sweep.configurations = sweep.configurations[::3]  # standard/data and none/class, to stay quick
    directory = run_sweep(sweep)
    for configuration in sweep.configurations:
        run_dir = directory / configuration.label
        for seed in (0, 1):
            warm = json.loads((run_dir / f"warm-seed{seed}" / "split.json").read_text())
            cold = json.loads((run_dir / f"cold-seed{seed}" / "split.json").read_text())
            assert warm == cold  # paired: the same split per seed
        assert json.loads((run_dir / "warm-seed0" / "split.json").read_text()) != json.loads(
            (run_dir / "warm-seed1" / "split.json").read_text()
        )
    out = write_study_report([directory])
    for name in ("report.md", "gaps.csv", "strategies.csv", "fig1.png", "fig2.png"):
        assert (out / name).stat().st_size > 0, name
    gaps = (out / "gaps.csv").read_text().splitlines()
    assert len(gaps) == 1 + 2 * 2  # header + 2 configurations x (final, average)
    assert all(",warm - cold," in row for row in gaps[1:])
    # every gap recomputed from results.jsonl: warm minus cold, paired by seed, in points
    import csv

    import numpy as np

    for row in csv.DictReader((out / "gaps.csv").read_text().splitlines()):
        run_dir = directory / row["configuration"]
        per_seed = []
        for seed in (0, 1):
            warm, cold = (
                [json.loads(line)["test_accuracy"] for line in (run_dir / f"{arm}-seed{seed}" / "results.jsonl").open()]
                for arm in ("warm", "cold")
            )
            pick = (lambda acc: acc[-1]) if row["metric"] == "final" else np.mean
            per_seed.append(100 * (pick(warm) - pick(cold)))
        assert float(row["mean"]) == pytest.approx(np.mean(per_seed), abs=1e-9)
        half = 12.706204736174698 * np.std(per_seed, ddof=1) / np.sqrt(2)  # t quantile 0.975, df = 1
        assert float(row["ci_low"]) == pytest.approx(np.mean(per_seed) - half, abs=1e-3)
    text = (out / "report.md").read_text()
    assert "augmentation=standard,scenario=data" in text and "verdict" in text


def test_steps_to_reach_uses_the_curves():
    cold = [{"curve": [{"step": 5, "test_accuracy": 0.5}]}, {"curve": [{"step": 9, "test_accuracy": 0.8}]}]
    warm = [
        {"curve": [{"step": 5, "test_accuracy": 0.6}]},
        {"curve": [{"step": 3, "test_accuracy": 0.7}, {"step": 6, "test_accuracy": 0.81}]},
    ]
    assert steps_to_reach(warm, cold) == [5, 6]
    warm[1]["curve"][1]["test_accuracy"] = 0.79
    assert steps_to_reach(warm, cold)[1] is None
