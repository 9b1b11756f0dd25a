"""Nothing left behind: a run directory's files have the modes the umask gives ordinary writes; a
refused command leaves a run directory exactly as it was; one writer per arm (filelock); and the
resume fingerprint covers every setting but a documented list of those that cannot change a result."""

from __future__ import annotations

import copy
import dataclasses
import enum
import os
import stat
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import save_file
from transformers import TrainingArguments

from warmstart_hf.checkpoints import mark_complete
from warmstart_hf.cli import main_train
from warmstart_hf.config import (
    FINGERPRINT_EXCLUDED,
    ConfigError,
    DataArguments,
    IncrementalArguments,
    ModelArguments,
    RecipeConfig,
    StrategyArguments,
    parse_config,
)
from warmstart_hf.loop import _check_run_dir, run_experiment
from warmstart_hf.run_lock import ArmBusy, arm_lock, locked_arms

SECTIONS = {
    "data": DataArguments,
    "model": ModelArguments,
    "incremental": IncrementalArguments,
    "strategy": StrategyArguments,
    "training": TrainingArguments,
}
# The training fields the fingerprint held before it covered every field (an older run directory's).
PREVIOUS_TRAINING_FIELDS = (
    "learning_rate",
    "num_train_epochs",
    "max_steps",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "optim",
    "optim_args",
    "weight_decay",
    "adam_beta1",
    "adam_beta2",
    "adam_epsilon",
    "lr_scheduler_type",
    "warmup_steps",
    "max_grad_norm",
)


@pytest.fixture
def umask():
    """Set the process's umask for one test, and put the previous one back."""
    previous = os.umask(0o022)
    os.umask(previous)
    yield os.umask
    os.umask(previous)


def _modes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root.parent)): oct(stat.S_IMODE(p.stat().st_mode)) for p in [root, *root.rglob("*")]}


def _wrong_modes(root: Path, mask: int) -> dict[str, str]:
    want = {True: oct(0o777 & ~mask), False: oct(0o666 & ~mask)}
    return {path: mode for path, mode in _modes(root).items() if mode != want[(root.parent / path).is_dir()]}


@pytest.mark.slow
@pytest.mark.parametrize("mask", [0o022, 0o002], ids=["umask022", "umask002"])
def test_every_file_and_directory_of_a_run_and_its_reports_has_the_umasks_mode(tmp_path, tiny_recipe, umask, mask):
    from warmstart_hf.report.leaderboard import build_leaderboard
    from warmstart_hf.report.study import write_study_report

    umask(mask)
    recipe = {**tiny_recipe, "num_phases": 2, "num_train_epochs": 1, "diagnostics": False, "optimizer_state": "carry"}
    run_dir = run_experiment(parse_config(recipe=recipe))
    assert (run_dir / "warm-seed0" / "phase-01" / "optimizer_state.safetensors").exists()
    report = write_study_report([run_dir], tmp_path / "report")
    build_leaderboard([str(run_dir)], output_dir=tmp_path / "board")
    for root in (tmp_path / "runs", report, tmp_path / "board"):
        assert _wrong_modes(root, mask) == {}, root
    assert {"init", "model.safetensors", "results.jsonl", "summary.md", "leaderboard.html", "report.md"} <= {
        Path(p).name for root in (tmp_path / "runs", report, tmp_path / "board") for p in _modes(root)
    }


def test_a_complete_checkpoint_has_the_umasks_modes(tmp_path, umask):
    umask(0o002)
    folder = tmp_path / "checkpoint-4"
    folder.mkdir()
    save_file({"w": torch.zeros(3)}, str(folder / "model.safetensors"))  # safetensors writes it 0600
    (folder / "trainer_state.json").write_text("{}")
    mark_complete(folder, 4)
    assert _wrong_modes(folder, 0o002) == {}


def _snapshot(root: Path) -> dict[str, tuple]:
    """Every path under ``root`` with its mode, mtime and (files) bytes."""
    return {
        str(p.relative_to(root)): (p.lstat().st_mode, p.lstat().st_mtime_ns, p.read_bytes() if p.is_file() else None)
        for p in [root, *sorted(root.rglob("*"))]
    }


@pytest.mark.slow
def test_refused_commands_leave_a_finished_run_directory_untouched(tmp_path, tiny_recipe, capsys):
    recipe = {**tiny_recipe, "strategies": ["warm"], "num_phases": 2, "num_train_epochs": 1, "diagnostics": False}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(recipe))
    assert main_train([str(path)]) == 0
    run_dir = tmp_path / "runs" / "tiny"
    before = _snapshot(run_dir)
    refused = {
        "learning_rate": ["--learning_rate", "0.2"],
        "label_smoothing_factor": ["--strategies", "warm", "cold", "--label_smoothing_factor", "0.1"],
        "dataloader_drop_last": ["--strategies", "warm", "shrink_perturb", "--dataloader_drop_last", "true"],
        "lr_scheduler_kwargs": ["--lr_scheduler_kwargs", '{"factor": 0.5}'],
        "sp_noise": ["--strategies", "shrink_perturb", "--sp_noise", "0.02"],
        "no_such_strategy": ["--strategies", "warm", "no_such_strategy"],
        "learning_rat": ["--learning_rat", "0.2"],
    }
    for field, extra in refused.items():
        assert main_train([str(path), *extra]) == 2, field
        message = capsys.readouterr().err
        assert field in message and "Fix" in message, message
        assert _snapshot(run_dir) == before, field  # no arm directory, lock, or rewritten file
    assert main_train([str(path)]) == 0  # the same command is still accepted (finished: skipped)


def test_a_second_holder_of_an_arm_is_refused_with_the_holder_named(tmp_path):
    arm = tmp_path / "warm-seed0"
    with arm_lock(arm), pytest.raises(ArmBusy, match=rf'{arm}.*"pid": {os.getpid()}.*Fix'), arm_lock(arm):
        pass
    with arm_lock(arm):  # released when the block ends
        pass


def test_a_command_refused_for_a_busy_arm_leaves_no_new_arm_behind(tmp_path):
    existing, new, busy = (tmp_path / f"{name}-seed0" for name in ("warm", "cold", "dash"))
    existing.mkdir()
    with arm_lock(busy):  # another command runs this arm
        with pytest.raises(ArmBusy, match="dash-seed0"), locked_arms([existing, new, busy]):
            pass
        assert sorted(p.name for p in tmp_path.iterdir()) == ["dash-seed0", "warm-seed0"]  # cold-seed0: gone
        assert list(existing.iterdir()) == []  # and no lock file left in the arm that was there
    with locked_arms([existing, new, busy]):  # once free, every arm is taken
        assert new.is_dir()


def _changed(value):
    """A value of the same kind that differs from ``value``."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, enum.Enum):
        return next(member for member in type(value) if member != value)
    if isinstance(value, (int, float)):
        return value + 1
    if isinstance(value, str):
        return value + "-changed"
    if isinstance(value, (list, tuple)):
        return [*value, *(value[:1] or [1])]
    if isinstance(value, dict):
        return {**value, "changed": 1}
    if dataclasses.is_dataclass(value):  # accelerator_config
        flag = next(f.name for f in dataclasses.fields(value) if isinstance(getattr(value, f.name), bool))
        return dataclasses.replace(value, **{flag: not getattr(value, flag)})
    assert value is None, value
    return 1


def _fingerprint_with(config: RecipeConfig, section: str, name: str) -> dict:
    """The fingerprint of ``config`` with one field changed (set directly: the fingerprint is
    computed from the values, whatever checks a recipe would run on them)."""
    part = copy.copy(getattr(config, section))
    setattr(part, name, _changed(getattr(part, name)))
    return yaml.safe_load(yaml.safe_dump(dataclasses.replace(config, **{section: part}).experiment_fingerprint()))


def _recipe_fields(section: str) -> list[str]:
    return [f.name for f in dataclasses.fields(SECTIONS[section]) if f.init and not f.name.startswith("_")]


def test_changing_any_field_but_the_excluded_ones_changes_the_fingerprint(tiny_recipe):
    config = parse_config(recipe=tiny_recipe)
    base = yaml.safe_load(yaml.safe_dump(config.experiment_fingerprint()))
    unchanged, changed_excluded = [], []
    for section in SECTIONS:
        for name in _recipe_fields(section):
            same = _fingerprint_with(config, section, name) == base
            excluded = name in FINGERPRINT_EXCLUDED.get(section, ())
            if same and not excluded:
                unchanged.append(f"{section}.{name}")
            if excluded and not same:
                changed_excluded.append(f"{section}.{name}")
    assert unchanged == []  # e.g. label_smoothing_factor, lr_scheduler_kwargs, dataloader_drop_last
    assert changed_excluded == []
    assert "label_smoothing_factor" in base["training"] and base["training"]["world_size"] == 1


def test_the_exclusion_list_names_only_existing_fields():
    assert set(FINGERPRINT_EXCLUDED) <= set(SECTIONS)
    for section, names in FINGERPRINT_EXCLUDED.items():
        assert len(set(names)) == len(names), section
        assert set(names) <= set(_recipe_fields(section)), set(names) - set(_recipe_fields(section))
    assert "hub_token" not in parse_config(recipe={}).experiment_fingerprint()["training"]  # never written


def test_a_directory_of_the_previous_release_is_checked_against_its_saved_recipe(tmp_path, tiny_recipe):
    """Its fingerprint lacks the fields added since; the resolved recipe saved beside it has them."""
    recipe = {**tiny_recipe, "label_smoothing_factor": 0.1}  # not the default: the saved recipe must be read
    config = parse_config(recipe=recipe)
    fingerprint = config.experiment_fingerprint()
    training = {k: fingerprint["training"][k] for k in ("world_size", *PREVIOUS_TRAINING_FIELDS)}
    saved = {"fingerprint": {**fingerprint, "training": training}, **config.to_dict()}
    del saved["training"]["dataloader_in_order"]  # a field transformers added since the directory was written
    config.run_dir.mkdir(parents=True)
    (config.run_dir / "config.yaml").write_text(yaml.safe_dump(saved))
    before = _snapshot(config.run_dir)
    _check_run_dir(config)  # the same settings: accepted
    _check_run_dir(parse_config(recipe={**recipe, "save_steps": 7, "strategies": ["cold"], "seed": 3}))
    with pytest.raises(ConfigError, match=r"training\.label_smoothing_factor: 0\.1 -> 0\.2.*Fix"):
        run_experiment(parse_config(recipe={**recipe, "label_smoothing_factor": 0.2}))
    with pytest.raises(ConfigError, match=r"training\.dataloader_in_order: True -> False"):  # vs. its default
        run_experiment(parse_config(recipe={**recipe, "dataloader_in_order": False}))
    assert _snapshot(config.run_dir) == before
