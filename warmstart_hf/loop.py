"""Arms x phases: the incremental-training loop, its run directory, and resume.

Layout of a run (``<output_dir>/<run_name>/``)::

    config.yaml                  resolved recipe (all dataclasses)
    summary.md, summary.csv      arms side by side; fig1.png: train/test accuracy per phase
    <strategy>-seed<seed>/       one arm
        split.json               the phase plan (class order, train indices per phase, test groups)
        init/                    theta0 (safetensors + config.json)
        results.jsonl            one JSON object per finished phase, rewritten atomically
        hub.json                 with push_to_hub: what is on the Hub (warmstart_hf.hub)
        phase-XX/                final model of phase XX (+ optimizer_state.safetensors when carried,
                                 + <companion>.safetensors, e.g. the Hare & Tortoise tortoise)
            checkpoint-N/        Trainer checkpoints while the phase runs (removed when it ends)

A phase is finished when its line is in ``results.jsonl``; that line is written last. Running the
same command again skips finished arms and phases and resumes an unfinished phase from its last
Trainer checkpoint. Only the main process writes; every process computes the same strategies.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from datasets import Dataset
from safetensors.torch import save_file
from tqdm.auto import tqdm
from transformers import EarlyStoppingCallback, PrinterCallback, TrainingArguments

from warmstart_hf.checkpoints import (
    last_complete_checkpoint,
    phase_files_readable,
    remove_checkpoint,
    remove_stale_temporaries,
    save_pretrained_atomic,
)
from warmstart_hf.config import ConfigError, RecipeConfig
from warmstart_hf.data import (
    PhasePlan,
    add_label_noise,
    build_augmentation,
    build_phase_plan,
    channel_statistics,
    collate_pixels,
    load_source,
    to_pixel_dataset,
)
from warmstart_hf.graceful_stop import STOP
from warmstart_hf.hub import load_init_from, push_finished_phases
from warmstart_hf.io import append_jsonl_atomic, atomic_write_json, atomic_write_text, read_jsonl
from warmstart_hf.metrics import accuracy, companion_metrics, phase_metrics
from warmstart_hf.metrics.diagnostics import (
    activation_diagnostics,
    diagnostic_sample,
    gradient_norm,
    weight_diagnostics,
)
from warmstart_hf.metrics.evaluation import masked_predictions
from warmstart_hf.models import TimmClassifierConfig, TimmImageClassifier, build_classifier_config, create_classifier
from warmstart_hf.optimizer_state import load_optimizer_state, save_optimizer_state
from warmstart_hf.report import write_run_summary
from warmstart_hf.run_lock import locked_arms
from warmstart_hf.seeding import derive_seed
from warmstart_hf.strategies import PhaseContext, Strategy, create_strategy, mixed_optimizer_policies
from warmstart_hf.trainer import PhaseProgress, PhaseTrainer, unwrap_optimizer_state

logger = logging.getLogger(__name__)

OPTIMIZER_STATE_FILE = "optimizer_state.safetensors"


@dataclass
class PreparedData:
    """The decoded data and the plan shared by all arms of one seed."""

    plan: PhasePlan
    train: Dataset  # pixel_values (uint8 CxHxW), labels; numpy-formatted (see collate_pixels)
    test: Dataset
    model_config: TimmClassifierConfig
    validation: Dataset | None = None
    init_model: TimmImageClassifier | None = None  # from `init_from` (Hub phase or local dir), else a seeded draw


def prepare_data(config: RecipeConfig) -> PreparedData:
    """Load, validate and decode the data and build the phase plan. Writes nothing to the run dir."""
    seed = config.training.seed
    source = load_source(config.data)
    inc = config.incremental
    plan = build_phase_plan(
        source["train"],
        source["test"],
        scenario=inc.scenario,
        num_phases=config.num_phases,
        seed=seed,
        phase_fractions=inc.phase_fractions,
        class_order=inc.class_order,
    )
    if inc.label_noise and any(inc.label_noise):
        plan = add_label_noise(plan, np.asarray(source["train"]["label"][:]), inc.label_noise, seed)
    size, channels = config.data.image_size, config.data.num_channels
    with config.training.main_process_first(desc="decoding images"):
        train = to_pixel_dataset(source["train"], size, channels)
        test = to_pixel_dataset(source["test"], size, channels)
        validation = to_pixel_dataset(source["validation"], size, channels) if "validation" in source else None
    mean, std = config.model.image_mean, config.model.image_std
    if mean is None or std is None:
        stats_mean, stats_std = channel_statistics(train)
        mean, std = mean or stats_mean, std or stats_std
    names = source["train"].features["label"].names
    model_config = build_classifier_config(
        config.model.model_name,
        num_labels=len(names),
        num_channels=config.data.num_channels,
        image_size=config.data.image_size,
        width=config.model.model_width,
        image_mean=mean,
        image_std=std,
        id2label=dict(enumerate(names)),
    )
    init_model = load_init_from(config.model.init_from, model_config) if config.model.init_from else None
    return PreparedData(plan, train, test, model_config, validation, init_model)


def _check_run_dir(config: RecipeConfig) -> None:
    """A run directory holds one experiment: refuse to mix results of two different settings."""
    saved = config.run_dir / "config.yaml"
    if not saved.exists():
        return
    previous = yaml.safe_load(saved.read_text()).get("fingerprint")
    current = yaml.safe_load(yaml.safe_dump(config.experiment_fingerprint()))
    if previous != current:
        changed = sorted(
            f"{section}.{key}"
            for section in current
            for key in current[section]
            if (previous or {}).get(section, {}).get(key) != current[section][key]
        )
        raise ConfigError(
            f"Run directory {str(config.run_dir)!r} already holds results of a different setting "
            f"(changed: {', '.join(changed) or 'unknown'}). Fix: choose another `run_name` or `output_dir`, "
            "or delete that directory to start over."
        )


def run_experiment(config: RecipeConfig) -> Path:
    """Run every arm of the recipe (skipping finished work) and write the summary."""
    data = prepare_data(config)  # fails fast on bad input, before anything is written
    arms = [arm_dir(config, name) for name in config.incremental.strategies]
    with locked_arms(arms, is_main=config.training.process_index == 0):
        _check_run_dir(config)
        _run_arms(config, data)
    return config.run_dir


def _run_arms(config: RecipeConfig, data: PreparedData) -> None:
    args = config.training
    is_main = args.process_index == 0
    if is_main:
        print(
            f"Run {config.run_dir}: arms {config.incremental.strategies}, {config.num_phases} phases, "
            f"world_size={args.world_size}, device={args.device}"
        )
        mixed = mixed_optimizer_policies(config.incremental.strategies, config.strategy)
        if mixed:
            logger.warning(mixed)
            print(f"warning: {mixed}")
        record = {"fingerprint": config.experiment_fingerprint(), **config.to_dict()}
        atomic_write_text(config.run_dir / "config.yaml", yaml.safe_dump(record, sort_keys=False))
    for name in config.incremental.strategies:
        STOP.raise_if_requested(f"before arm {name}")
        run_arm(config, create_strategy(name, config.strategy), data)
    if is_main:
        table = write_run_summary(config.run_dir)
        print(table)


def arm_dir(config: RecipeConfig, strategy_name: str) -> Path:
    return config.run_dir / f"{strategy_name}-seed{config.training.seed}"


def _param_vector(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1).float().cpu() for p in model.parameters()])


def _phase_training_args(config: RecipeConfig, phase_dir: Path, phase: int) -> TrainingArguments:
    seed = config.training.seed
    inc = config.incremental
    extra: dict[str, Any] = {}
    if inc.track_test_curve or inc.stop_rule == "early_stopping":
        extra["eval_strategy"] = "epoch"
    if inc.stop_rule == "early_stopping":  # best-epoch reload needs a checkpoint at every evaluation
        extra.update(
            save_strategy="epoch",
            load_best_model_at_end=True,
            metric_for_best_model="validation_accuracy_masked",
            greater_is_better=True,
        )
    if inc.phase_epochs:
        extra["num_train_epochs"] = inc.phase_epochs[phase]
    return dataclasses.replace(
        config.training,
        output_dir=str(phase_dir),
        seed=derive_seed(seed, "train", phase),  # data order + augmentation; shared by all arms
        run_name=f"{config.training.run_name}-{phase_dir.parent.name}-{phase_dir.name}",
        push_to_hub=False,  # the recipe's push_to_hub is handled per phase by warmstart_hf.hub, not the Trainer
        **extra,
    )


def _phase_train_dataset(data: PreparedData, plan: PhasePlan, phase: int) -> Dataset:
    """The phase's cumulative training set, with that phase's noisy labels swapped in (if any)."""
    dataset = data.train.select(plan.train_indices(phase))
    if plan.noisy_labels and plan.noisy_labels[phase]:
        labels = plan.phase_labels(phase, np.asarray(dataset["labels"][:]).tolist())
        dataset = dataset.remove_columns("labels").add_column("labels", labels).with_format("numpy")
    return dataset


def _eval_sets(data: PreparedData, plan: PhasePlan, phase: int, config: RecipeConfig) -> dict[str, Dataset]:
    """Per-epoch evaluation sets: the validation split (early stopping) and the test examples of the
    classes seen so far (curves), both restricted to seen classes."""
    seen = set(plan.classes_seen(phase))
    sets = {}
    if config.incremental.stop_rule == "early_stopping" and data.validation is not None:
        labels = np.asarray(data.validation["labels"][:])
        sets["validation"] = data.validation.select(np.flatnonzero([y in seen for y in labels]))
    if config.incremental.track_test_curve:
        groups = plan.test_groups if plan.class_groups is None else plan.test_groups[: phase + 1]
        sets["test"] = data.test.select(sorted(i for group in groups for i in group))
    return sets


def _accuracy_metrics(seen: list[int]):
    """compute_metrics for per-epoch evaluation: accuracy with the full head and with masked logits."""

    def compute(prediction) -> dict[str, float]:
        logits, labels = np.asarray(prediction.predictions), np.asarray(prediction.label_ids)
        return {
            "accuracy": accuracy(logits.argmax(-1), labels),
            "accuracy_masked": accuracy(masked_predictions(logits, seen), labels),
        }

    return compute


def _curve(log_history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per-epoch points from the Trainer's log history: running train accuracy and any evaluations."""
    points: dict[int, dict[str, Any]] = {}
    for entry in log_history:
        if "epoch" not in entry:
            continue
        epoch = round(entry["epoch"])
        point = points.setdefault(epoch, {"epoch": epoch})
        for key, value in entry.items():
            if key == "train_accuracy_running" or (key.startswith("eval_") and key.endswith(("accuracy", "masked"))):
                point[key.removeprefix("eval_")] = value
                point["step"] = entry["step"]
    return [points[e] for e in sorted(points) if len(points[e]) > 1]


def _predict(trainer: PhaseTrainer, dataset: Dataset) -> tuple[np.ndarray, np.ndarray]:
    output = trainer.predict(dataset)
    logits, labels = np.asarray(output.predictions), np.asarray(output.label_ids)
    if len(logits) != len(dataset):  # metrics must be exact over all examples
        raise RuntimeError(f"prediction covered {len(logits)} of {len(dataset)} examples")
    return logits, labels


def _save_companions(phase_dir: Path, companions: dict[str, torch.nn.Module]) -> None:
    for name, module in companions.items():
        tensors = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
        save_file(tensors, str(phase_dir / f"{name}.safetensors"))


def _start_gradient_norms(
    model: torch.nn.Module, data: PreparedData, phase: int, size: int, sample_seed: int
) -> dict[str, Any]:
    """Gradient norms at the start of the phase (old chunks vs the new one), on fixed samples."""
    plan = data.plan
    old = plan.train_indices(phase - 1) if phase > 0 else []
    new = plan.chunks[phase]
    pick = lambda idx: [idx[i] for i in diagnostic_sample(len(idx), size, sample_seed)]  # noqa: E731
    return {
        "grad_norm_old_data": gradient_norm(model, data.train.select(pick(old))) if old else None,
        "grad_norm_new_data": gradient_norm(model, data.train.select(pick(new))),
    }


def run_arm(config: RecipeConfig, strategy: Strategy, data: PreparedData) -> list[dict[str, Any]]:
    """Train one strategy through every phase; returns the arm's results (one dict per phase)."""
    args = config.training
    inc = config.incremental
    is_main = args.process_index == 0
    seed = args.seed
    plan = data.plan
    num_phases = plan.num_phases
    directory = arm_dir(config, strategy.name)
    if is_main:
        remove_stale_temporaries(directory)  # the arm is locked: nobody else is writing them
    results = read_results(directory, repair=is_main)
    if len(results) >= num_phases:
        logger.info("arm %s is finished; skipping", directory.name)
        if is_main:
            push_finished_phases(config, directory)  # completes pushes a failed run left pending
        return results

    split_path = directory / "split.json"
    if split_path.exists() and PhasePlan.load(split_path) != plan:
        raise RuntimeError(f"{split_path} differs from the plan this code computes for seed {seed}.")
    if data.init_model is not None:
        init_model = copy.deepcopy(data.init_model)
    else:
        init_model = create_classifier(data.model_config, derive_seed(seed, "init"))
    init_state = {k: v.detach().clone() for k, v in init_model.state_dict().items()}
    if is_main:
        if not split_path.exists():
            atomic_write_json(split_path, plan.to_json())
        if not phase_files_readable(directory / "init"):
            save_pretrained_atomic(init_model, directory / "init")

    start_phase = len(results)
    carried_state = None
    if start_phase == 0:
        model = init_model
    else:
        previous_dir = directory / f"phase-{start_phase - 1:02d}"
        model = TimmImageClassifier.from_pretrained(previous_dir)
        if strategy.carries_optimizer_state() and (previous_dir / OPTIMIZER_STATE_FILE).exists():
            carried_state = load_optimizer_state(previous_dir / OPTIMIZER_STATE_FILE)

    uniform = args.num_train_epochs if args.max_steps <= 0 else 1
    epochs = [int(np.ceil(e)) for e in inc.phase_epochs or [uniform] * num_phases]
    bar = tqdm(total=sum(epochs), initial=sum(epochs[:start_phase]), desc=directory.name) if is_main else None
    augment = build_augmentation(inc.augmentation, crop_padding=inc.crop_padding, rotation_degrees=inc.rotation_degrees)

    for phase in range(start_phase, num_phases):
        phase_dir = directory / f"phase-{phase:02d}"
        train_indices = plan.train_indices(phase)
        phase_train = _phase_train_dataset(data, plan, phase)
        STOP.raise_if_requested(f"before {directory.name} phase {phase}")
        checkpoint = last_complete_checkpoint(phase_dir, remove_incomplete=is_main)
        context = PhaseContext(
            phase=phase,
            num_phases=num_phases,
            previous_model=model,
            fresh_model=lambda p=phase: create_classifier(data.model_config, derive_seed(seed, "fresh", p)),
            init_state=init_state,
            train_dataset=phase_train,
            new_indices=plan.chunks[phase],
            seed=derive_seed(seed, "strategy", phase),
            options=config.strategy,
            previous_phase_dir=directory / f"phase-{phase - 1:02d}" if phase > 0 else None,
            resume_checkpoint=checkpoint,
        )
        previous = _param_vector(model) if phase > 0 else None
        start = strategy.prepare(context)
        model = start.model
        distance = float(torch.linalg.vector_norm(_param_vector(model) - previous)) if previous is not None else None
        diagnostics: dict[str, Any] = {}
        if inc.diagnostics and is_main:
            diagnostics = _start_gradient_norms(
                model, data, phase, inc.diagnostics_samples, derive_seed(seed, "diagnostics", phase)
            )

        eval_sets = _eval_sets(data, plan, phase, config)
        callbacks = [PhaseProgress(bar, f"phase {phase + 1}/{num_phases}"), *start.callbacks]
        if inc.stop_rule == "early_stopping" and inc.early_stopping_patience:
            callbacks.append(EarlyStoppingCallback(early_stopping_patience=inc.early_stopping_patience))
        continued = inc.lr_schedule_across_phases == "continue"
        trainer = PhaseTrainer(
            model=model,
            args=_phase_training_args(config, phase_dir, phase),
            train_dataset=phase_train,
            eval_dataset=eval_sets or None,
            compute_metrics=_accuracy_metrics(plan.classes_seen(phase)) if eval_sets else None,
            stop_train_accuracy=inc.stop_train_accuracy if inc.stop_rule == "train_accuracy" else None,
            warmup_epochs=inc.warmup_epochs,
            epoch_offset=sum(r["epochs"] for r in results[:phase]) if continued else 0.0,
            loss_classes=plan.classes_seen(phase) if inc.mask_unseen_logits else None,
            data_collator=collate_pixels,
            augment=augment,
            lr_milestones=inc.lr_milestones,
            lr_gamma=inc.lr_gamma,
            weight_decay_scope=inc.weight_decay_scope,
            initial_optimizer_state=carried_state if start.carry_optimizer_state else None,
            regularizer=start.regularizer,
            callbacks=callbacks,
        )
        trainer.remove_callback(PrinterCallback)
        if bar is not None:
            bar.set_description(f"{directory.name} phase {phase + 1}/{num_phases}")
        started = time.perf_counter()
        trainer.train(resume_from_checkpoint=checkpoint)
        STOP.raise_if_requested(f"at step {trainer.state.global_step} of {directory.name} phase {phase}")
        seconds = time.perf_counter() - started

        train_logits, train_labels = _predict(trainer, phase_train)
        test_logits, test_labels = _predict(trainer, data.test)
        trained_epochs = float(trainer.state.epoch or 0.0)
        record: dict[str, Any] = {
            "phase": phase,
            "strategy": strategy.name,
            "seed": seed,
            "scenario": plan.scenario,
            "num_train_examples": len(train_indices),
            **phase_metrics(plan, phase, train_logits, train_labels, test_logits, test_labels, inc.mask_unseen_logits),
            "start_distance_to_previous": distance,
            "strategy_stats": start.stats,
            "optimizer_state": strategy.optimizer_policy(),
            "epochs": trained_epochs,
            "steps": int(trainer.state.global_step),
            "train_seconds": round(seconds, 3),
            "samples_per_second": round(len(train_indices) * trained_epochs / seconds, 2) if seconds > 0 else None,
            "resumed_from_checkpoint": checkpoint is not None,
            "stop_rule": inc.stop_rule,
            "curve": _curve(trainer.state.log_history),
        }
        if inc.stop_rule == "early_stopping":
            record["best_validation_accuracy"] = trainer.state.best_metric
            record["best_step"] = trainer.state.best_global_step
        if plan.noisy_labels:
            clean = np.asarray(data.train.select(train_indices)["labels"][:])
            record["label_noise"] = inc.label_noise[phase]
            record["train_accuracy_clean"] = accuracy(train_logits.argmax(-1), clean)
        if is_main and inc.diagnostics:
            # a fixed sample of the phase's training images: the classes seen so far (Dohare et al.)
            picked = diagnostic_sample(len(phase_train), inc.diagnostics_samples, derive_seed(seed, "dormant", phase))
            record["diagnostics"] = {
                **activation_diagnostics(model, phase_train.select(picked)),
                **weight_diagnostics(model, init_state, previous),
                **diagnostics,
            }
        if is_main and start.companions:
            record["companions"] = {
                name: companion_metrics(companion, plan, phase, phase_train, data.test, args.per_device_eval_batch_size)
                for name, companion in start.companions.items()
            }
        carried_state = unwrap_optimizer_state(trainer.optimizer) if strategy.carries_optimizer_state() else None
        trainer.save_model(str(phase_dir))  # every rank calls it (FSDP gathers); the main one writes
        if is_main:
            (phase_dir / "training_args.bin").unlink(missing_ok=True)  # a pickle; the config is in config.yaml
            if carried_state is not None:
                save_optimizer_state(carried_state, phase_dir / OPTIMIZER_STATE_FILE)
            _save_companions(phase_dir, start.companions)
            append_jsonl_atomic(directory / "results.jsonl", record)
            for stale in phase_dir.glob("checkpoint-*"):
                remove_checkpoint(stale)
            push_finished_phases(config, directory)  # no-op unless push_to_hub; never raises
        results.append(record)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.barrier()
    if bar is not None:
        bar.close()
    return results


def read_results(directory: Path, repair: bool = False) -> list[dict[str, Any]]:
    """Finished phases of an arm, in order (results.jsonl). A phase counts only while the files the
    next phase starts from load: when the last finished phase's model (or optimizer state, or
    companion) is missing or truncated, that phase is dropped, with a warning, to be trained again;
    ``repair`` rewrites results.jsonl accordingly (main process)."""
    path = directory / "results.jsonl"
    records = read_jsonl(path, skip_partial_last_line=True)
    kept = list(records)
    while kept and not phase_files_readable(directory / f"phase-{kept[-1]['phase']:02d}"):
        logger.warning(
            "%s phase %d: its saved files are missing or truncated; it will be trained again.",
            directory.name,
            kept[-1]["phase"],
        )
        kept.pop()
    if repair and path.exists() and len(kept) != _line_count(path):  # dropped phases or a partial line
        atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in kept))
    return kept


def _line_count(path: Path) -> int:
    return sum(1 for line in path.read_text().splitlines() if line.strip())
