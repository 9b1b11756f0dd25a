from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from tests.conftest import REPO
from warmstart_hf.config import ConfigError, parse_config

RECIPES = sorted((REPO / "recipes").glob("*.yaml"))


def test_recipes_exist():
    names = {p.name for p in RECIPES}
    assert {"digits.yaml", "digits_class_incremental.yaml", "cifar100.yaml", "cifar100_class_incremental.yaml"} <= names


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_every_recipe_parses_and_states_its_command(path):
    config = parse_config([str(path)])
    assert config.training.run_name
    header = path.read_text().splitlines()[0]
    assert header.startswith("#")
    assert f"recipes/{path.name}" in path.read_text().split("\n\n")[0]


def test_cifar100_recipe_is_the_papers_protocol():
    c = parse_config([str(REPO / "recipes" / "cifar100.yaml")])
    assert c.data.dataset == "uoft-cs/cifar100" and c.data.image_column == "img"
    assert c.data.label_column == "fine_label"
    assert c.model.model_width == 1.0 and c.model.model_name == "resnet18_cifar"
    assert c.training.optim.value == "sgd" and "momentum=0.9" in c.training.optim_args
    assert c.training.learning_rate == 0.1 and c.training.weight_decay == 5e-4
    assert c.training.per_device_train_batch_size == 128 and c.training.num_train_epochs == 100
    assert c.incremental.lr_milestones == [20, 60] and c.incremental.lr_gamma == 0.1
    assert c.incremental.augmentation == ["crop", "flip"] and c.incremental.crop_padding == 4
    assert c.incremental.strategies == ["warm", "cold"]


def test_command_line_overrides_the_recipe():
    c = parse_config(
        [str(REPO / "recipes" / "digits.yaml"), "--seed", "3", "--num_phases", "4", "--strategies", "cold,warm"]
    )
    assert c.training.seed == 3 and c.num_phases == 4 and c.incremental.strategies == ["cold", "warm"]


def test_empty_augmentation_list_means_none(tiny_recipe):
    c = parse_config(recipe={**tiny_recipe, "augmentation": []})
    assert c.incremental.augmentation == []


def test_resolved_config_round_trips_through_yaml(tiny_recipe):
    c = parse_config(recipe=tiny_recipe)
    dumped = yaml.safe_dump(c.to_dict())
    assert yaml.safe_load(dumped)["incremental"]["strategies"] == ["warm", "cold"]


@pytest.mark.parametrize(
    ("override", "needles"),
    [
        ({"num_phasess": 3}, ["num_phasess", "num_phases"]),
        ({"num_phases": "three"}, ["num_phases", "three", "int"]),
        ({"num_phases": 0}, ["num_phases", "at least 1"]),
        ({"learning_rate": -0.1}, ["learning_rate", "-0.1", "positive"]),
        ({"num_train_epochs": 0}, ["num_train_epochs", "positive"]),
        ({"strategies": ["warm", "luke_warm"]}, ["strategies", "luke_warm", "cold"]),
        ({"model_name": "resnet_nope"}, ["model_name", "resnet_nope"]),
        ({"scenario": "task"}, ["scenario", "task", "data"]),
        ({"seed": [1, 2]}, ["seed", "single value"]),
        ({"strategies": "warm"}, ["strategies", "list"]),
        ({"use_cpu": "maybe"}, ["use_cpu", "maybe", "true/false"]),
        ({"lr_milestones": [2], "lr_scheduler_type": "cosine"}, ["lr_scheduler_type", "constant"]),
        ({"phase_fractions": [0.6, 0.5]}, ["phase_fractions", "increasing"]),
        ({"augmentation": ["crop", "mixup"]}, ["augmentation", "mixup"]),
        ({"phase_epochs": [1, 2]}, ["phase_epochs", "3 phases"]),
        ({"phase_epochs": [1, 0, 2]}, ["phase_epochs", "positive"]),
        ({"fused_optimizer": True, "optim": "adafactor"}, ["fused_optimizer", "adafactor", "sgd"]),
    ],
)
def test_bad_recipe_values_fail_with_field_value_and_fix(tiny_recipe, override, needles):
    with pytest.raises(ConfigError) as info:
        parse_config(recipe={**tiny_recipe, **override})
    message = str(info.value)
    for needle in needles:
        assert needle in message
    assert "Fix" in message or "allowed" in message


def test_unknown_command_line_option_is_rejected():
    with pytest.raises(ConfigError, match="seeed"):
        parse_config([str(REPO / "recipes" / "digits.yaml"), "--seeed", "3"])


def test_script_exits_2_on_bad_input_and_leaves_run_dir_untouched(tmp_path):
    run_dir = tmp_path / "runs" / "kept"
    run_dir.mkdir(parents=True)
    (run_dir / "marker.txt").write_text("keep me")
    recipe = tmp_path / "bad.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "dataset": "sklearn:digits",
                "num_phases": 11,
                "scenario": "class",
                "output_dir": str(tmp_path / "runs"),
                "run_name": "kept",
            }
        )
    )
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "train_incremental.py"), str(recipe)],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert proc.returncode == 2, proc.stderr
    assert "num_phases" in proc.stderr and "11" in proc.stderr and "10 classes" in proc.stderr
    assert sorted(p.name for p in run_dir.iterdir()) == ["marker.txt"]


@pytest.mark.parametrize("target", ["output_dir", "run_dir"])
def test_an_output_dir_that_is_a_file_is_refused_like_any_bad_input(tiny_recipe, tmp_path, capsys, target):
    import yaml

    from warmstart_hf.cli import main_train

    blocker = tmp_path / "runs"
    if target == "run_dir":
        blocker.mkdir()
        blocker = blocker / "tiny"
    blocker.write_text("not a directory")
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(yaml.safe_dump(tiny_recipe))
    assert main_train([str(recipe)]) == 2
    message = capsys.readouterr().err
    assert "`output_dir`" in message and str(blocker) in message and "Fix" in message
    assert blocker.read_text() == "not a directory"


def test_a_recipes_accelerator_config_amends_the_projects():
    config = parse_config(recipe={"accelerator_config": {"split_batches": True}})
    assert config.training.accelerator_config.split_batches and config.training.accelerator_config.non_blocking


class _Processes:
    """The accelerate state TrainingArguments builds, reporting ``num_processes`` processes (what
    ``TrainingArguments.world_size`` reads); everything else is the real single-process state."""

    def __init__(self, num_processes: int, **kwargs):
        from accelerate import PartialState

        self._state, self.num_processes = PartialState(**kwargs), num_processes

    def __getattr__(self, name: str):
        return getattr(self._state, name)


@pytest.mark.parametrize(
    ("batch", "accumulation", "processes"), [(64, 1, 1), (32, 4, 1), (16, 1, 2), (8, 3, 4), (128, 2, 8)]
)
def test_the_mae_learning_rate_rule_counts_batch_accumulation_and_processes(
    monkeypatch, batch, accumulation, processes
):
    """learning_rate = base_learning_rate x per-device batch x processes x accumulation / 256 (MAE's
    main_pretrain.py). The process count enters as in a launched run: TrainingArguments builds its
    accelerate state (patched here to report ``processes``) and ``world_size`` reads it; parse_config
    then applies the rule (milliseconds, where a launched two-process run costs seconds)."""
    import transformers.training_args

    monkeypatch.setattr(transformers.training_args, "PartialState", lambda **kw: _Processes(processes, **kw))
    recipe = yaml.safe_load((REPO / "recipes" / "mae" / "demo_pretrain_mnist.yaml").read_text())
    recipe |= {"per_device_train_batch_size": batch, "gradient_accumulation_steps": accumulation}
    config = parse_config(recipe=recipe)
    assert config.training.world_size == processes
    assert config.training.learning_rate == pytest.approx(4e-3 * batch * accumulation * processes / 256)


HELP_GROUPS = ["data:", "model:", "phases:", "strategy:", "optimisation:", "hub:", "runtime:"]


def _help(capsys, monkeypatch, *argv: str) -> str:
    from warmstart_hf.cli import main_train

    monkeypatch.setenv("COLUMNS", "80")  # argparse wraps at the terminal's width
    assert main_train(list(argv)) == 0
    return capsys.readouterr().out


def test_help_is_grouped_lists_the_registries_and_hides_the_unused_training_fields(capsys, monkeypatch):
    import dataclasses

    from transformers import TrainingArguments

    from warmstart_hf.config import ARGUMENT_CLASSES
    from warmstart_hf.data.augment import AUGMENTATIONS
    from warmstart_hf.strategies import STRATEGIES
    from warmstart_hf.tasks import TASKS

    monkeypatch.setitem(STRATEGIES, "a_new_strategy", object)  # a name registered later shows too
    out = _help(capsys, monkeypatch, "--help")
    lines = out.splitlines()
    assert out.count("usage:") == 1 and lines[0].startswith("usage: train_incremental.py RECIPE.yaml")
    starts = [lines.index(title) for title in [*HELP_GROUPS, "other TrainingArguments fields:"]]
    assert starts == sorted(starts)  # every group, in this order, the long tail last
    options = {line.split()[0]: line for line in lines if line.startswith("  --")}
    for option, names in (("--strategies", STRATEGIES), ("--task", TASKS), ("--augmentation", AUGMENTATIONS)):
        assert len(names) >= 3 and all(name in options[option] for name in names), (option, sorted(names))
    assert "a_new_strategy" in options["--strategies"]
    ours = {f.name for cls in ARGUMENT_CLASSES[:-1] for f in dataclasses.fields(cls)}
    assert {f"--{name}" for name in ours} <= set(options)  # every project field, one option line each
    assert "--ddp_timeout" not in options and "--no_diagnostics" not in options
    assert len(lines) < 650  # was 1,079 lines, 223 option lines
    full = _help(capsys, monkeypatch, "recipes/digits.yaml", "--help-all")
    everything = {line.split()[0].rstrip(",") for line in full.splitlines() if line.startswith("  --")}
    assert {f"--{f.name}" for f in dataclasses.fields(TrainingArguments) if f.init} <= everything
    assert full.count("usage:") == 1 and len(everything) - len(options) >= 60  # the unused fields hidden
