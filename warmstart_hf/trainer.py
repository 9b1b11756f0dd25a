"""The Trainer subclass that runs one phase.

It adds to ``transformers.Trainer`` only what the references need: batched augmentation on the
device inside the training step (and an evaluation view, e.g. a centre crop, in prediction) or, on the
worker path, the training loader reading the phase's rows through a per-sample training view, a
multi-step learning-rate schedule (x gamma at given epochs, as in the target study), weight decay on
every parameter (the CIFAR references' rule), an optional optimizer state carried over from the
previous phase, a strategy's regularizer added to the loss, and (optionally) a training loss over
the logits of the classes seen so far. Everything else (devices, DDP/FSDP, mixed precision,
checkpoints, resume, logging) is the Trainer's own.
"""

from __future__ import annotations

import bisect
import json
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors import safe_open
from torch.optim.lr_scheduler import LambdaLR
from torch.utils._pytree import tree_map
from tqdm.auto import tqdm
from transformers import PreTrainedModel, Trainer, TrainerCallback

from warmstart_hf.checkpoints import COMPLETE_MARKER, mark_complete, prune_checkpoints, save_pretrained_atomic
from warmstart_hf.data.augment import BatchTransform
from warmstart_hf.distributed import broadcast_module, max_over_ranks
from warmstart_hf.fast_path import channels_last_batch, fused
from warmstart_hf.graceful_stop import STOP, StopAtStepBoundary, stopped_at_epoch_end
from warmstart_hf.optimizer_state import apply_optimizer_state

RUNNING_ACCURACY_FILE = "running_train_accuracy-rank{rank}.json"  # saved into each Trainer checkpoint


class PhaseTrainer(Trainer):
    loss_is_scaled_for_ga = False  # see __init__

    def __init__(
        self,
        *args: Any,
        augment: BatchTransform | None = None,
        eval_transform: BatchTransform | None = None,
        lr_milestones: list[float] | None = None,
        lr_gamma: float = 0.1,
        weight_decay_scope: str = "all",
        initial_optimizer_state: dict[str, Any] | None = None,
        regularizer: Callable[[torch.nn.Module], torch.Tensor] | None = None,
        stop_train_accuracy: float | None = None,
        warmup_epochs: float = 0.0,
        epoch_offset: float = 0.0,
        loss_classes: list[int] | None = None,
        optimizer_factory: Callable[[torch.nn.Module], torch.optim.Optimizer] | None = None,
        batch_mix: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None,
        data_on_device: bool = False,
        channels_last: bool = False,
        fused_optimizer: bool = False,
        save_interval_minutes: float = 0.0,
        train_rows: Callable[[Any], Any] | None = None,
        running_accuracy: bool = True,
        lr_decay_fraction: float = 0.2,
        **kwargs: Any,
    ):
        super().__init__(*args, **kwargs)
        # Every loss this trainer computes is a per-device batch mean (plus a regularizer): the Trainer
        # must divide it by the accumulation steps and DDP averages it over processes, so one optimizer
        # step is the same update for 1 x B, N x B/N and B/k x k accumulation, whatever the model says.
        self.model_accepts_loss_kwargs = False
        self.augment = augment
        self.eval_transform = eval_transform  # the evaluation view of stored images (e.g. resize + centre crop)
        self.lr_milestones = list(lr_milestones or [])
        self.lr_gamma = lr_gamma
        self.weight_decay_scope = weight_decay_scope
        self.initial_optimizer_state = initial_optimizer_state
        self.regularizer = regularizer
        self.stop_train_accuracy = stop_train_accuracy
        self.warmup_epochs = warmup_epochs
        self.epoch_offset = epoch_offset  # epochs of earlier phases, for a schedule continued across phases
        self.loss_classes = loss_classes  # train on logits masked to these classes (Dohare et al.)
        self.optimizer_factory = optimizer_factory  # a task's own optimizer (the MAE probe's LARS)
        self.batch_mix = batch_mix  # (images, labels) -> (mixed images, soft targets): mixup / cutmix
        self.channels_last = channels_last  # fast path: NHWC batches (the loop converts the model)
        self.fused_optimizer = fused_optimizer  # fast path: torch's fused optimizer kernel
        # The worker path: the training loader reads the phase's rows through the training view (made in the
        # DataLoader workers); prediction and diagnostics read the same rows as their evaluation view.
        self.train_rows = train_rows
        # The epoch's running accuracy of labelled classification batches (the stop rules read it); a
        # language model's labels are its inputs, and an argmax over its vocabulary each step is waste.
        self.running_accuracy = running_accuracy
        self.lr_decay_fraction = lr_decay_fraction  # warmup_stable_decay: the decaying share of the steps
        self.decay_start_step: int | None = None  # warmup_stable_decay: the last step before the decay
        self._correct = torch.zeros((), dtype=torch.long)
        self._seen = torch.zeros((), dtype=torch.long)
        # The phase's training batches, collated once and held on the training device; the DataLoader then
        # yields only indices (same sampler, sharding and resume as rows would have).
        self.resident = (
            resident_batches(self.train_dataset, self.data_collator, self.args.device) if data_on_device else None
        )
        self._evaluated: dict[int, dict[str, torch.Tensor]] = {}  # resident evaluation sets, by dataset
        self._gather_from: dict[str, torch.Tensor] | None = None  # the set the current prediction loop reads
        self.add_callback(_EpochTrainAccuracy(self))
        self.add_callback(StopAtStepBoundary())
        self.add_callback(_SavePolicy(60 * save_interval_minutes))  # last: it sees every other callback's save request

    def get_train_dataloader(self):
        if self.train_rows is not None:
            dataset = self.train_dataset
            self.train_dataset = self.train_rows(dataset)
            try:
                return super().get_train_dataloader()
            finally:
                self.train_dataset = dataset
        if self.resident is None:
            return super().get_train_dataloader()
        dataset, collator = self.train_dataset, self.data_collator
        self.train_dataset, self.data_collator = _Indices(len(dataset)), _collate_indices
        try:
            with _no_workers(self.args):
                return super().get_train_dataloader()
        finally:
            self.train_dataset, self.data_collator = dataset, collator

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if model.training and self._cuda_graphs():
            torch.compiler.cudagraph_mark_step_begin()  # CUDA graphs: the previous step's outputs are consumed
        if "index" in inputs:  # the device-resident path: gather the batch where it lives
            inputs = {key: values[inputs["index"]] for key, values in self.resident.items()}
        if model.training and self.augment is not None:
            inputs = {**inputs, "pixel_values": self.augment(inputs["pixel_values"])}
        if self.channels_last:
            inputs = {**inputs, "pixel_values": channels_last_batch(inputs["pixel_values"])}
        if model.training and self.batch_mix is not None:
            images, targets = self.batch_mix(inputs["pixel_values"], inputs["labels"])
            outputs = model(pixel_values=images)
            loss = outputs.loss = torch.sum(-targets * F.log_softmax(outputs.logits.float(), dim=-1), dim=-1).mean()
        elif model.training and self.loss_classes is not None:
            outputs = model(pixel_values=inputs["pixel_values"])
            outputs.logits = mask_unseen_logits(outputs.logits, self.loss_classes)
            loss = outputs.loss = F.cross_entropy(outputs.logits.float(), inputs["labels"])
        else:
            # a copy: with label_smoothing_factor the Trainer pops the labels from the dict it gets
            loss, outputs = super().compute_loss(model, dict(inputs), True, num_items_in_batch=num_items_in_batch)
        if model.training and self.running_accuracy and "labels" in inputs:  # the epoch's, synced once per epoch
            labels = inputs["labels"]
            self._correct = self._correct.to(labels.device) + (outputs.logits.argmax(-1) == labels).sum()
            self._seen = self._seen.to(labels.device) + labels.numel()
        if model.training and self.regularizer is not None:
            # On the unwrapped model: the same parameters DDP reduces, identical on every rank.
            loss = loss + self.regularizer(self.model)
        return (loss, outputs) if return_outputs else loss

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        if "index" in inputs:  # a resident evaluation set: gather the batch where it lives
            index = inputs["index"].to(self.args.device)
            inputs = {key: values[index] for key, values in self._gather_from.items()}
        if self.eval_transform is not None:  # on the device (moving inputs twice is a no-op)
            inputs = self._prepare_inputs(inputs)
            inputs = {**inputs, "pixel_values": self.eval_transform(inputs["pixel_values"])}
        if self.channels_last and "pixel_values" in inputs:
            inputs = {**inputs, "pixel_values": channels_last_batch(inputs["pixel_values"])}
        if not self._cuda_graphs():
            return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys=ignore_keys)
        # CUDA graphs reuse their output memory at the next replay, and the prediction loop keeps the
        # first batch's logits by reference: each prediction is copied out of the graph's memory.
        torch.compiler.cudagraph_mark_step_begin()
        outputs = super().prediction_step(model, inputs, prediction_loss_only, ignore_keys=ignore_keys)
        return tuple(tree_map(lambda t: t.clone() if isinstance(t, torch.Tensor) else t, out) for out in outputs)

    def _cuda_graphs(self) -> bool:
        return bool(self.args.torch_compile) and self.args.torch_compile_mode == "reduce-overhead"

    def _save_checkpoint(self, model, trial):
        """The Trainer's checkpoint, then every callback's extras (``write_checkpoint(folder, args)``),
        then the completeness marker, and only then the rotation of older checkpoints: a process
        killed at any point leaves the previous complete checkpoint in place."""
        limit = self.args.save_total_limit
        folder = Path(self._get_output_dir(trial=trial)) / f"checkpoint-{self.state.global_step}"
        (folder / COMPLETE_MARKER).unlink(missing_ok=True)  # rewriting a checkpoint: incomplete until marked again
        self.args.save_total_limit = None  # no rotation before this checkpoint is complete
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self.args.save_total_limit = limit
        folder.mkdir(parents=True, exist_ok=True)
        for callback in self.callback_handler.callbacks:
            if hasattr(callback, "write_checkpoint"):
                callback.write_checkpoint(folder, self.args)
        self.accelerator.wait_for_everyone()  # every rank's files are written
        if self.args.should_save:
            mark_complete(folder, self.state.global_step)
            prune_checkpoints(folder.parent, limit, {self.state.best_model_checkpoint})

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        """Resume with every weight restored. transformers saves some models under other key names than
        they hold in memory (ViTMAE's attention: ``attention.attention.query`` on disk, ``q_proj`` in
        memory), and the Trainer loads a checkpoint's keys non-strictly, silently skipping those: such a
        model is read through its own ``from_pretrained`` (which maps the names), then loaded strictly."""
        target = model if model is not None else self.model
        weights = Path(resume_from_checkpoint) / "model.safetensors"
        if self.is_fsdp_enabled or not weights.exists() or not isinstance(target, PreTrainedModel):
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        with safe_open(str(weights), "pt") as saved:
            if set(saved.keys()) == set(target.state_dict()):
                return super()._load_from_checkpoint(resume_from_checkpoint, model)
        loaded = type(target).from_pretrained(resume_from_checkpoint)
        target.load_state_dict(loaded.state_dict(), strict=True)

    def get_eval_dataloader(self, eval_dataset=None):
        dataset = self.eval_dataset if eval_dataset is None else eval_dataset
        dataset = self.eval_dataset[dataset] if isinstance(dataset, str) else dataset
        with _keep_last_batch(self.args):
            if self.resident is None:
                return super().get_eval_dataloader(eval_dataset)
            return self._resident_loader(dataset, super().get_eval_dataloader)

    def get_test_dataloader(self, test_dataset):
        with _keep_last_batch(self.args):
            if self.resident is None:
                return super().get_test_dataloader(test_dataset)
            return self._resident_loader(test_dataset, super().get_test_dataloader)

    def _resident_loader(self, dataset, make):
        """With the training data on the device, evaluation sets go there too (collated once per set and
        phase; the training set's own tensors serve its prediction); the loader then yields indices."""
        if dataset is self.train_dataset:
            self._gather_from = self.resident
        else:
            if id(dataset) not in self._evaluated:
                self._evaluated[id(dataset)] = resident_batches(dataset, self.data_collator, self.args.device)
            self._gather_from = self._evaluated[id(dataset)]
        collator = self.data_collator
        self.data_collator = _collate_indices
        try:
            with _no_workers(self.args):
                return make(_Indices(len(dataset)))
        finally:
            self.data_collator = collator

    def release_resident(self) -> None:
        """Free the phase's device-resident tensors now, not when the GC collects the trainer."""
        self.resident, self._evaluated, self._gather_from = None, {}, None

    def _get_grad_norm(self, model, grad_norm=None):
        """Without clipping, the Trainer still computes the gradient norm every step, only to log it (a
        full pass over the gradients: ~1 ms a step for the MAE demo on CPU); this trainer logs it only
        when clipping computes it anyway."""
        if grad_norm is None and self.args.max_grad_norm <= 0:
            return None
        return super()._get_grad_norm(model, grad_norm=grad_norm)

    def get_decay_parameter_names(self, model) -> list[str]:
        if self.weight_decay_scope == "all":
            return [name for name, _ in model.named_parameters()]
        return super().get_decay_parameter_names(model)

    def create_optimizer(self, model=None):
        fresh = self.optimizer is None
        if fresh and self.optimizer_factory is not None:
            self.optimizer = self.optimizer_factory(self.model)
        optimizer = super().create_optimizer(model)
        if fresh and self.fused_optimizer:
            self.optimizer = optimizer = fused(optimizer)
        if fresh and self.initial_optimizer_state is not None:
            # A resumed phase then loads its own checkpoint's optimizer on top of this.
            apply_optimizer_state(optimizer, self.initial_optimizer_state)
        return optimizer

    def train(self, resume_from_checkpoint=None, **kwargs):
        if resume_from_checkpoint:  # the running accuracy of the interrupted epoch continues too
            saved = Path(resume_from_checkpoint) / RUNNING_ACCURACY_FILE.format(rank=self.args.process_index)
            if saved.exists():
                counts = json.loads(saved.read_text())
                self._correct = torch.tensor(counts["correct"])
                self._seen = torch.tensor(counts["seen"])
        output = super().train(resume_from_checkpoint=resume_from_checkpoint, **kwargs)
        broadcast_module(self.model)  # every rank ends with rank 0's BatchNorm statistics (the saved model)
        return output

    def epoch_train_accuracy(self) -> float | None:
        """The running training accuracy of the epoch that just ended (all processes), then reset.

        Measured on the batches as trained (augmented), as the stop rules of Ash & Adams and DASH do."""
        counts = torch.stack([self._correct, self._seen]).to(self.args.device)
        counts = self.accelerator.reduce(counts, reduction="sum")
        self._correct = torch.zeros((), dtype=torch.long)
        self._seen = torch.zeros((), dtype=torch.long)
        return float(counts[0]) / float(counts[1]) if counts[1] else None  # None: no labelled batch (pretraining)

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        custom = self.lr_milestones or self.warmup_epochs > 0 or self.epoch_offset > 0
        if not custom and self.args.lr_scheduler_type.value == "warmup_stable_decay":
            return self._wsd_scheduler(num_training_steps, optimizer)
        if not custom:
            return super().create_scheduler(num_training_steps, optimizer)
        if self.lr_scheduler is None:
            epochs = self.args.num_train_epochs if self.args.max_steps <= 0 else None
            steps_per_epoch = num_training_steps / epochs if epochs else len(self.get_train_dataloader())
            milestones = sorted(self.lr_milestones)
            warmup_steps = self.args.get_warmup_steps(num_training_steps)
            warmup_epochs, offset, gamma = self.warmup_epochs, self.epoch_offset, self.lr_gamma

            # A LambdaLR over a closed-form factor, not torch's SequentialLR(LinearLR, MultiStepLR) or timm's
            # schedulers: the warm-up starts at LR 0 (LinearLR refuses start_factor 0), milestones and warm-up
            # are in epochs of fractional steps, a continued schedule starts part-way (epoch_offset may fall
            # inside the warm-up or past milestones), and the Trainer's warmup_steps multiplies in; the factor
            # of the step alone also makes a resumed phase's LR exactly the uninterrupted one's.
            def factor(step: int) -> float:
                epoch = offset + step / steps_per_epoch  # global epoch when the schedule continues
                ramp = step / max(1, warmup_steps) if step < warmup_steps else 1.0
                if warmup_epochs > 0 and epoch < warmup_epochs:
                    ramp *= epoch / warmup_epochs
                return ramp * gamma ** bisect.bisect_right(milestones, epoch + 1e-9)

            self.lr_scheduler = LambdaLR(optimizer or self.optimizer, factor)
            self._created_lr_scheduler = True
        return self.lr_scheduler

    def _wsd_scheduler(self, num_training_steps: int, optimizer=None):
        """transformers' warmup-stable-decay schedule with its decay over the last ``lr_decay_fraction`` of
        this phase's steps (its own kwargs take a step count, which differs per phase)."""
        decay = round(self.lr_decay_fraction * num_training_steps)
        self.decay_start_step = num_training_steps - decay
        kwargs = self.args.lr_scheduler_kwargs
        self.args.lr_scheduler_kwargs = {"num_decay_steps": decay, **(kwargs or {})}
        try:
            return super().create_scheduler(num_training_steps, optimizer)
        finally:
            self.args.lr_scheduler_kwargs = kwargs


class PreDecaySnapshot(TrainerCallback):
    """warmup_stable_decay with ``warm_continues_from: pre_decay``: the model at the last step before the
    decay, as ``<phase dir>/pre_decay`` (main process): where the next phase's warm arm continues."""

    DIRECTORY = "pre_decay"

    def __init__(self, trainer: PhaseTrainer):
        self.trainer = trainer

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        return self._save_at(0, args, state, control, model) if state.global_step == 0 else control

    def on_step_end(self, args, state, control, model=None, **kwargs):
        return self._save_at(state.global_step, args, state, control, model)

    def _save_at(self, step: int, args, state, control, model):
        if step == self.trainer.decay_start_step and args.should_save and model is not None:
            save_pretrained_atomic(model, Path(args.output_dir) / self.DIRECTORY)
        return control


class _Indices(torch.utils.data.Dataset):
    """0 .. n-1: what the DataLoader batches on the device-resident path."""

    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return i


def _collate_indices(indices: list[int]) -> dict[str, torch.Tensor]:
    return {"index": torch.as_tensor(indices, dtype=torch.long)}


def resident_batches(dataset, collator, device, chunk: int = 512) -> dict[str, torch.Tensor]:
    """The collator's output over the whole dataset (read in chunks), on ``device``: uint8 images and
    labels, exactly what the per-row path would have collated."""
    parts: dict[str, list[torch.Tensor]] = {}
    for start in range(0, len(dataset), chunk):
        columns = dataset[start : start + chunk]
        rows = [dict(zip(columns, values)) for values in zip(*columns.values())]
        for key, value in collator(rows).items():
            parts.setdefault(key, []).append(value)
    return {key: torch.cat(values).to(device) for key, values in parts.items()}


def mask_unseen_logits(logits: torch.Tensor, seen: list[int]) -> torch.Tensor:
    """Logits with every class outside ``seen`` set to -inf: the softmax and its gradient then cover the
    seen classes only, as Dohare et al.'s slicing of the output to the classes learned so far."""
    keep = torch.zeros(logits.shape[-1], dtype=torch.bool, device=logits.device)
    keep[torch.as_tensor(seen, device=logits.device)] = True
    return logits.masked_fill(~keep, float("-inf"))


@contextmanager
def _no_workers(args):
    """A loader of indices needs no worker processes: they would only batch integers, and each epoch
    would fork them again at every epoch (each a copy of the whole process).
    The sampler runs in the main process either way, so the batches are the same."""
    saved = args.dataloader_num_workers, args.dataloader_persistent_workers, args.dataloader_prefetch_factor
    args.dataloader_num_workers, args.dataloader_persistent_workers, args.dataloader_prefetch_factor = 0, False, None
    try:
        yield
    finally:
        args.dataloader_num_workers, args.dataloader_persistent_workers, args.dataloader_prefetch_factor = saved


@contextmanager
def _keep_last_batch(args):
    """``dataloader_drop_last`` is for training batches; evaluation must see every example."""
    dropping = args.dataloader_drop_last
    args.dataloader_drop_last = False
    try:
        yield
    finally:
        args.dataloader_drop_last = dropping


class _EpochTrainAccuracy(TrainerCallback):
    """Logs each epoch's running train accuracy (kept in the Trainer's log history, so it survives a
    resume) and applies the train-accuracy stop rule."""

    def __init__(self, trainer: PhaseTrainer):
        self.trainer = trainer

    def write_checkpoint(self, folder: Path, args) -> None:
        counts = {"correct": int(self.trainer._correct), "seen": int(self.trainer._seen)}
        (folder / RUNNING_ACCURACY_FILE.format(rank=args.process_index)).write_text(json.dumps(counts))

    def on_epoch_end(self, args, state, control, **kwargs):
        if STOP.agreed and not stopped_at_epoch_end(state):
            return control  # stopped mid-epoch by a signal: the epoch goes on when the run resumes
        accuracy = self.trainer.epoch_train_accuracy()
        if accuracy is None:
            return control
        state.log_history.append({"epoch": state.epoch, "step": state.global_step, "train_accuracy_running": accuracy})
        threshold = self.trainer.stop_train_accuracy
        if threshold is not None and accuracy >= threshold:
            control.should_training_stop = True
        return control


class _SavePolicy(TrainerCallback):
    """When the Trainer's checkpoints are written.

    - A checkpoint due at the last step of an epoch (or of training) is written after the epoch's
      end-of-epoch work (running train accuracy, stop rule, evaluation), not before it: a run resumed
      from it would otherwise start the next epoch without that epoch's record.
    - ``interval_seconds`` (``save_interval_minutes``): a due checkpoint is skipped unless that long
      has passed since the last one (or the phase's start). At the CIFAR-100 protocol on a GPU an
      epoch of a first phase takes about half a second and a ResNet-18 checkpoint about 0.15 s; the
      interval bounds the work a kill loses by time instead. Decided on the slowest rank's clock, so
      every process agrees. Never skipped: a save on a signal, and saves the best-model reload needs.
    """

    def __init__(self, interval_seconds: float = 0.0):
        self.deferred = False
        self.interval = interval_seconds
        self.last_save = time.monotonic()

    def on_train_begin(self, args, state, control, **kwargs):
        self.last_save = time.monotonic()
        return control

    def on_step_end(self, args, state, control, **kwargs):
        ends_epoch = stopped_at_epoch_end(state)
        ends_training = control.should_training_stop and not STOP.agreed
        if control.should_save and (ends_epoch or ends_training):
            control.should_save = False
            self.deferred = True
        return self._throttle(args, control)

    def on_epoch_end(self, args, state, control, **kwargs):
        if self.deferred:
            control.should_save = True
            self.deferred = False
        return self._throttle(args, control)

    def on_save(self, args, state, control, **kwargs):
        self.last_save = time.monotonic()
        return control

    def _throttle(self, args, control):
        exempt = STOP.agreed or args.load_best_model_at_end or self.interval <= 0
        if control.should_save and not exempt:
            control.should_save = max_over_ranks(time.monotonic() - self.last_save) >= self.interval
        return control


class PhaseProgress(TrainerCallback):
    """One progress bar per arm over phases x epochs (main process only)."""

    def __init__(self, bar: tqdm | None, label: str):
        self.bar = bar
        self.label = label

    def on_epoch_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.update(1)
        return control

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.bar is not None and logs and "loss" in logs:
            self.bar.set_postfix_str(f"{self.label} loss {logs['loss']:.3f}")
        return control


def unwrap_optimizer_state(optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The state dict of the underlying torch optimizer (Accelerate wraps it)."""
    inner = getattr(optimizer, "optimizer", optimizer)
    return inner.state_dict()
