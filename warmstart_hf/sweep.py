"""Sweeps: a grid over recipe fields, expanded into configurations x seeds x strategies.

A grid file (``recipes/<family>/*.yaml``) names a base recipe and what varies::

    recipe: recipes/digits.yaml          # the base recipe (its path is relative to the repo root)
    name: cpu_study                      # runs go to <output_dir>/<name>/<configuration label>/
    overrides: {num_train_epochs: 10}    # applied to every configuration
    grid:                                # cartesian product of the axes
      augmentation: [[crop, flip], []]   # an axis over one field: its values
      optimizer:                         # an axis over a bundle of fields: one mapping per value
        - {label: sgd, optim: sgd, optim_args: momentum=0.9}
        - {label: adam, optim: adamw_torch, weight_decay: 0.0}
    standard: {augmentation: [crop, flip], optimizer: sgd}   # the standard scheme (highlighted)
    strategies: [warm, cold]
    seeds: [0, 1, 2]

A bundle may name its own base recipe (``{label: cars, recipe: recipes/finetune/cars.yaml}``): an
axis over datasets whose recipes differ in more than a field (Fig. 3's six finetuning sets).

Every configuration is one run directory holding one arm per strategy and seed; arms of a seed share
the split and the initial weights (paired). ``sweep.json`` in the sweep directory records the
configurations, so reports can label and highlight them.
"""

from __future__ import annotations

import itertools
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from warmstart_hf.config import ConfigError, RecipeConfig, load_recipe_file, parse_config
from warmstart_hf.io import atomic_write_json, atomic_write_text

GRID_KEYS = {"recipe", "name", "overrides", "grid", "standard", "strategies", "seeds"}


@dataclass
class Configuration:
    """One point of the grid: a label, the values of each axis, and the recipe fields they set."""

    label: str
    axes: dict[str, str]  # axis -> value label
    fields: dict[str, Any]  # recipe fields set by this point (overrides included)
    standard: bool
    recipe: str  # the base recipe of this point (the grid's, or one an axis value names)


@dataclass
class Sweep:
    name: str
    recipe: str
    configurations: list[Configuration]
    strategies: list[str]
    seeds: list[int]

    def arm_count(self) -> int:
        return len(self.configurations) * len(self.strategies) * len(self.seeds)


def _value_label(value: Any) -> str:
    if isinstance(value, dict):
        return str(value.get("label", ",".join(f"{k}={_value_label(v)}" for k, v in value.items())))
    if isinstance(value, list):
        return "+".join(map(str, value)) if value else "none"
    return str(value)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=+,-]+", "-", text)


def load_sweep(path: str | Path) -> Sweep:
    """Read and expand a grid file; every configuration is validated as a recipe (nothing runs)."""
    spec = load_recipe_file(path)
    unknown = set(spec) - GRID_KEYS
    if unknown:
        raise ConfigError(f"Unknown grid key(s) {sorted(unknown)} in {str(path)!r}. Fix: use only {sorted(GRID_KEYS)}.")
    grid = spec.get("grid") or {}
    per_point = any(isinstance(v, dict) and "recipe" in v for values in grid.values() for v in values or [])
    if "recipe" not in spec and not per_point:
        raise ConfigError(
            f"Grid file {str(path)!r} has no `recipe`. Fix: name the base recipe, e.g. recipe: recipes/digits.yaml."
        )
    if not isinstance(grid, dict) or any(not isinstance(v, list) or not v for v in grid.values()):
        raise ConfigError(f"Grid file {str(path)!r}: `grid` must map each axis to a non-empty list of values.")
    standard = {k: _value_label(v) for k, v in (spec.get("standard") or {}).items()}
    for axis in standard:
        if axis not in grid:
            raise ConfigError(f"Grid file {str(path)!r}: `standard` names axis {axis!r}, which is not in `grid`.")
    overrides = spec.get("overrides") or {}
    configurations = _expand(grid, overrides, standard, spec.get("recipe"), str(path))
    base = load_recipe_file(configurations[0].recipe)
    strategies = list(spec.get("strategies") or base.get("strategies") or ["warm", "cold"])
    seeds = [int(s) for s in (spec.get("seeds") or [base.get("seed", 0)])]
    name = str(spec.get("name") or Path(path).stem)
    sweep = Sweep(name, str(spec.get("recipe") or configurations[0].recipe), configurations, strategies, seeds)
    for configuration in sweep.configurations:  # fail fast: every point must be a valid recipe
        try:
            configuration_config(sweep, configuration, seeds[0])
        except ConfigError as err:
            raise ConfigError(f"Grid point {configuration.label!r} of {str(path)!r}: {err}") from err
    return sweep


def _expand(grid: dict, overrides: dict, standard: dict, recipe: str | None, path: str) -> list[Configuration]:
    """The cartesian product of the axes: one Configuration per point."""
    configurations = []
    axes = list(grid)
    for values in itertools.product(*(grid[a] for a in axes)):
        fields, labels, base = dict(overrides), {}, recipe
        for axis, value in zip(axes, values):
            labels[axis] = _value_label(value)
            if isinstance(value, dict):
                base = value.get("recipe", base)
                fields.update({k: v for k, v in value.items() if k not in ("label", "recipe")})
            else:
                fields[axis] = value
        if base is None:
            raise ConfigError(f"Grid file {path!r}: point {labels} has no recipe. Fix: set `recipe` for the grid.")
        label = _slug(",".join(f"{a}={labels[a]}" for a in axes)) or "default"
        is_standard = bool(standard) and all(labels[a] == v for a, v in standard.items())
        configurations.append(Configuration(label, labels, fields, is_standard, str(base)))
    return configurations


def configuration_config(sweep: Sweep, configuration: Configuration, seed: int) -> RecipeConfig:
    """The parsed recipe of one configuration and seed (all strategies), with its run directory."""
    return parse_config(recipe={**configuration_recipe(sweep, configuration), "seed": seed})


def sweep_dir(sweep: Sweep) -> Path:
    return Path(configuration_config(sweep, sweep.configurations[0], sweep.seeds[0]).training.output_dir) / sweep.name


def configuration_recipe(sweep: Sweep, configuration: Configuration) -> dict[str, Any]:
    """The full recipe of one configuration: the base recipe, the grid point, and its run name."""
    recipe = {**load_recipe_file(configuration.recipe), **configuration.fields}
    recipe.update(run_name=f"{sweep.name}/{configuration.label}", strategies=sweep.strategies)
    return recipe


def write_manifest(sweep: Sweep) -> Path:
    """``sweep.json`` (configurations, axis values, run directories) and each configuration's full
    ``recipe.yaml`` in its run directory, so any arm can be rerun from one file."""
    directory = sweep_dir(sweep)
    manifest = {
        "name": sweep.name,
        "recipe": sweep.recipe,
        "strategies": sweep.strategies,
        "seeds": sweep.seeds,
        "configurations": [
            {
                "label": c.label,
                "axes": c.axes,
                "fields": c.fields,
                "standard": c.standard,
                "recipe": c.recipe,
                "run_dir": c.label,
            }
            for c in sweep.configurations
        ],
    }
    for c in sweep.configurations:
        header = f"# Sweep {sweep.name}, configuration {c.label} (generated from {c.recipe}).\n"
        body = yaml.safe_dump(configuration_recipe(sweep, c), sort_keys=False)
        atomic_write_text(directory / c.label / "recipe.yaml", header + body)
    atomic_write_json(directory / "sweep.json", manifest)
    return directory


def run_sweep(sweep: Sweep) -> Path:
    """Run every configuration and seed here, one after another (finished arms are skipped)."""
    from warmstart_hf.loop import run_experiment

    directory = write_manifest(sweep)
    for configuration in sweep.configurations:
        for seed in sweep.seeds:
            run_experiment(configuration_config(sweep, configuration, seed))
    return directory


def arm_commands(sweep: Sweep, launcher: str = "accelerate launch") -> list[str]:
    """One command per arm (configuration x seed x strategy), for a cluster scheduler. Each reads
    the configuration's generated ``recipe.yaml`` (see :func:`write_manifest`)."""
    directory = sweep_dir(sweep)
    commands = []
    for configuration in sweep.configurations:
        recipe = shlex.quote(str(directory / configuration.label / "recipe.yaml"))
        for seed in sweep.seeds:
            for strategy in sweep.strategies:
                commands.append(
                    f"{launcher} scripts/train_incremental.py {recipe} --seed {seed} --strategies {strategy}"
                )
    return commands


SLURM_TEMPLATE = """#!/bin/bash
# One array task per arm of sweep {name}: sbatch {script}
#SBATCH --job-name={name}
#SBATCH --array=1-{count}
#SBATCH --gres=gpu:1
#SBATCH --cpus-per-task=8
#SBATCH --time=24:00:00
#SBATCH --output={logs}/%A_%a.log
set -euo pipefail
cd "$SLURM_SUBMIT_DIR"
command=$(sed -n "${{SLURM_ARRAY_TASK_ID}}p" {commands})
echo "$command"
eval "$command"
"""


def write_cluster_files(sweep: Sweep, launcher: str = "accelerate launch") -> tuple[Path, Path]:
    """``commands.txt`` (one line per arm) and ``sweep.slurm`` (a Slurm array over those lines)."""
    directory = write_manifest(sweep)
    commands = arm_commands(sweep, launcher)
    commands_path = directory / "commands.txt"
    slurm_path = directory / "sweep.slurm"
    atomic_write_text(commands_path, "\n".join(commands) + "\n")
    atomic_write_text(
        slurm_path,
        SLURM_TEMPLATE.format(
            name=sweep.name, script=slurm_path, count=len(commands), logs=directory / "logs", commands=commands_path
        ),
    )
    return commands_path, slurm_path


def describe(sweep: Sweep) -> str:
    lines = [
        f"sweep {sweep.name}: {len(sweep.configurations)} configurations x {len(sweep.seeds)} seeds x "
        f"{len(sweep.strategies)} strategies = {sweep.arm_count()} arms"
    ]
    lines += [f"  {'*' if c.standard else ' '} {c.label}" for c in sweep.configurations]
    return "\n".join(lines)
