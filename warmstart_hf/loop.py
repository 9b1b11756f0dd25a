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
complete Trainer checkpoint. Only the main process writes; every process computes the same
strategies. The loop does not know what it trains: the recipe's task (``warmstart_hf/tasks``) builds,
loads and judges the phase models; the strategy decides where each phase starts.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import logging
import os
import time
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from safetensors.torch import save_file
from tqdm.auto import tqdm
from transformers import EarlyStoppingCallback, PrinterCallback, TrainingArguments

from warmstart_hf.checkpoints import (
    last_complete_checkpoint,
    phase_files_readable,
    remove_checkpoint,
    remove_stale_temporaries,
)
from warmstart_hf.config import (
    TRAINING_DEFAULTS,
    ConfigError,
    DataArguments,
    IncrementalArguments,
    ModelArguments,
    RecipeConfig,
    StrategyArguments,
)
from warmstart_hf.fast_path import to_channels_last
from warmstart_hf.graceful_stop import STOP
from warmstart_hf.hub import push_finished_phases
from warmstart_hf.io import (
    append_jsonl_atomic,
    atomic_write_json,
    atomic_write_text,
    give_ordinary_modes,
    read_jsonl,
)
from warmstart_hf.optimizer_state import load_optimizer_state, save_optimizer_state
from warmstart_hf.report.style import phase_label
from warmstart_hf.run_lock import locked_arms
from warmstart_hf.seeding import derive_seed
from warmstart_hf.strategies import PhaseContext, PhaseStart, Strategy, create_strategy, mixed_optimizer_policies
from warmstart_hf.tasks import Task, TaskData, create_task
from warmstart_hf.tracking import ArmTensorBoard, arm_tracker, trainer_report_to
from warmstart_hf.trainer import PhaseProgress, PhaseTrainer, PreDecaySnapshot, unwrap_optimizer_state

logger = logging.getLogger(__name__)

OPTIMIZER_STATE_FILE = "optimizer_state.safetensors"
# Record fields that measure this machine, not the experiment: they differ between identical runs.
MEASURED_FIELDS = ("train_seconds", "samples_per_second", "phase_seconds", "timing", "peak_memory_mb")


def prepare_data(config: RecipeConfig) -> TaskData:
    """The recipe's task prepares the data and the plan (nothing is written to the run directory)."""
    return create_task(config).prepare()


def _check_run_dir(config: RecipeConfig) -> None:
    """A run directory holds one experiment: refuse to mix results of two different settings. Read-only,
    so a refused command leaves the directory as it was."""
    saved = config.run_dir / "config.yaml"
    if not saved.exists():
        return
    changed = _changed_settings(yaml.safe_load(saved.read_text()) or {}, config)
    if changed:
        raise ConfigError(
            f"Run directory {str(config.run_dir)!r} already holds results of a different setting "
            f"(changed: {'; '.join(changed)}). Fix: run with the directory's settings (its config.yaml), or "
            "choose another `run_name` or `output_dir`, or delete that directory to start over."
        )


def _changed_settings(saved: dict[str, Any], config: RecipeConfig) -> list[str]:
    """``section.field: before -> now`` for every fingerprinted field that differs from the run
    directory's. A field the saved fingerprint lacks (it was written by a release whose fingerprint left
    the field out) is compared with the resolved recipe saved beside it, which records every field; a
    field neither holds (added to the package or to transformers since) with its default, the
    behaviour of the code that wrote the directory."""
    previous = saved.get("fingerprint") or {}
    current = yaml.safe_load(yaml.safe_dump(config.experiment_fingerprint()))
    defaults = None
    changed = []
    for section, values in current.items():
        for key, value in values.items():
            for source in (previous, saved):
                if key in (source.get(section) or {}):
                    before = source[section][key]
                    break
            else:
                defaults = defaults or _default_fingerprint()
                before = defaults.get(section, {}).get(key)
            if before != value:
                changed.append(f"{section}.{key}: {before!r} -> {value!r}")
    return sorted(changed)


def _default_fingerprint() -> dict[str, dict[str, Any]]:
    """The fingerprint of an empty recipe on one process (the package's and the project's defaults)."""
    sections = (DataArguments(), ModelArguments(), IncrementalArguments(), StrategyArguments())
    defaults = RecipeConfig(*sections, TrainingArguments(**TRAINING_DEFAULTS)).experiment_fingerprint()
    defaults["training"]["world_size"] = 1
    return yaml.safe_load(yaml.safe_dump(defaults))


def run_experiment(config: RecipeConfig) -> Path:
    """Run every arm of the recipe (skipping finished work) and write the summary. Nothing is created
    or touched in the run directory (no arm directory, no lock) before the command is accepted: the
    recipe is valid, the data prepares, and the settings match the directory's."""
    task = create_task(config)
    data = task.prepare()  # fails fast on bad input, before anything is written
    _check_run_dir(config)
    arms = [arm_dir(config, name) for name in config.incremental.strategies]
    with locked_arms(arms, is_main=config.training.process_index == 0), _collector_frozen():
        _run_arms(config, task, data)
    return config.run_dir


@contextmanager
def _collector_frozen():
    """The Trainer runs a full gc.collect() at the start of every train() (Accelerate's free_memory): over
    the libraries' and datasets' objects it took ~0.3 s a phase. They live for the whole run, so they are
    moved out of the collector's reach (after a collection, so no garbage of an earlier run is frozen with
    them); each phase's collection then scans only what phases made. Unfrozen when the run ends."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _run_arms(config: RecipeConfig, task: Task, data: TaskData) -> None:
    args = config.training
    is_main = args.process_index == 0
    if is_main:
        print(
            f"Run {config.run_dir}: task {task.name}, arms {config.incremental.strategies}, "
            f"{config.num_phases} phases, world_size={args.world_size}, device={args.device}"
        )
        mixed = mixed_optimizer_policies(config.incremental.strategies, config.strategy)
        if mixed:
            logger.warning(mixed)
            print(f"warning: {mixed}")
        record = {"fingerprint": config.experiment_fingerprint(), **config.to_dict()}
        atomic_write_text(config.run_dir / "config.yaml", yaml.safe_dump(record, sort_keys=False))
    for name in config.incremental.strategies:
        STOP.raise_if_requested(f"before arm {name}")
        run_arm(_Arm(config, task, create_strategy(name, config.strategy), data))
    if is_main:
        table = task.write_summary(config.run_dir)
        print(table)


def arm_dir(config: RecipeConfig, strategy_name: str) -> Path:
    return config.run_dir / f"{strategy_name}-seed{config.training.seed}"


@dataclass
class _Arm:
    """One strategy x seed of a run, and what its phases share."""

    config: RecipeConfig
    task: Task
    strategy: Strategy
    data: TaskData
    init_state: dict[str, torch.Tensor] = field(default_factory=dict)
    results: list[dict[str, Any]] = field(default_factory=list)
    bar: tqdm | None = None
    tracker: ArmTensorBoard | None = None  # report_to: tensorboard, one run for all phases

    @property
    def directory(self) -> Path:
        return arm_dir(self.config, self.strategy.name)

    @property
    def is_main(self) -> bool:
        return self.config.training.process_index == 0

    @property
    def seed(self) -> int:
        return self.config.training.seed


def run_arm(arm: _Arm) -> list[dict[str, Any]]:
    """Train one strategy through every phase; returns the arm's results (one dict per phase)."""
    directory, num_phases = arm.directory, arm.data.plan.num_phases
    if arm.is_main:
        remove_stale_temporaries(directory)  # the arm is locked: nobody else is writing them
    arm.results = read_results(directory, repair=arm.is_main)
    if len(arm.results) >= num_phases:
        logger.info("arm %s is finished; skipping", directory.name)
        if arm.is_main:
            push_finished_phases(arm.config, directory)  # completes pushes a failed run left pending
        return arm.results
    model, carried_state = _arm_start(arm)
    arm.bar = _progress_bar(arm)
    arm.tracker = arm_tracker(arm.config, directory, arm.is_main)
    try:
        for phase in range(len(arm.results), num_phases):
            model, carried_state = _run_phase(arm, phase, model, carried_state)
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                torch.distributed.barrier()
    finally:
        if arm.tracker is not None:
            arm.tracker.close()
    if arm.bar is not None:
        arm.bar.close()
    return arm.results


def _arm_start(arm: _Arm) -> tuple[torch.nn.Module, dict[str, Any] | None]:
    """theta0 (recorded once), and the model and optimizer state the first unfinished phase starts from."""
    directory, plan = arm.directory, arm.data.plan
    split_path = directory / "split.json"
    if split_path.exists() and type(plan).load(split_path) != plan:
        raise RuntimeError(f"{split_path} differs from the plan this code computes for seed {arm.seed}.")
    init_model = arm.task.initial_model(arm.data, arm.seed)
    arm.init_state = {k: v.detach().clone() for k, v in init_model.state_dict().items()}
    if arm.is_main:
        if not split_path.exists():
            atomic_write_json(split_path, plan.to_json())
        if not phase_files_readable(directory / "init"):
            arm.task.save_initial_model(init_model, directory / "init")
    if not arm.results:
        return init_model, None
    previous_dir = directory / f"phase-{len(arm.results) - 1:02d}"
    carried = None
    if arm.strategy.carries_optimizer_state() and (previous_dir / OPTIMIZER_STATE_FILE).exists():
        carried = load_optimizer_state(previous_dir / OPTIMIZER_STATE_FILE)
    return _continuation(arm, previous_dir, arm.task.load_model(previous_dir)), carried


def _progress_bar(arm: _Arm) -> tqdm | None:
    if not arm.is_main:
        return None
    args, inc = arm.config.training, arm.config.incremental
    uniform = args.num_train_epochs if args.max_steps <= 0 else 1
    epochs = [int(np.ceil(e)) for e in inc.phase_epochs or [uniform] * arm.data.plan.num_phases]
    return tqdm(total=sum(epochs), initial=sum(epochs[: len(arm.results)]), desc=arm.directory.name)


def _run_phase(arm: _Arm, phase: int, model, carried_state) -> tuple[torch.nn.Module, dict[str, Any] | None]:
    """Start the phase (strategy), train it, record it, save it; returns what the next phase needs."""
    timer = _PhaseTimer()
    phase_dir = arm.directory / f"phase-{phase:02d}"
    train = arm.task.train_dataset(arm.data, phase)
    STOP.raise_if_requested(f"before {arm.directory.name} phase {phase}")
    checkpoint = last_complete_checkpoint(phase_dir, remove_incomplete=arm.is_main)
    with timer("start"):  # the strategy and the start-of-phase measurements, on the training device
        previous = _param_vector(model) if phase > 0 else None
        model, start, start_record = _start_phase(arm, phase, model, train, checkpoint, previous)
    diagnose = arm.config.incremental.diagnostics and arm.is_main
    with timer("diagnostics"):
        start_diagnostics = arm.task.start_diagnostics(model, arm.data, phase) if diagnose else {}
    optimizer_state = carried_state if start.carry_optimizer_state else None
    with timer("setup"):  # the Trainer, and the phase's data collated onto the device
        trainer = _phase_trainer(arm, phase, phase_dir, train, model, start, optimizer_state)
    with timer("train"):
        trainer.train(resume_from_checkpoint=checkpoint)
    STOP.raise_if_requested(f"at step {trainer.state.global_step} of {arm.directory.name} phase {phase}")
    with timer("evaluate"):
        record = _phase_record(arm, phase, trainer, train, start, start_record, checkpoint, timer.seconds["train"])
        if arm.is_main and start.companions:
            record["companions"] = {
                name: arm.task.companion_metrics(companion, arm.data, phase, train)
                for name, companion in start.companions.items()
            }
    with timer("diagnostics"):
        if diagnose:
            end = arm.task.end_diagnostics(model, arm.data, phase, train, init_state=arm.init_state, previous=previous)
            record["diagnostics"] = {**end, **start_diagnostics}
    carried_state = unwrap_optimizer_state(trainer.optimizer) if arm.strategy.carries_optimizer_state() else None
    with timer("save"):
        _save_phase_files(arm, phase_dir, trainer, carried_state, start.companions)
    record.update(timer.record())
    _commit_phase(arm, phase_dir, record)
    trainer.release_resident()
    return _continuation(arm, phase_dir, model), carried_state


def _continuation(arm: _Arm, phase_dir: Path, model):
    """What the next phase continues from: the phase's end, or (``warm_continues_from: pre_decay``) its
    model before the learning rate decayed."""
    if arm.config.incremental.warm_continues_from != "pre_decay":
        return model
    return arm.task.load_model(phase_dir / PreDecaySnapshot.DIRECTORY)


class _PhaseTimer:
    """Wall seconds of a phase's parts (``timing`` in its record), from its start; and its peak memory.

    Not the Trainer's metrics (``train_runtime``, ``skip_memory_metrics=False``): they cover only the
    Trainer's own stages (not the strategy's start, the diagnostics or the save), report memory as deltas
    from each stage's start, reset the GPU's peak counter when training starts (losing the phase's start)
    and poll the CPU's resident size in a busy thread that occupies a core for the whole phase."""

    def __init__(self):
        self.started = time.perf_counter()
        self.seconds: dict[str, float] = {}
        _reset_peak_memory()

    @contextmanager
    def __call__(self, part: str):
        began = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[part] = self.seconds.get(part, 0.0) + time.perf_counter() - began

    def record(self) -> dict[str, Any]:
        return {
            "phase_seconds": round(time.perf_counter() - self.started, 3),  # up to the results line
            "timing": {part: round(seconds, 3) for part, seconds in self.seconds.items()},
            "peak_memory_mb": _peak_memory_mb(),
        }


def _start_phase(arm: _Arm, phase: int, model, train, checkpoint, previous) -> tuple[torch.nn.Module, PhaseStart, dict]:
    """The strategy's start of the phase, on the training device, and what the record says of it."""
    model = _on_training_device(arm, model)  # strategies and diagnostics compute where training will
    start = arm.strategy.prepare(_phase_context(arm, phase, model, train, checkpoint))
    model = _on_training_device(arm, start.model)
    distance = float(torch.linalg.vector_norm(_param_vector(model) - previous)) if previous is not None else None
    start_record = {"start_distance_to_previous": distance, **arm.task.start_record(model, arm.data, phase)}
    return model, start, start_record


def _phase_context(arm: _Arm, phase: int, model, train, checkpoint: str | None) -> PhaseContext:
    directory, plan = arm.directory, arm.data.plan
    return PhaseContext(
        phase=phase,
        num_phases=plan.num_phases,
        previous_model=model,
        fresh_model=lambda p=phase: arm.task.fresh_model(arm.data, arm.seed, p),
        init_state=arm.init_state,
        train_dataset=train,
        new_indices=plan.chunks[phase],
        seed=derive_seed(arm.seed, "strategy", phase),
        options=arm.config.strategy,
        previous_phase_dir=directory / f"phase-{phase - 1:02d}" if phase > 0 else None,
        resume_checkpoint=checkpoint,
        eval_transform=arm.task.eval_transform(arm.data) if hasattr(arm.task, "eval_transform") else None,
    )


def _phase_trainer(arm: _Arm, phase: int, phase_dir: Path, train, model, start: PhaseStart, optimizer_state):
    inc, num_phases = arm.config.incremental, arm.data.plan.num_phases
    callbacks = [PhaseProgress(arm.bar, phase_label(phase, num_phases)), *start.callbacks]
    if inc.stop_rule == "early_stopping" and inc.early_stopping_patience:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=inc.early_stopping_patience))
    continued = inc.lr_schedule_across_phases == "continue"
    options = arm.task.trainer_options(arm.data, phase)
    callbacks += options.pop("callbacks", [])
    if arm.tracker is not None:
        callbacks.append(arm.tracker.start_phase(phase, sum(r["steps"] for r in arm.results[:phase])))
    pre_decay = inc.warm_continues_from == "pre_decay"
    trainer = PhaseTrainer(
        model=model,
        args=_phase_training_args(arm.config, arm.task, phase_dir, phase),
        train_dataset=train,
        stop_train_accuracy=inc.stop_train_accuracy if inc.stop_rule == "train_accuracy" else None,
        warmup_epochs=inc.warmup_epochs,
        epoch_offset=sum(r["epochs"] for r in arm.results[:phase]) if continued else 0.0,
        lr_milestones=inc.lr_milestones,
        lr_gamma=inc.lr_gamma,
        weight_decay_scope=inc.weight_decay_scope,
        initial_optimizer_state=optimizer_state,
        regularizer=start.regularizer,
        callbacks=callbacks,
        data_on_device=_data_on_device(arm, train),
        channels_last=inc.channels_last,
        fused_optimizer=inc.fused_optimizer,
        save_interval_minutes=inc.save_interval_minutes,
        lr_decay_fraction=inc.lr_decay_fraction,
        **options,
    )
    if pre_decay:
        trainer.add_callback(PreDecaySnapshot(trainer))
    trainer.remove_callback(PrinterCallback)
    if arm.bar is not None:
        arm.bar.set_description(f"{arm.directory.name} {phase_label(phase, num_phases)}")
    return trainer


def _phase_record(arm: _Arm, phase, trainer, train, start: PhaseStart, start_record, checkpoint, seconds) -> dict:
    """The phase's line in results.jsonl: the task's metrics and the loop's accounting."""
    inc, state = arm.config.incremental, trainer.state
    epochs = float(state.epoch or 0.0)
    record: dict[str, Any] = {
        "phase": phase,
        "task": arm.task.name,
        "strategy": arm.strategy.name,
        "seed": arm.seed,
        "scenario": arm.data.plan.scenario,
        **arm.task.phase_metrics(trainer, arm.data, phase, train),
        **start_record,
        "strategy_stats": start.stats,
        "optimizer_state": arm.strategy.optimizer_policy(),
        "epochs": epochs,
        "steps": int(state.global_step),
        "train_seconds": round(seconds, 3),
        "samples_per_second": round(len(train) * epochs / seconds, 2) if seconds > 0 else None,
        "resumed_from_checkpoint": checkpoint is not None,
        "stop_rule": inc.stop_rule,
        "curve": _curve(state.log_history),
    }
    if inc.stop_rule == "early_stopping":
        record["best_validation_accuracy"] = state.best_metric
        record["best_step"] = state.best_global_step
    return record


def _save_phase_files(arm: _Arm, phase_dir: Path, trainer, carried_state, companions) -> None:
    """The phase's model (every rank calls it: FSDP gathers; the main one writes), optimizer state and
    companions."""
    arm.task.save_phase_model(trainer, phase_dir)
    if not arm.is_main:
        return
    (phase_dir / "training_args.bin").unlink(missing_ok=True)  # a pickle; the config is in config.yaml
    if carried_state is not None:
        save_optimizer_state(carried_state, phase_dir / OPTIMIZER_STATE_FILE)
    _save_companions(phase_dir, companions)
    give_ordinary_modes(phase_dir.glob("*.safetensors"))  # safetensors writes its files 0600


def _commit_phase(arm: _Arm, phase_dir: Path, record: dict[str, Any]) -> None:
    """The phase's results line (the commit point), then cleanup and the Hub push."""
    arm.results.append(record)
    if not arm.is_main:
        return
    append_jsonl_atomic(arm.directory / "results.jsonl", record)
    if arm.tracker is not None:
        arm.tracker.end_phase(record)
    for stale in phase_dir.glob("checkpoint-*"):
        remove_checkpoint(stale)
    push_finished_phases(arm.config, arm.directory)  # no-op unless push_to_hub; never raises


def _on_training_device(arm: _Arm, model: torch.nn.Module) -> torch.nn.Module:
    """The model on the device the Trainer will train it on, before the strategy and the start-of-phase
    diagnostics run (a model built or loaded on the CPU would otherwise be probed there: a phase-0 or
    cold start on a GPU stalled ~46 s). Under FSDP or DeepSpeed the Trainer places the model itself."""
    args = arm.config.training
    if args.fsdp or args.deepspeed:
        return model
    model = model.to(args.device)
    return to_channels_last(model) if arm.config.incremental.channels_last else model


def _data_on_device(arm: _Arm, train) -> bool:
    """``data_on_device``: always / never, or (auto) when the phase's decoded images fit in a quarter of
    the training device's memory (the GPU's, or this machine's RAM)."""
    mode, args = arm.config.incremental.data_on_device, arm.config.training
    if mode != "auto":
        return mode == "always"
    if arm.config.data.decode == "lazy" or "pixel_values" not in (train.features or {}):
        return False
    size = len(train) * int(np.prod(train.features["pixel_values"].shape))
    if args.device.type == "cuda":
        memory = torch.cuda.get_device_properties(args.device).total_memory
    else:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return size <= memory // 4


def _reset_peak_memory() -> None:
    """Start a phase's peak: the GPU allocator's, or (Linux) the process's peak resident size, which
    writing 5 to /proc/self/clear_refs resets (so a phase's CPU figure is its own, not the run's)."""
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
        return
    with suppress(OSError):  # not Linux, or not allowed: the figure is then the process's peak so far
        Path("/proc/self/clear_refs").write_text("5")


def _peak_memory_mb() -> float:
    """Peak GPU memory allocated during the phase, or (on CPU) the process's peak resident size since
    the phase started (VmHWM)."""
    if torch.cuda.is_available():
        return round(torch.cuda.max_memory_allocated() / 2**20, 1)
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)  # kB
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # kilobytes on Linux


def _param_vector(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1).float() for p in model.parameters()]).cpu()  # one copy to the host


def _phase_training_args(config: RecipeConfig, task: Task, phase_dir: Path, phase: int) -> TrainingArguments:
    seed = config.training.seed
    inc = config.incremental
    extra: dict[str, Any] = {}
    if inc.track_test_curve or inc.stop_rule == "early_stopping":
        extra["eval_strategy"] = "epoch"
    if inc.stop_rule == "early_stopping":  # best-epoch reload needs a checkpoint at every evaluation
        extra.update(
            save_strategy="epoch",
            load_best_model_at_end=True,
            metric_for_best_model=task.best_metric,
            greater_is_better=True,
        )
    if inc.phase_epochs:
        extra["num_train_epochs"] = inc.phase_epochs[phase]
    accelerate = config.training.accelerator_config
    if accelerate.non_blocking and not config.training.dataloader_pin_memory:  # CPU: nothing to overlap
        extra["accelerator_config"] = dataclasses.replace(accelerate, non_blocking=False)
    return dataclasses.replace(
        config.training,
        output_dir=str(phase_dir),
        seed=derive_seed(seed, "train", phase),  # data order + augmentation; shared by all arms
        run_name=f"{config.training.run_name}-{phase_dir.parent.name}-{phase_dir.name}",
        push_to_hub=False,  # the recipe's push_to_hub is handled per phase by warmstart_hf.hub, not the Trainer
        report_to=trainer_report_to(config.training.report_to),  # tensorboard: one run per arm (tracking.py)
        **extra,
    )


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


def _save_companions(phase_dir: Path, companions: dict[str, torch.nn.Module]) -> None:
    for name, module in companions.items():
        tensors = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
        save_file(tensors, str(phase_dir / f"{name}.safetensors"))


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
