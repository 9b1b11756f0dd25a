"""Throughput of the project's phase path next to a plain PyTorch loop, in one process, on the same
model, data, augmentation and device (``scripts/benchmark.py``), for any task (classification,
finetune, mae_pretrain, linear_probe, mae_finetune).

The project path is the real one: ``run_experiment`` on the recipe (one warm arm, every phase), so the
Trainer, the loop, the strategy, evaluation, diagnostics and checkpoints all count. The plain loop
trains the same initial model on the last phase's training set, held on the device as one uint8
tensor, with the task's batched augmentation, the model's own loss and the same optimizer, timed
after one warm-up epoch; it runs before and after the project's path (their mean is the reference).
Figures: images/s of each (the project's over the phases after the first) and their ratio; per
phase the overhead (the phase's wall time outside ``trainer.train``, by part: strategy, diagnostics,
setup, evaluation, saving) and the peak memory; on CUDA, the host synchronisations per training step.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
import time
from pathlib import Path
from typing import Any
from unittest.mock import patch

import torch
from transformers import Trainer

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
    phase's trainer options and its training set collated onto the device."""

    task: Any
    data: Any
    options: dict[str, Any]
    tensors: dict[str, torch.Tensor]


def prepare_plain(config: RecipeConfig) -> PlainData:
    task = create_task(config)
    data = task.prepare()
    last = data.plan.num_phases - 1
    options = task.trainer_options(data, last)
    tensors = resident_batches(task.train_dataset(data, last), options["data_collator"], config.training.device)
    return PlainData(task, data, options, tensors)


def plain_loop_images_per_second(
    config: RecipeConfig, plain: PlainData, epochs: int = 2, compile_mode: str | None = None
) -> float:
    """A hand-written loop over device-resident data: the reference the project is held to. Any task:
    the task's collated batches (images, and labels where it has them), its training transform, its
    model's own loss, and its optimizer (a task's own, e.g. the probe's LARS, else the Trainer's), in the
    recipe's precision (bf16 autocast) and fast-path choices (channels_last, fused_optimizer).
    ``compile_mode``: ``torch.compile`` the model (``reduce-overhead``: CUDA graphs; full batches only,
    so every step has one shape)."""
    device, inc, options, tensors = config.training.device, config.incremental, plain.options, plain.tensors
    model = plain.task.initial_model(plain.data, config.training.seed).to(device).train()
    model = to_channels_last(model) if inc.channels_last else model
    factory = options.get("optimizer_factory")
    optimizer = factory(model) if factory else _optimizer(config, model)
    optimizer = fused(optimizer) if inc.fused_optimizer else optimizer
    forward = torch.compile(model, mode=compile_mode) if compile_mode else model
    augment, batch = options.get("augment"), config.training.per_device_train_batch_size
    size = len(next(iter(tensors.values())))
    seen, started = 0, None
    for epoch in range(epochs + 1):  # epoch 0 warms up (allocations, kernels, compilation)
        if epoch == 1:
            _synchronize(device)
            started = time.perf_counter()
        for index in torch.randperm(size, device=device).split(batch):
            if compile_mode and len(index) < batch:
                continue
            _plain_step(config, forward, optimizer, {key: values[index] for key, values in tensors.items()}, augment)
            seen += len(index) if epoch > 0 else 0
    _synchronize(device)
    return seen / (time.perf_counter() - started)


def _plain_step(config: RecipeConfig, model, optimizer, inputs: dict[str, torch.Tensor], augment) -> None:
    if augment is not None:
        inputs["pixel_values"] = augment(inputs["pixel_values"])
    if config.incremental.channels_last:
        inputs["pixel_values"] = channels_last_batch(inputs["pixel_values"])
    device = config.training.device
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bool(config.training.bf16)):
        loss = model(**inputs).loss
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def project_phases(config: RecipeConfig) -> tuple[list[dict[str, Any]], float | None]:
    """The real loop on the recipe (a warm arm, in a scratch directory): its phase records, and (CUDA)
    the host synchronisations per training step, counted by a callback every phase's trainer gets."""
    counter = HostSyncCounter()

    class CountingPhaseTrainer(PhaseTrainer):  # measurement only: the loop's own trainer plus the counter
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.add_callback(counter)

    counting = patch.object(loop, "PhaseTrainer", CountingPhaseTrainer)
    with tempfile.TemporaryDirectory(prefix="benchmark-") as scratch, counting:
        config = dataclasses.replace(config)
        config.training = dataclasses.replace(config.training, output_dir=scratch, run_name="benchmark")
        config.incremental = dataclasses.replace(config.incremental, strategies=["warm"])
        try:
            run_dir = loop.run_experiment(config)
        finally:
            counter.close()
        lines = (Path(run_dir) / f"warm-seed{config.training.seed}" / "results.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines], counter.per_step()


def run_benchmark(argv: list[str], epochs: int = 2, compile_mode: str | None = None) -> dict[str, Any]:
    """Parse ``RECIPE [--field value ...]``, measure both paths, return every figure."""
    config = parse_config(argv)
    if config.training.fp16:
        raise ConfigError("The benchmark's plain loop runs fp32 or bf16. Fix: benchmark with `--bf16 true` or fp32.")
    # The plain loop runs before and after the project's path: on a shared machine one figure drifts by
    # 10-20%; the ratio uses their mean, and both are reported.
    shared = prepare_plain(config)
    plain_before = plain_loop_images_per_second(config, shared, epochs, compile_mode)
    records, syncs_per_step = project_phases(config)
    plain_after = plain_loop_images_per_second(config, shared, epochs, compile_mode)
    plain = (plain_before + plain_after) / 2
    phases = [
        {
            "phase": r["phase"],
            "images_per_second": r["samples_per_second"],
            "overhead_seconds": round(r["phase_seconds"] - r["train_seconds"], 3),
            "overhead_fraction": round((r["phase_seconds"] - r["train_seconds"]) / r["phase_seconds"], 4),
            "peak_memory_mb": r["peak_memory_mb"],
            "timing": r["timing"],
        }
        for r in records
    ]
    project = _steady_images_per_second(records)
    return {
        "recipe": argv[0],
        "device": str(config.training.device),
        "precision": "bf16" if config.training.bf16 else "fp32",
        "fast_path": _fast_path(config),
        "plain_compile": compile_mode,
        "plain_images_per_second": round(plain, 1),
        "plain_runs_images_per_second": [round(plain_before, 1), round(plain_after, 1)],
        "project_images_per_second": project,
        "ratio": round(project / plain, 3),
        "host_syncs_per_step": syncs_per_step,
        "phases": phases,
    }


def run_repeated(argv: list[str], repeats: int = 1, epochs: int = 2, compile_mode: str | None = None) -> dict:
    """``run_benchmark`` ``repeats`` times: the run with the median ratio, plus every run's ratio (on a
    shared machine one run's ratio can be off by 10-20%)."""
    if repeats < 1:
        raise ConfigError(f"--repeats has value {repeats}; it must be at least 1. Fix: pass --repeats 1 or more.")
    runs = sorted((run_benchmark(argv, epochs, compile_mode) for _ in range(repeats)), key=lambda r: r["ratio"])
    return {**runs[len(runs) // 2], "ratios": [r["ratio"] for r in runs]}


def _steady_images_per_second(records: list[dict[str, Any]]) -> float:
    """Images over training seconds of every phase after the first (the first pays the process's
    one-time warm-up: kernel selection, compilation), or of the only phase."""
    steady = records[1:] or records
    images = sum(r["samples_per_second"] * r["train_seconds"] for r in steady)
    return round(images / sum(r["train_seconds"] for r in steady), 2)


def _fast_path(config: RecipeConfig) -> dict[str, Any]:
    inc, tr = config.incremental, config.training
    compiled = tr.torch_compile_mode or "default" if tr.torch_compile else None
    return {"channels_last": inc.channels_last, "fused_optimizer": inc.fused_optimizer, "torch_compile": compiled}


_OVERHEAD_PARTS = ("start", "diagnostics", "setup", "evaluate", "save")  # the loop's timing, outside "train"


def format_table(result: dict[str, Any]) -> str:
    compiled = f" (torch.compile {result['plain_compile']})" if result["plain_compile"] else ""
    lines = [
        f"recipe {result['recipe']} on {result['device']}, {result['precision']}, fast path {result['fast_path']}: "
        f"project {result['project_images_per_second']:.0f} img/s, plain loop{compiled} "
        f"{result['plain_images_per_second']:.0f} img/s (runs before and after: "
        f"{' / '.join(f'{v:.0f}' for v in result['plain_runs_images_per_second'])}), ratio {result['ratio']:.2f}"
        f" (every run: {', '.join(f'{v:.2f}' for v in result.get('ratios', [result['ratio']]))})",
        "",
        "| phase | images/s | overhead (s) | overhead (% of phase) | of which start / diagnostics / setup / "
        "evaluate / save (s) | peak memory (MB) |",
        "|---|---|---|---|---|---|",
    ]
    for p in result["phases"]:
        parts = " / ".join(f"{p['timing'].get(k, 0.0):.2f}" for k in _OVERHEAD_PARTS)
        lines.append(
            f"| {p['phase']} | {p['images_per_second']:.0f} | {p['overhead_seconds']:.2f} | "
            f"{100 * p['overhead_fraction']:.1f} | {parts} | {p['peak_memory_mb']:.0f} |"
        )
    return "\n".join(lines)
