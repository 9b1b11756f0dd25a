"""Crash safety: a run killed at any moment finishes, on rerun, with every phase exactly once and the
numbers of an uninterrupted run; incomplete files are never trusted; signals stop cleanly; one
process per arm; a full or read-only disk ends with a clear message and the last state intact."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from tests.conftest import FAKE_TOKEN, REPO
from warmstart_hf.checkpoints import (
    COMPLETE_MARKER,
    is_complete,
    last_complete_checkpoint,
    mark_complete,
)
from warmstart_hf.cli import main_train
from warmstart_hf.config import parse_config
from warmstart_hf.loop import MEASURED_FIELDS, run_experiment

TIMING = {*MEASURED_FIELDS, "resumed_from_checkpoint"}
ARMS = ("warm-seed0", "hare_tortoise-seed0")

# (moment, N-th occurrence, expected exit status): in this order each kill lands on a run that has
# progressed through the previous ones (tests/fault_probe.py names the moments).
CHAIN = [
    ("config_yaml", 1, -9),
    ("split_json", 1, -9),
    ("init_staged", 1, -9),
    ("training_step", 4, -9),
    ("checkpoint_model_only", 2, -9),
    ("checkpoint_state_partial", 2, -9),
    ("checkpoint_extras", 2, -9),
    ("checkpoint_rotation", 2, -9),
    ("sigterm", 3, 143),
    ("phase_model_partial", 1, -9),
    ("optimizer_state_partial", 1, -9),
    ("before_results_line", 1, -9),
    ("results_rename", 1, -9),
    ("hub_push", 2, -9),
    ("companion_partial", 1, -9),
    ("sigint", 3, 130),
    ("training_step", 9, -9),
]


def _results(run_dir: Path, arm: str) -> list[dict]:
    return [json.loads(line) for line in (run_dir / arm / "results.jsonl").read_text().splitlines()]


def _comparable(run_dir: Path, arm: str) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING} for r in _results(run_dir, arm)]


def _recipe(tmp_path: Path, tiny_recipe: dict, **extra) -> Path:
    recipe = {
        **tiny_recipe,
        "strategies": ["warm", "hare_tortoise"],
        "optimizer_state": "carry",
        "ht_reset_epochs": 1,
        "save_strategy": "steps",
        "save_steps": 2,
        "diagnostics": False,
        **extra,
    }
    path = tmp_path / f"{recipe['run_name']}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def _probe(moment: str, nth: int, recipe: Path, env: dict) -> subprocess.CompletedProcess:
    command = [sys.executable, str(REPO / "tests" / "fault_probe.py"), moment, str(nth), str(recipe)]
    return subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=env, timeout=600)


@pytest.mark.slow
def test_killed_at_every_kind_of_moment_the_rerun_equals_an_uninterrupted_run(tmp_path, tiny_recipe, hub):
    from huggingface_hub import HfApi

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "HF_HUB_DISABLE_XET": "1"}
    reference = _probe("none", 0, _recipe(tmp_path, tiny_recipe, run_name="reference"), env)
    assert reference.returncode == 0, reference.stderr[-3000:]
    hub_env = {**env, "HF_HUB_OFFLINE": "0", "HF_TOKEN": FAKE_TOKEN}
    if hub.server is not None:
        hub_env["HF_ENDPOINT"] = hub.server.url
    repo = hub.repo("fault")
    recipe = _recipe(tmp_path, tiny_recipe, run_name="killed", push_to_hub=True, hub_model_id=repo)
    run_dir = tmp_path / "runs" / "killed"
    for moment, nth, expected in CHAIN:
        attempt = _probe(moment, nth, recipe, hub_env)
        assert attempt.returncode == expected, (moment, nth, attempt.returncode, attempt.stderr[-2000:])
        if moment in ("sigterm", "sigint"):  # a graceful stop: a complete checkpoint at the named step
            stop = re.search(r"at step (\d+) of (\S+) phase (\d+)\. .*rerun the same command to resume", attempt.stderr)
            assert stop, attempt.stderr[-2000:]
            step, arm, phase = stop.groups()
            assert is_complete(run_dir / arm / f"phase-{int(phase):02d}" / f"checkpoint-{step}")
    final = _probe("none", 0, recipe, hub_env)
    assert final.returncode == 0, final.stderr[-3000:]
    for arm in ARMS:
        got, want = _comparable(run_dir, arm), _comparable(tmp_path / "runs" / "reference", arm)
        assert [r["phase"] for r in got] == [0, 1, 2]  # every phase exactly once
        assert got == want, arm  # every accuracy, loss, step count and curve point
        for phase in range(3):
            name = f"phase-{phase:02d}/model.safetensors"
            a, b = load_file(run_dir / arm / name), load_file(tmp_path / "runs" / "reference" / arm / name)
            assert all(torch.equal(a[k], b[k]) for k in a), (arm, phase)
        state = json.loads((run_dir / arm / "hub.json").read_text())
        assert state["pending"] == [] and sorted(state["branches"]) == ["phase-00", "phase-01", "phase-02"]
        branches = {ref.name for ref in HfApi(token=FAKE_TOKEN).list_repo_refs(f"{repo}-{arm}").branches}
        assert {"main", "phase-00", "phase-01", "phase-02"} <= branches
    assert not list(run_dir.rglob("checkpoint-*"))  # finished phases keep no checkpoints
    assert not [p for p in run_dir.rglob(".*") if p.name != ".lock"]  # no temporary leftovers


def test_incomplete_or_damaged_checkpoints_are_skipped_with_a_warning(tmp_path, caplog):
    phase_dir = tmp_path / "phase-01"
    for step in (2, 4, 6):
        folder = phase_dir / f"checkpoint-{step}"
        folder.mkdir(parents=True)
        (folder / "model.safetensors").write_bytes(b"x" * 100)
        (folder / "trainer_state.json").write_text("{}")
    mark_complete(phase_dir / "checkpoint-2", 2)
    mark_complete(phase_dir / "checkpoint-4", 4)
    (phase_dir / "checkpoint-4" / "trainer_state.json").unlink()  # damaged after marking (a half deletion)
    assert last_complete_checkpoint(phase_dir) == str(phase_dir / "checkpoint-2")
    assert "checkpoint-4" in caplog.text and "checkpoint-6" in caplog.text and "incomplete" in caplog.text
    assert sorted(p.name for p in phase_dir.iterdir()) == ["checkpoint-2"]  # the others are removed
    (phase_dir / "checkpoint-2" / "model.safetensors").write_bytes(b"x" * 50)  # truncated after marking
    assert last_complete_checkpoint(phase_dir) is None
    assert last_complete_checkpoint(tmp_path / "missing") is None


@pytest.mark.slow
def test_a_truncated_phase_model_or_results_line_is_redone(tmp_path, tiny_recipe):
    from warmstart_hf.checkpoints import phase_files_readable

    recipe = {**tiny_recipe, "strategies": ["warm"], "num_train_epochs": 1, "diagnostics": False}
    reference = run_experiment(parse_config(recipe={**recipe, "run_name": "reference"}))
    run_dir = run_experiment(parse_config(recipe={**recipe, "run_name": "damaged"}))
    arm = run_dir / "warm-seed0"
    model = arm / "phase-02" / "model.safetensors"
    model.write_bytes(model.read_bytes()[:1000])  # the last finished phase's model, truncated
    run_experiment(parse_config(recipe={**recipe, "run_name": "damaged"}))
    assert phase_files_readable(arm / "phase-02")  # phase 2 was trained again
    assert _comparable(run_dir, "warm-seed0") == _comparable(reference, "warm-seed0")
    results = arm / "results.jsonl"
    lines = results.read_text().splitlines()
    results.write_text("\n".join(lines[:2]) + "\n" + lines[2][:40])  # a partial last line
    run_experiment(parse_config(recipe={**recipe, "run_name": "damaged"}))
    assert len(results.read_text().splitlines()) == 3 and json.loads(results.read_text().splitlines()[2])
    assert _comparable(run_dir, "warm-seed0") == _comparable(reference, "warm-seed0")


@pytest.mark.slow
def test_a_second_process_on_a_running_arm_exits_2_and_a_killed_holder_does_not_block(tmp_path, tiny_recipe, capsys):
    recipe = {**tiny_recipe, "strategies": ["warm"], "num_phases": 1, "num_train_epochs": 1, "diagnostics": False}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(recipe))
    arm = tmp_path / "runs" / "tiny" / "warm-seed0"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\nfrom warmstart_hf.run_lock import arm_lock\n"
            "with arm_lock(sys.argv[1]):\n    print('locked', flush=True)\n    time.sleep(120)",
            str(arm),
        ],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert main_train([str(path)]) == 2
        message = capsys.readouterr().err
        assert str(arm) in message and f'"pid": {holder.pid}' in message and "Fix" in message
        assert not (arm / "results.jsonl").exists()
    finally:
        holder.kill()  # SIGKILL: the lock file stays behind, the kernel's lock does not
        holder.wait()
    assert (arm / ".lock").exists()
    assert main_train([str(path)]) == 0
    assert len(_results(arm.parent, "warm-seed0")) == 1


@pytest.mark.slow
@pytest.mark.parametrize("failure", ["no space", "read-only"])
def test_a_disk_that_cannot_be_written_stops_with_a_message_and_the_state_intact(
    tmp_path, tiny_recipe, monkeypatch, capsys, failure
):
    import errno

    import warmstart_hf.io as io

    recipe = {**tiny_recipe, "strategies": ["warm"], "num_train_epochs": 1, "diagnostics": False}
    recipe.update(save_strategy="steps", save_steps=2)
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(recipe))
    run_dir = tmp_path / "runs" / "tiny"
    if failure == "no space":  # the second phase's results line cannot be written
        original = io.atomic_write_text
        calls = {"n": 0}

        def full(target, text):
            if str(target).endswith("results.jsonl"):
                calls["n"] += 1
                if calls["n"] == 2:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(target))
            return original(target, text)

        monkeypatch.setattr(io, "atomic_write_text", full)  # what append_jsonl_atomic writes with
    else:  # a Trainer checkpoint of the second phase hits a read-only file system (torch wraps the error)
        original_save = torch.save

        def read_only(obj, target, *args, **kwargs):
            if "phase-01" in str(target) and "checkpoint-" in str(target):
                raise RuntimeError(f"File {target} cannot be opened: {os.strerror(errno.EROFS)}")
            return original_save(obj, target, *args, **kwargs)

        monkeypatch.setattr(torch, "save", read_only)
    assert main_train([str(path)]) == 1
    message = capsys.readouterr().err
    assert os.strerror(errno.ENOSPC if failure == "no space" else errno.EROFS) in message
    assert "rerun the same command to resume" in message
    assert len(_results(run_dir, "warm-seed0")) == 1  # phase 0 intact, nothing half-written counted
    monkeypatch.undo()
    assert main_train([str(path)]) == 0
    reference = run_experiment(
        parse_config(recipe={**recipe, "run_name": "reference", "output_dir": str(tmp_path / "ref")})
    )
    assert _comparable(run_dir, "warm-seed0") == _comparable(reference, "warm-seed0")


def test_the_complete_marker_lists_every_file(tmp_path):
    folder = tmp_path / "checkpoint-3"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.bin").write_bytes(b"abc")
    (folder / "sub" / "b.json").write_text("{}")
    mark_complete(folder, 3)
    listed = json.loads((folder / COMPLETE_MARKER).read_text())
    assert listed == {"step": 3, "files": {"a.bin": 3, "sub/b.json": 2}}
    assert is_complete(folder)


def test_signals_are_recorded_only_while_a_run_handles_them():
    import signal

    from warmstart_hf.graceful_stop import STOP

    before = signal.getsignal(signal.SIGTERM)
    with STOP.handling_signals():
        os.kill(os.getpid(), signal.SIGTERM)
        assert STOP.requested() and STOP.signum == signal.SIGTERM
        with pytest.raises(KeyboardInterrupt):  # a second signal stops at once
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGTERM) is before  # the caller's handler is back
    with STOP.handling_signals():
        assert not STOP.requested()  # a new run starts without the old request


@pytest.mark.slow
def test_a_signal_to_one_process_of_a_ddp_run_stops_every_rank_at_the_same_step(tmp_path, tiny_recipe):
    from tests.conftest import launch_two_cpu_processes

    reference = _recipe(tmp_path, tiny_recipe, run_name="reference")
    done = launch_two_cpu_processes(REPO / "tests" / "fault_probe.py", "none", "0", str(reference))
    assert done.returncode == 0, done.stderr[-3000:]
    stopped = _recipe(tmp_path, tiny_recipe, run_name="stopped")
    first = launch_two_cpu_processes(REPO / "tests" / "fault_probe.py", "sigterm_rank1", "4", str(stopped))
    assert first.returncode != 0  # both ranks stopped (no hang, no timeout)
    stops = re.findall(r"stopped by SIGTERM at step (\d+) of (\S+) phase (\d+)", first.stderr)
    assert len(stops) == 2 and stops[0] == stops[1], first.stderr[-3000:]  # both ranks, the same step
    step, arm, phase = stops[0]
    assert is_complete(tmp_path / "runs" / "stopped" / arm / f"phase-{int(phase):02d}" / f"checkpoint-{step}")
    second = launch_two_cpu_processes(REPO / "tests" / "fault_probe.py", "none", "0", str(stopped))
    assert second.returncode == 0, second.stderr[-3000:]
    for arm in ARMS:
        assert _comparable(tmp_path / "runs" / "stopped", arm) == _comparable(tmp_path / "runs" / "reference", arm)


@pytest.mark.slow
def test_a_signal_mid_epoch_changes_nothing_the_epoch_end_would_do(tmp_path, tiny_recipe):
    """save_strategy epoch, per-epoch evaluation and a Hare & Tortoise reset every epoch: a stop
    part-way through an epoch must not evaluate, reset the hare or save a second time."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    extra = {"save_strategy": "epoch", "track_test_curve": True, "strategies": ["hare_tortoise"]}
    reference = _probe("none", 0, _recipe(tmp_path, tiny_recipe, run_name="reference", **extra), env)
    assert reference.returncode == 0, reference.stderr[-3000:]
    recipe = _recipe(tmp_path, tiny_recipe, run_name="stopped", **extra)
    stopped = _probe("sigterm", 14, recipe, env)  # phase 1 at epoch 1.6 (6 + 8 steps): no epoch ends there
    assert stopped.returncode == 143, stopped.stderr[-3000:]
    step, arm, phase = re.search(r"at step (\d+) of (\S+) phase (\d+)", stopped.stderr).groups()
    assert is_complete(tmp_path / "runs" / "stopped" / arm / f"phase-{int(phase):02d}" / f"checkpoint-{step}")
    final = _probe("none", 0, recipe, env)
    assert final.returncode == 0, final.stderr[-3000:]
    arm = "hare_tortoise-seed0"
    assert _comparable(tmp_path / "runs" / "stopped", arm) == _comparable(tmp_path / "runs" / "reference", arm)


def test_only_write_failures_count_as_disk_errors(tmp_path):
    import errno

    from warmstart_hf.cli import _disk_error

    full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path / "x"))
    assert _disk_error(full) is full
    assert _disk_error(RuntimeError(f"File x cannot be opened: {os.strerror(errno.EROFS)}")).errno == errno.EROFS
    shm = RuntimeError(f"unable to write to file </torch_1_2>: {os.strerror(errno.ENOSPC)} (/dev/shm)")
    assert _disk_error(shm) is None  # a full shared-memory mount, not the run's disk
    assert _disk_error(OSError(errno.EACCES, "Permission denied", str(tmp_path / "x"))) is None  # writable dir
    try:
        try:
            raise full
        except OSError:
            raise ValueError("unrelated") from None
    except ValueError as err:
        assert _disk_error(err) is None  # `from None` hides the context


def test_resuming_with_another_number_of_processes_is_refused(tmp_path, tiny_recipe):
    from warmstart_hf.config import ConfigError

    recipe = {**tiny_recipe, "strategies": ["warm"], "num_phases": 1, "num_train_epochs": 1, "diagnostics": False}
    run_dir = run_experiment(parse_config(recipe=recipe))
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["fingerprint"]["training"]["world_size"] == 1
    saved["fingerprint"]["training"]["world_size"] = 2  # as if an earlier attempt ran on two processes
    (run_dir / "config.yaml").write_text(yaml.safe_dump(saved))
    with pytest.raises(ConfigError, match="training.world_size"):
        run_experiment(parse_config(recipe=recipe))
