"""The task layer: the loop runs whatever task the recipe names, strategies declare the tasks they
serve, and a recipe pairing a strategy with a task it cannot serve is refused (exit status 2)."""

from __future__ import annotations

import json
import re

import pytest

from warmstart_hf.config import ConfigError, parse_config
from warmstart_hf.loop import run_experiment
from warmstart_hf.strategies import STRATEGIES
from warmstart_hf.tasks import TASKS, register_task
from warmstart_hf.tasks.classification import Classification


@pytest.fixture
def toy_task(monkeypatch):
    """A task registered for one test: classification whose record adds a field of its own."""

    class Toy(Classification):
        def phase_metrics(self, trainer, data, phase, train):
            return {**super().phase_metrics(trainer, data, phase, train), "toy_train_size": len(train)}

    register_task("toy")(Toy)
    monkeypatch.setattr(STRATEGIES["warm"], "tasks", ("classification", "toy"))
    yield Toy
    del TASKS["toy"]


def test_every_recipe_names_a_known_task_and_bad_pairings_fail(tiny_recipe, toy_task):
    assert parse_config(recipe=tiny_recipe).incremental.task == "classification"
    known = re.escape(str(sorted(TASKS)))  # every registered task, the toy one included
    assert "'toy'" in known and "'finetune'" in known
    with pytest.raises(ConfigError, match=r"`task` has value 'segmentation'.*known tasks are " + known):
        parse_config(recipe={**tiny_recipe, "task": "segmentation"})
    with pytest.raises(ConfigError) as info:  # cold does not declare toy
        parse_config(recipe={**tiny_recipe, "task": "toy", "strategies": ["warm", "cold"]})
    message = str(info.value)
    assert "'cold'" in message and "'toy'" in message and "Fix" in message


@pytest.mark.slow
def test_the_loop_runs_the_recipes_task_without_knowing_it(tiny_recipe, toy_task):
    recipe = {**tiny_recipe, "task": "toy", "strategies": ["warm"], "num_train_epochs": 1, "diagnostics": False}
    run_dir = run_experiment(parse_config(recipe=recipe))
    records = [json.loads(line) for line in (run_dir / "warm-seed0" / "results.jsonl").read_text().splitlines()]
    assert [r["task"] for r in records] == ["toy"] * 3
    assert [r["toy_train_size"] for r in records] == [80, 160, 240]  # the task's own field, written by the loop
