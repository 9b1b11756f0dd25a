"""Image classification trained from scratch: the target study's Fig. 1 and 2, and every reference
protocol of the prior works (Ash & Adams, DASH, Dohare et al., Hare & Tortoise)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
from datasets import Dataset
from torch import nn

from warmstart_hf.data import (
    add_label_noise,
    build_augmentation,
    build_phase_plan,
    channel_statistics,
    collate_pixels,
    load_source,
    to_pixel_dataset,
)
from warmstart_hf.hub import load_init_from
from warmstart_hf.metrics import accuracy, companion_metrics, phase_metrics
from warmstart_hf.metrics.diagnostics import (
    activation_diagnostics,
    diagnostic_sample,
    gradient_norm,
    weight_diagnostics,
)
from warmstart_hf.metrics.evaluation import masked_predictions
from warmstart_hf.models import TimmImageClassifier, build_classifier_config, create_classifier
from warmstart_hf.models.normalize import unit_float
from warmstart_hf.seeding import derive_seed
from warmstart_hf.tasks.base import Task, TaskData
from warmstart_hf.tasks.registry import register_task


@register_task("classification")
class Classification(Task):
    """A timm classifier (``model_name``) trained from a seeded draw (or ``init_from``) on uint8
    images with batched on-device augmentation; accuracy over the classes seen so far, with the full
    head and with masked logits, per chunk or class group; Dohare's diagnostics."""

    best_metric = "validation_accuracy_masked"

    def prepare(self) -> TaskData:
        source, plan = self._source_and_plan()
        train, test, validation = self._decode(source)
        model_config = self._model_config(train, source["train"].features["label"].names)
        init_from = self.config.model.init_from
        init_model = load_init_from(init_from, model_config) if init_from else None
        return TaskData(plan, train, test, model_config, validation, init_model)

    def _source_and_plan(self):
        """The normalised source splits and the seeded phase plan (with any label noise)."""
        config = self.config
        seed, inc = config.training.seed, config.incremental
        source = load_source(config.data)
        plan = build_phase_plan(
            source["train"],
            source["test"],
            scenario=inc.scenario,
            num_phases=config.num_phases,
            seed=seed,
            phase_fractions=inc.phase_fractions,
            class_order=inc.class_order,
            replay_fraction=inc.replay_fraction,
        )
        if inc.label_noise and any(inc.label_noise):
            plan = add_label_noise(plan, np.asarray(source["train"]["label"][:]), inc.label_noise, seed)
        return source, plan

    def _decode(self, source, crop_size: int | None = None) -> tuple[Dataset, Dataset, Dataset | None]:
        """Every split as the task reads it (main process first: the others read its cache)."""
        decode = lambda split: self.decode_split(split, crop_size)  # noqa: E731
        with self.config.training.main_process_first(desc="decoding images"):
            validation = decode(source["validation"]) if "validation" in source else None
            return decode(source["train"]), decode(source["test"]), validation

    def decode_split(self, split: Dataset, crop_size: int | None) -> Dataset:
        """A split decoded once to the stored size (or, decode: lazy, when read)."""
        d = self.config.data
        return to_pixel_dataset(split, d.image_size, d.num_channels, d.resize_mode, d.decode == "lazy")

    def _model_config(self, train: Dataset, names: list[str]):
        m, d = self.config.model, self.config.data
        mean, std = m.image_mean, m.image_std
        if mean is None or std is None:
            stats_mean, stats_std = channel_statistics(train)
            mean, std = mean or stats_mean, std or stats_std
        return build_classifier_config(
            m.model_name,
            num_labels=len(names),
            num_channels=d.num_channels,
            image_size=d.image_size,
            width=m.model_width,
            image_mean=mean,
            image_std=std,
            id2label=dict(enumerate(names)),
        )

    def initial_model(self, data: TaskData, seed: int) -> nn.Module:
        if data.init_model is not None:
            return copy.deepcopy(data.init_model)
        return create_classifier(data.model_config, derive_seed(seed, "init"))

    def fresh_model(self, data: TaskData, seed: int, phase: int) -> nn.Module:
        return create_classifier(data.model_config, derive_seed(seed, "fresh", phase))

    def load_model(self, directory: Path) -> nn.Module:
        return TimmImageClassifier.from_pretrained(directory)

    def train_dataset(self, data: TaskData, phase: int) -> Dataset:
        """The phase's training set (the replayed earlier examples, then the new chunk), with that phase's
        noisy labels swapped in (if any)."""
        plan = data.plan
        dataset = data.train.select(plan.train_indices(phase))
        if plan.noisy_labels and plan.noisy_labels[phase]:
            labels = plan.phase_labels(phase, np.asarray(dataset["labels"][:]).tolist())
            relabelled = dataset.remove_columns("labels").add_column("labels", labels)
            # keep the lazy path's decoding transform; the eager path reads numpy arrays
            dataset = relabelled if dataset.format["type"] == "custom" else relabelled.with_format("numpy")
        return dataset

    def eval_transform(self, data: TaskData):
        """The evaluation view of stored images (a batch transform), or None: stored images as they are."""
        return None

    def augmentation(self, data: TaskData):
        """The training batch transform (the recipe's ``augmentation``), or None."""
        inc = self.config.incremental
        return build_augmentation(
            inc.augmentation, crop_padding=inc.crop_padding, rotation_degrees=inc.rotation_degrees
        )

    def train_rows(self, data: TaskData):
        """What the training loader reads instead of the phase's rows (the worker path's training view), or
        None: the rows themselves."""
        return None

    def trainer_options(self, data: TaskData, phase: int) -> dict[str, Any]:
        inc = self.config.incremental
        seen = data.plan.classes_seen(phase)
        eval_sets = self._eval_sets(data, phase)
        return {
            "data_collator": collate_pixels,
            "augment": self.augmentation(data),
            "eval_transform": self.eval_transform(data),
            "train_rows": self.train_rows(data),
            "eval_dataset": eval_sets or None,
            "compute_metrics": _accuracy_metrics(seen) if eval_sets else None,
            "loss_classes": seen if inc.mask_unseen_logits else None,
            "batch_mix": self.batch_mix(data),
        }

    def batch_mix(self, data: TaskData):
        """Mixup / CutMix of each training batch (timm's ``Mixup``, soft targets with the recipe's label
        smoothing), or None. Its draws come from numpy's generator, which the Trainer seeds per phase and
        restores on resume."""
        inc = self.config.incremental
        if not (inc.mixup_alpha or inc.cutmix_alpha):
            return None
        from timm.data import Mixup

        mix = Mixup(
            mixup_alpha=inc.mixup_alpha,
            cutmix_alpha=inc.cutmix_alpha,
            label_smoothing=self.config.training.label_smoothing_factor,
            num_classes=data.model_config.num_labels,
        )
        return lambda images, labels: mix(unit_float(images), labels)  # the models take [0, 1] floats

    def _eval_sets(self, data: TaskData, phase: int) -> dict[str, Dataset]:
        """Per-epoch evaluation sets: the validation split (early stopping) and the test examples of the
        classes seen so far (curves), both restricted to seen classes."""
        plan, inc = data.plan, self.config.incremental
        seen = set(plan.classes_seen(phase))
        sets = {}
        if inc.stop_rule == "early_stopping" and data.validation is not None:
            labels = np.asarray(data.validation["labels"][:])
            sets["validation"] = data.validation.select(np.flatnonzero([y in seen for y in labels]))
        if inc.track_test_curve:
            groups = plan.test_groups if plan.class_groups is None else plan.test_groups[: phase + 1]
            sets["test"] = data.test.select(sorted(i for group in groups for i in group))
        return sets

    def start_diagnostics(self, model: nn.Module, data: TaskData, phase: int) -> dict[str, Any]:
        """Gradient norms at the start of the phase (all earlier chunks, replayed or not, vs the new one), on
        fixed samples."""
        plan, size = data.plan, self.config.incremental.diagnostics_samples
        sample_seed = derive_seed(self.config.training.seed, "diagnostics", phase)
        old = plan.seen_indices(phase - 1) if phase > 0 else []
        new = plan.chunks[phase]
        pick = lambda idx: [idx[i] for i in diagnostic_sample(len(idx), size, sample_seed)]  # noqa: E731
        view = self.eval_transform(data)
        return {
            "grad_norm_old_data": gradient_norm(model, data.train.select(pick(old)), transform=view) if old else None,
            "grad_norm_new_data": gradient_norm(model, data.train.select(pick(new)), transform=view),
        }

    def phase_metrics(self, trainer, data: TaskData, phase: int, train: Dataset) -> dict[str, Any]:
        plan, inc = data.plan, self.config.incremental
        train_logits, train_labels = _predict(trainer, train)
        test_logits, test_labels = _predict(trainer, data.test)
        record = {
            "num_train_examples": len(train),
            **phase_metrics(plan, phase, train_logits, train_labels, test_logits, test_labels, inc.mask_unseen_logits),
        }
        if plan.noisy_labels:
            clean = np.asarray(data.train.select(plan.train_indices(phase))["labels"][:])
            record["label_noise"] = inc.label_noise[phase]
            record["train_accuracy_clean"] = accuracy(train_logits.argmax(-1), clean)
        return record

    def end_diagnostics(self, model: nn.Module, data: TaskData, phase: int, train: Dataset, **state) -> dict[str, Any]:
        # a fixed sample of the phase's training images: the classes seen so far (Dohare et al.)
        seed, size = self.config.training.seed, self.config.incremental.diagnostics_samples
        picked = diagnostic_sample(len(train), size, derive_seed(seed, "dormant", phase))
        return {
            **activation_diagnostics(model, train.select(picked), transform=self.eval_transform(data)),
            **weight_diagnostics(model, state["init_state"], state["previous"]),
        }

    def companion_metrics(self, model: nn.Module, data: TaskData, phase: int, train: Dataset) -> dict[str, Any]:
        batch = self.config.training.per_device_eval_batch_size
        return companion_metrics(model, data.plan, phase, train, data.test, batch)


def _accuracy_metrics(seen: list[int]):
    """compute_metrics for per-epoch evaluation: accuracy with the full head and with masked logits."""

    def compute(prediction) -> dict[str, float]:
        logits, labels = np.asarray(prediction.predictions), np.asarray(prediction.label_ids)
        return {
            "accuracy": accuracy(logits.argmax(-1), labels),
            "accuracy_masked": accuracy(masked_predictions(logits, seen), labels),
        }

    return compute


def _predict(trainer, dataset: Dataset) -> tuple[np.ndarray, np.ndarray]:
    output = trainer.predict(dataset)
    logits, labels = np.asarray(output.predictions), np.asarray(output.label_ids)
    if len(logits) != len(dataset):  # metrics must be exact over all examples
        raise RuntimeError(f"prediction covered {len(logits)} of {len(dataset)} examples")
    return logits, labels
