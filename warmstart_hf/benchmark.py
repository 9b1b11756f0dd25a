"""Throughput of the project's phase path next to a plain PyTorch loop, in one process, on the same
model, data, augmentation and device (``scripts/benchmark.py``), for any task (classification,
finetune, mae_pretrain, linear_probe, mae_finetune).

The project path is the real one: ``run_experiment`` on the recipe (one warm arm, every phase), so the
Trainer, the loop, the strategy, evaluation, diagnostics and checkpoints all count. The plain loop
trains the same initial model on the last phase's training set, held on the device as one uint8
tensor, with the task's batched augmentation, the model's own loss and the same optimizer, timed
after one warm-up epoch. Figures: images/s of each and their ratio; per phase the overhead (the phase's wall
time outside ``trainer.train``: strategy, diagnostics, evaluation) and the peak memory.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer

from warmstart_hf.config import RecipeConfig, parse_config
from warmstart_hf.loop import run_experiment
from warmstart_hf.tasks import create_task
from warmstart_hf.trainer import resident_batches


def _optimizer(config: RecipeConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    """The optimizer the Trainer builds from the same arguments (class, optim_args, betas, eps), on
    every parameter with the recipe's weight decay (the project's ``weight_decay_scope: all``)."""
    cls, kwargs = Trainer.get_optimizer_cls_and_kwargs(config.training, model)
    return cls(model.parameters(), weight_decay=config.training.weight_decay, **kwargs)


def plain_loop_images_per_second(config: RecipeConfig, epochs: int = 2) -> float:
    """A hand-written loop over device-resident data: the reference the project is held to. Any task:
    the task's collated batches (images, and labels where it has them), its training transform, its
    model's own loss, and its optimizer (a task's own, e.g. the probe's LARS, else the Trainer's)."""
    device = config.training.device
    task = create_task(config)
    data = task.prepare()
    last = data.plan.num_phases - 1
    train = task.train_dataset(data, last)
    options = task.trainer_options(data, last)
    tensors = resident_batches(train, options["data_collator"], device)
    model = task.initial_model(data, config.training.seed).to(device).train()
    factory = options.get("optimizer_factory")
    optimizer = factory(model) if factory else _optimizer(config, model)
    augment, batch = options.get("augment"), config.training.per_device_train_batch_size
    size = len(next(iter(tensors.values())))
    seen, started = 0, None
    for epoch in range(epochs + 1):  # epoch 0 warms up (allocations, kernels)
        if epoch == 1:
            _synchronize(device)
            started = time.perf_counter()
        for index in torch.randperm(size, device=device).split(batch):
            inputs = {key: values[index] for key, values in tensors.items()}
            if augment is not None:
                inputs["pixel_values"] = augment(inputs["pixel_values"])
            loss = model(**inputs).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            seen += len(index) if epoch > 0 else 0
    _synchronize(device)
    return seen / (time.perf_counter() - started)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def project_phases(config: RecipeConfig) -> list[dict[str, Any]]:
    """The real loop on the recipe (a warm arm, in a scratch directory); its phase records."""
    with tempfile.TemporaryDirectory(prefix="benchmark-") as scratch:
        config = dataclasses.replace(config)
        config.training = dataclasses.replace(config.training, output_dir=scratch, run_name="benchmark")
        config.incremental = dataclasses.replace(config.incremental, strategies=["warm"])
        run_dir = run_experiment(config)
        lines = (Path(run_dir) / f"warm-seed{config.training.seed}" / "results.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def run_benchmark(argv: list[str], epochs: int = 2) -> dict[str, Any]:
    """Parse ``RECIPE [--field value ...]``, measure both paths, return every figure."""
    config = parse_config(argv)
    plain = plain_loop_images_per_second(config, epochs)
    records = project_phases(config)
    phases = [
        {
            "phase": r["phase"],
            "images_per_second": r["samples_per_second"],
            "overhead_seconds": round(r["phase_seconds"] - r["train_seconds"], 3),
            "overhead_fraction": round((r["phase_seconds"] - r["train_seconds"]) / r["phase_seconds"], 4),
            "peak_memory_mb": r["peak_memory_mb"],
        }
        for r in records
    ]
    project = phases[-1]["images_per_second"]  # the largest, steady phase
    return {
        "recipe": argv[0],
        "device": str(config.training.device),
        "plain_images_per_second": round(plain, 1),
        "project_images_per_second": project,
        "ratio": round(project / plain, 3),
        "phases": phases,
    }


def format_table(result: dict[str, Any]) -> str:
    lines = [
        f"recipe {result['recipe']} on {result['device']}: project {result['project_images_per_second']:.0f} img/s, "
        f"plain loop {result['plain_images_per_second']:.0f} img/s, ratio {result['ratio']:.2f}",
        "",
        "| phase | images/s | overhead (s) | overhead (% of phase) | peak memory (MB) |",
        "|---|---|---|---|---|",
    ]
    for p in result["phases"]:
        lines.append(
            f"| {p['phase']} | {p['images_per_second']:.0f} | {p['overhead_seconds']:.2f} | "
            f"{100 * p['overhead_fraction']:.1f} | {p['peak_memory_mb']:.0f} |"
        )
    return "\n".join(lines)
