"""scripts/benchmark.py runs the real phase path next to a plain loop and reports every figure (the
figures themselves are measurements, printed, never asserted against a speed)."""

from __future__ import annotations

import json

import pytest
import yaml

from warmstart_hf.cli import main_benchmark


@pytest.mark.slow
def test_benchmark_reports_every_field(tiny_recipe, tmp_path, capsys):
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(yaml.safe_dump({**tiny_recipe, "num_train_epochs": 1, "diagnostics": False}))
    assert main_benchmark([str(recipe), "--device", "cpu", "--plain_epochs", "1", "--repeats", "2"]) == 0
    out = capsys.readouterr().out
    result = json.loads(out.strip().splitlines()[-1])
    assert result["device"] == "cpu" and result["recipe"] == str(recipe)
    assert result["plain_images_per_second"] > 0 and result["project_images_per_second"] > 0
    assert len(result["ratios"]) == 2 and result["ratio"] == max(result["ratios"])  # the upper median of two
    assert result["ratio"] == pytest.approx(
        result["project_images_per_second"] / result["plain_images_per_second"], abs=1e-3
    )
    assert [p["phase"] for p in result["phases"]] == [0, 1, 2]
    steady = [p["images_per_second"] for p in result["phases"][1:]]  # the first phase pays the warm-up
    assert min(steady) - 0.5 <= result["project_images_per_second"] <= max(steady) + 0.5
    assert result["plain_images_per_second"] == pytest.approx(sum(result["plain_runs_images_per_second"]) / 2, abs=0.1)
    assert result["precision"] == "fp32" and result["plain_compile"] is None
    assert result["host_syncs_per_step"] is None  # counted with CUDA's sync debug mode, on a GPU only
    assert result["fast_path"] == {"channels_last": False, "fused_optimizer": False, "torch_compile": None}
    for phase in result["phases"]:
        assert phase["images_per_second"] > 0 and phase["peak_memory_mb"] > 0
        assert phase["overhead_seconds"] >= 0 and 0 <= phase["overhead_fraction"] < 1
        parts = phase["timing"]
        assert set(parts) == {"start", "diagnostics", "setup", "train", "evaluate", "save"}
        assert parts["train"] > 0 and parts["evaluate"] > 0 and parts["save"] > 0
        outside = sum(v for k, v in parts.items() if k != "train")
        assert outside <= phase["overhead_seconds"] + 0.01  # the parts account for (almost all) the overhead
    assert "| phase | images/s | overhead (s) |" in out
    assert not (tmp_path / "runs" / "tiny").exists()  # the project path ran in a scratch directory


@pytest.mark.slow
def test_benchmark_covers_a_task_without_labels(tmp_path, capsys):
    """The plain loop of any task: MAE pretraining (images only, the model's own loss)."""
    from tests.conftest import REPO

    recipe = yaml.safe_load((REPO / "recipes" / "mae" / "demo_pretrain_mnist.yaml").read_text())
    shrink = {"max_train_examples": 200, "max_test_examples": 60, "probe_examples": 20, "num_train_epochs": 1}
    path = tmp_path / "mae.yaml"
    path.write_text(yaml.safe_dump({**recipe, **shrink, "num_phases": 2, "output_dir": str(tmp_path / "runs")}))
    argv = [str(path), "--device", "cpu", "--plain_epochs", "1", "--plain_compile", "default"]
    argv += ["--fused_optimizer", "true"]
    assert main_benchmark(argv) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["plain_images_per_second"] > 0 and [p["phase"] for p in result["phases"]] == [0, 1]
    assert result["plain_compile"] == "default" and result["fast_path"]["fused_optimizer"]


def test_host_sync_counter_counts_within_steps_not_at_epoch_end(monkeypatch):
    """The counting logic, with the warning CUDA's sync debug mode raises simulated (no GPU here)."""
    import warnings
    from types import SimpleNamespace

    import torch

    from warmstart_hf.host_syncs import HostSyncCounter

    modes = []
    monkeypatch.setattr(torch.cuda, "set_sync_debug_mode", modes.append)
    args = SimpleNamespace(device=torch.device("cuda"))
    counter = HostSyncCounter()
    for epoch in range(2):
        for step in range(4):
            counter.on_step_begin(args, None, None)
            if step % 2:
                warnings.warn("called a synchronizing CUDA operation", UserWarning, stacklevel=1)
            warnings.warn("an unrelated warning", UserWarning, stacklevel=1)
            counter.on_step_end(args, SimpleNamespace(epoch=epoch + (step + 1) / 4), None)
        warnings.warn("called a synchronizing CUDA operation", UserWarning, stacklevel=1)  # epoch end: not counted
    counter.on_train_end(args, None, None)
    assert (counter.syncs, counter.steps, counter.per_step()) == (4, 8, 0.5)
    assert modes == ["warn", 0, "warn", 0]  # on for the steps of each epoch, off for its end
    on_cpu = HostSyncCounter()
    on_cpu.on_step_begin(SimpleNamespace(device=torch.device("cpu")), None, None)
    on_cpu.on_step_end(None, SimpleNamespace(epoch=0.5), None)
    assert on_cpu.per_step() is None and modes == ["warn", 0, "warn", 0]  # nothing to count on a CPU
