"""Throughput of the project's phase path next to a plain PyTorch loop, in one process, on the same
model, data, augmentation and device (``scripts/benchmark.py``), for any task (classification,
finetune, mae_pretrain, linear_probe, mae_finetune, causal_lm).

The project path is the real one: ``run_experiment`` on the recipe (one warm arm, every phase), so the
Trainer, the loop, the strategy, evaluation, diagnostics and checkpoints all count; its figure is the
training throughput of the phases after the first, in the task's unit (``Task.throughput_unit``:
images/s, or tokens/s for a language model). The plain loop trains the same initial model on the last
phase's training set, collated once onto the device (uint8 images, or packed token blocks), with the
task's batched augmentation, the model's own loss, the same optimizer and LR schedule, for whole
epochs of at least ``min_seconds`` after one warm-up epoch.

A measurement, not a best run: the runs alternate (plain, project, plain, ..., project, plain), each
project run is divided by the mean of the plain runs on either side of it, and the ratio reported is
the median over those pairs with its distribution-free 95% interval. Also reported: per phase of the
median pair the overhead (the phase's wall time outside ``trainer.train``, by part: strategy,
diagnostics, setup, evaluation, saving) and the peak memory; on CUDA, the host synchronisations per
training step.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any
from unittest.mock import patch

import torch
from transformers import Trainer, get_scheduler

from warmstart_hf import loop
from warmstart_hf.config import ConfigError, RecipeConfig, parse_config
from warmstart_hf.fast_path import channels_last_batch, fused, to_channels_last
from warmstart_hf.host_syncs import HostSyncCounter
from warmstart_hf.tasks import create_task
from warmstart_hf.trainer import PhaseTrainer, resident_batches


def _optimizer(config: RecipeConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    """The optimizer the Trainer builds from the same arguments (class, optim_args, betas, eps), on
    every parameter with the recipe's weight decay (the project's ``weight_decay_scope: all``)."""
    cls, kwargs = Trainer.get_optimizer_cls_and_kwargs(config.training, model)
    return cls(model.parameters(), weight_decay=config.training.weight_decay, **kwargs)


@dataclasses.dataclass
class PlainData:
    """What every plain-loop run of a benchmark shares, prepared once: the task, its data, the last
    phase's trainer options, its training set collated onto the device, and the unit of work (name,
    amount per training example) both paths are counted in."""

    task: Any
    data: Any
    options: dict[str, Any]
    tensors: dict[str, torch.Tensor]
    unit: str = "images"
    per_example: int = 1


def prepare_plain(config: RecipeConfig) -> PlainData:
    task = create_task(config)
    data = task.prepare()
    last = data.plan.num_phases - 1
    options = task.trainer_options(data, last)
    tensors = resident_batches(task.train_dataset(data, last), options["data_collator"], config.training.device)
    return PlainData(task, data, options, tensors, *task.throughput_unit(data))


@dataclasses.dataclass
class PlainRun:
    """One timed run of the plain loop: its speed and the work it covered, in the task's unit."""

    per_second: float
    seconds: float
    work: int

    def record(self, unit: str) -> dict[str, Any]:
        """The run as reported: ``{unit}_per_second``, ``seconds``, ``{unit}``."""
        return {f"{unit}_per_second": self.per_second, "seconds": self.seconds, unit: self.work}


def plain_loop_run(
    config: RecipeConfig, plain: PlainData, min_seconds: float = 5.0, compile_mode: str | None = None
) -> PlainRun:
    """A hand-written loop over device-resident data: the reference the project is held to. Any task:
    the task's collated batches (images, and labels where it has them; token blocks), its training
    transform, its model's own loss, its optimizer (a task's own, e.g. the probe's LARS, else the
    Trainer's) stepped with the recipe's LR schedule and clipping, in the recipe's precision (bf16
    autocast) and fast-path choices (channels_last, fused_optimizer). A fresh model each run; one warm-up
    epoch (allocations, kernels, compilation), then whole timed epochs until ``min_seconds`` have passed,
    so that one figure is seconds of work, not a few steps.
    ``compile_mode``: ``torch.compile`` the model (``reduce-overhead``: CUDA graphs; full batches only,
    so every step has one shape)."""
    device, inc, options = config.training.device, config.incremental, plain.options
    model = plain.task.initial_model(plain.data, config.training.seed).to(device).train()
    model = to_channels_last(model) if inc.channels_last else model
    factory = options.get("optimizer_factory")
    optimizer = factory(model) if factory else _optimizer(config, model)
    optimizer = fused(optimizer) if inc.fused_optimizer else optimizer
    forward = torch.compile(model, mode=compile_mode) if compile_mode else model
    schedule = plain_schedule(config, optimizer, _examples(plain), compile_mode)
    step = functools.partial(_plain_step, config, forward, optimizer, schedule, plain.options.get("augment"))
    _plain_epoch(config, plain, step, compile_mode)  # warm-up, untimed
    _synchronize(device)
    started, seen, elapsed = time.perf_counter(), 0, 0.0
    while seen == 0 or elapsed < min_seconds:
        seen += _plain_epoch(config, plain, step, compile_mode)
        _synchronize(device)
        elapsed = time.perf_counter() - started
    work = seen * plain.per_example
    return PlainRun(round(work / elapsed, 1), round(elapsed, 2), work)


def plain_schedule(
    config: RecipeConfig, optimizer: torch.optim.Optimizer, examples: int, compile_mode: str | None = None
) -> torch.optim.lr_scheduler.LRScheduler:
    """The recipe's LR schedule as the Trainer builds it (``get_scheduler`` with its warm-up steps and
    kwargs) over the recipe's epochs of the plain loop's batches; stepped every step like the
    project's, it costs the same. A run longer than the recipe's epochs steps past the schedule's end
    (other learning rates, the same work)."""
    tr = config.training
    batch = tr.per_device_train_batch_size
    per_epoch = examples // batch if compile_mode else math.ceil(examples / batch)  # compiled: full batches only
    total = tr.max_steps if tr.max_steps > 0 else math.ceil(tr.num_train_epochs * per_epoch)
    return get_scheduler(
        tr.lr_scheduler_type,
        optimizer,
        num_warmup_steps=tr.get_warmup_steps(total),
        num_training_steps=total,
        scheduler_specific_kwargs=tr.lr_scheduler_kwargs,
    )


def _examples(plain: PlainData) -> int:
    return len(next(iter(plain.tensors.values())))


def _plain_epoch(config: RecipeConfig, plain: PlainData, step, compile_mode: str | None) -> int:
    """One shuffled pass over the resident training set; returns the examples trained."""
    device, batch = config.training.device, config.training.per_device_train_batch_size
    seen = 0
    for index in torch.randperm(_examples(plain), device=device).split(batch):
        if compile_mode and len(index) < batch:
            continue
        step({key: values[index] for key, values in plain.tensors.items()})
        seen += len(index)
    return seen


def _plain_step(config: RecipeConfig, model, optimizer, schedule, augment, inputs: dict[str, torch.Tensor]) -> None:
    if augment is not None:
        inputs["pixel_values"] = augment(inputs["pixel_values"])
    if config.incremental.channels_last:
        inputs["pixel_values"] = channels_last_batch(inputs["pixel_values"])
    device, clip = config.training.device, config.training.max_grad_norm
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bool(config.training.bf16)):
        loss = model(**inputs).loss
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if clip and clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    optimizer.step()
    schedule.step()


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def project_phases(config: RecipeConfig) -> tuple[list[dict[str, Any]], float | None]:
    """The real loop on the recipe (one arm: the recipe's first strategy, which the benchmark sets from
    ``--strategy``; in a scratch directory): its phase records, and (CUDA) the host synchronisations
    per training step, counted by a callback every phase's trainer gets."""
    counter = HostSyncCounter()

    class CountingPhaseTrainer(PhaseTrainer):  # measurement only: the loop's own trainer plus the counter
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.add_callback(counter)

    counting = patch.object(loop, "PhaseTrainer", CountingPhaseTrainer)
    with tempfile.TemporaryDirectory(prefix="benchmark-") as scratch, counting:
        config = dataclasses.replace(config)
        config.training = dataclasses.replace(config.training, output_dir=scratch, run_name="benchmark")
        strategy = config.incremental.strategies[0]
        config.incremental = dataclasses.replace(config.incremental, strategies=[strategy])
        try:
            run_dir = loop.run_experiment(config)
        finally:
            counter.close()
        lines = (Path(run_dir) / f"{strategy}-seed{config.training.seed}" / "results.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines], counter.per_step()


def run_benchmark(
    argv: list[str], pairs: int = 6, min_seconds: float = 5.0, compile_mode: str | None = None
) -> dict[str, Any]:
    """Parse ``RECIPE [--field value ...]`` and measure both paths interleaved: plain, project, plain,
    project, ..., plain. On a shared machine the speed drifts by 10-20% within a minute, so each project
    run is compared with the plain runs just before and after it (their mean): one ratio per pair. The
    figure is the median of the pairs' ratios with its distribution-free 95% interval."""
    config = parse_config(argv)
    if config.training.fp16:
        raise ConfigError("The benchmark's plain loop runs fp32 or bf16. Fix: benchmark with `--bf16 true` or fp32.")
    if pairs < 1 or min_seconds <= 0:
        raise ConfigError(
            f"--pairs {pairs} / --min_seconds {min_seconds}: both must be positive. "
            "Fix: pass --pairs 6 (the fewest that give a 95% interval) and --min_seconds 5."
        )
    load_before = _load_average()
    shared = prepare_plain(config)
    plain_runs = [plain_loop_run(config, shared, min_seconds, compile_mode)]
    projects = []
    for _ in range(pairs):
        projects.append(project_phases(config))
        plain_runs.append(plain_loop_run(config, shared, min_seconds, compile_mode))
    unit, per_example = shared.unit, shared.per_example
    measured = [_pair(index, plain_runs, records, unit, per_example) for index, (records, _) in enumerate(projects)]
    middle = _median_index([pair["ratio"] for pair in measured])
    records, syncs_per_step = projects[middle]
    return {
        "recipe": argv[0],
        "device": str(config.training.device),
        "precision": "bf16" if config.training.bf16 else "fp32",
        "fast_path": _fast_path(config),
        "plain_compile": compile_mode,
        "strategy": config.incremental.strategies[0],
        "unit": unit,
        **ratio_statistics([pair["ratio"] for pair in measured]),
        f"plain_{unit}_per_second": _median([run.per_second for run in plain_runs]),
        f"project_{unit}_per_second": _median([pair[f"project_{unit}_per_second"] for pair in measured]),
        "pairs": measured,
        "plain_runs": [run.record(unit) for run in plain_runs],
        "min_seconds": min_seconds,
        "load_average": [load_before, _load_average()],
        "host_syncs_per_step": syncs_per_step,
        "median_pair": middle,
        "phases": [_phase_figures(r, unit, per_example) for r in records],
    }


def _pair(
    index: int, plain_runs: list[PlainRun], records: list[dict[str, Any]], unit: str, per_example: int
) -> dict[str, Any]:
    """Project run ``index`` against the plain runs that bracket it."""
    before, after = plain_runs[index], plain_runs[index + 1]
    examples, seconds = _steady_work(records)
    project = examples * per_example / seconds
    plain = (before.per_second + after.per_second) / 2
    return {
        "plain_before": before.per_second,
        f"project_{unit}_per_second": round(project, 1),
        "plain_after": after.per_second,
        "ratio": round(project / plain, 4),
        "project_seconds": round(seconds, 2),
    }


def ratio_statistics(ratios: list[float], confidence: float = 0.95) -> dict[str, Any]:
    """The median ratio and its distribution-free interval (order statistics, via scipy's quantile
    test: exact coverage, no assumption on the noise's shape). Fewer than 6 pairs cannot give a 95%
    interval: then it is None."""
    from scipy.stats import quantile_test

    median = _median(ratios)
    interval = quantile_test(ratios, q=median, p=0.5).confidence_interval(confidence)
    bounds = None if math.isnan(interval.low) or math.isnan(interval.high) else [interval.low, interval.high]
    return {
        "ratio": round(median, 3),
        "ratio_interval": [round(float(b), 3) for b in bounds] if bounds else None,
        "ratio_confidence": confidence,
        "ratios": [round(r, 3) for r in ratios],
    }


def _median(values: list[float]) -> float:
    return round(statistics.median(values), 4)


def _median_index(values: list[float]) -> int:
    """The run whose ratio is the (lower) median: its phases are the ones reported."""
    order = sorted(range(len(values)), key=values.__getitem__)
    return order[(len(order) - 1) // 2]


def _steady_work(records: list[dict[str, Any]]) -> tuple[float, float]:
    """Examples and training seconds of every phase after the first (the first pays the process's
    one-time warm-up: kernel selection, compilation), or of the only phase."""
    steady = records[1:] or records
    return sum(r["samples_per_second"] * r["train_seconds"] for r in steady), sum(r["train_seconds"] for r in steady)


def _phase_figures(record: dict[str, Any], unit: str, per_example: int) -> dict[str, Any]:
    overhead = record["phase_seconds"] - record["train_seconds"]
    return {
        "phase": record["phase"],
        f"{unit}_per_second": round(record["samples_per_second"] * per_example, 2),
        "overhead_seconds": round(overhead, 3),
        "overhead_fraction": round(overhead / record["phase_seconds"], 4),
        "peak_memory_mb": record["peak_memory_mb"],
        "timing": record["timing"],
    }


def _load_average() -> float | None:
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None


def _fast_path(config: RecipeConfig) -> dict[str, Any]:
    inc, tr = config.incremental, config.training
    compiled = tr.torch_compile_mode or "default" if tr.torch_compile else None
    return {"channels_last": inc.channels_last, "fused_optimizer": inc.fused_optimizer, "torch_compile": compiled}


_OVERHEAD_PARTS = ("start", "diagnostics", "setup", "evaluate", "save")  # the loop's timing, outside "train"


def format_table(result: dict[str, Any]) -> str:
    """The figures as Markdown: the summary line, one row per interleaved pair, the median pair's phases."""
    unit = result["unit"]
    lines = [_summary_line(result), "", "| pair | plain before | project | plain after | ratio | project seconds |"]
    lines.append("|---|---|---|---|---|---|")
    for index, pair in enumerate(result["pairs"]):
        lines.append(
            f"| {index} | {pair['plain_before']:.0f} | {pair[f'project_{unit}_per_second']:.0f} | "
            f"{pair['plain_after']:.0f} | {pair['ratio']:.3f} | {pair['project_seconds']:.1f} |"
        )
    short = [pair["project_seconds"] for pair in result["pairs"] if pair["project_seconds"] < result["min_seconds"]]
    if short:
        lines.append(
            f"Note: project runs covered {min(short):.1f} s of training, under --min_seconds "
            f"{result['min_seconds']}: raise --num_train_epochs for a steadier figure."
        )
    lines += ["", f"Phases of pair {result['median_pair']} (the median ratio):", ""]
    lines.append(
        f"| phase | {unit}/s | overhead (s) | overhead (% of phase) | of which start / diagnostics / setup / "
        "evaluate / save (s) | peak memory (MB) |"
    )
    lines.append("|---|---|---|---|---|---|")
    for p in result["phases"]:
        parts = " / ".join(f"{p['timing'].get(k, 0.0):.2f}" for k in _OVERHEAD_PARTS)
        lines.append(
            f"| {p['phase']} | {p[f'{unit}_per_second']:.0f} | {p['overhead_seconds']:.2f} | "
            f"{100 * p['overhead_fraction']:.1f} | {parts} | {p['peak_memory_mb']:.0f} |"
        )
    return "\n".join(lines)


def _summary_line(result: dict[str, Any]) -> str:
    compiled = f" (torch.compile {result['plain_compile']})" if result["plain_compile"] else ""
    interval = result["ratio_interval"]
    spread = (
        f"{100 * result['ratio_confidence']:.0f}% interval {interval[0]:.2f}-{interval[1]:.2f}"
        if interval
        else "no 95% interval (it needs 6 pairs or more)"
    )
    plain_seconds = [run["seconds"] for run in result["plain_runs"]]
    load = " -> ".join(str(v) for v in result["load_average"])
    unit = result["unit"]
    return (
        f"recipe {result['recipe']} ({result['strategy']} arm) on {result['device']}, {result['precision']}, "
        f"fast path {result['fast_path']}: "
        f"ratio {result['ratio']:.2f} (median of {len(result['pairs'])} interleaved pairs, {spread}); "
        f"project {result[f'project_{unit}_per_second']:.0f} {unit}/s, plain loop{compiled} "
        f"{result[f'plain_{unit}_per_second']:.0f} {unit}/s (medians; plain runs of "
        f"{min(plain_seconds):.1f}-{max(plain_seconds):.1f} s); load average {load}"
    )
