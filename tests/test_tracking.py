"""report_to: tensorboard writes one run per arm whose step axis runs on across phases and resumes."""

from __future__ import annotations

import json

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from warmstart_hf.config import parse_config
from warmstart_hf.loop import run_experiment
from warmstart_hf.trainer import PhaseTrainer

pytestmark = pytest.mark.slow


def _scalars(path, tag: str) -> list[tuple[int, float]]:
    events = EventAccumulator(str(path))
    events.Reload()  # applies TensorBoard's purge of steps an interrupted writer logged past its resume point
    return [(e.step, e.value) for e in events.Scalars(tag)]


def test_tensorboard_is_one_run_per_arm_on_one_step_axis_that_a_resume_continues(tiny_recipe, monkeypatch):
    recipe = {**tiny_recipe, "strategies": ["warm"], "report_to": "tensorboard", "diagnostics": False}
    recipe.update(logging_strategy="steps", logging_steps=1)
    original, calls = PhaseTrainer.training_step, {"n": 0}

    def crash_at_step_14(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 14:  # phase 1, step 8 (3 + 5 steps an epoch): its last checkpoint is at its step 5
            raise RuntimeError("killed")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(PhaseTrainer, "training_step", crash_at_step_14)
    with pytest.raises(RuntimeError, match="killed"):
        run_experiment(parse_config(recipe=recipe))
    monkeypatch.setattr(PhaseTrainer, "training_step", original)
    run_dir = run_experiment(parse_config(recipe=recipe))

    arm = run_dir / "warm-seed0"
    records = [json.loads(line) for line in (arm / "results.jsonl").read_text().splitlines()]
    assert records[1]["resumed_from_checkpoint"]
    ends = np.cumsum([r["steps"] for r in records]).tolist()  # the last arm step of each phase
    logs = sorted((arm / "tensorboard").glob("events.out.tfevents.*"))
    assert len(logs) == 2 and [s for s, _ in _scalars(logs[0], "train/loss")][-1] == 13  # logged past the resume
    loss = _scalars(arm / "tensorboard", "train/loss")
    assert [step for step, _ in loss] == list(range(1, ends[-1] + 1))  # every step once, on across phases
    phases = _scalars(arm / "tensorboard", "phase")
    assert [value for _, value in phases] == [float(np.searchsorted(ends, step)) for step, _ in phases]
    accuracy = _scalars(arm / "tensorboard", "phase/test_accuracy")
    assert accuracy == [(end, pytest.approx(r["test_accuracy"])) for end, r in zip(ends, records)]
    assert not list(run_dir.rglob("runs"))  # no per-phase runs of the Trainer's own integration
