"""Causal language-model pretraining, data-incremental (or domain-incremental), warm vs cold.

The language-model counterpart of the target study's Section 3.2: each phase trains a decoder
(``warmstart_hf/models/causal_lm.py``, or continues a Hub model named by ``pretrained``) on the
blocks of the documents seen so far, or on its new documents plus ``replay_fraction`` of the earlier
blocks (continual pretraining, Ibrahim et al. 2024). Documents, not blocks, are assigned to phases and
to the held-out split. The tokenizer is fixed for the run, saved with ``init/`` and every phase model,
and its hash recorded per phase.

Judged per phase: the held-out loss and perplexity over the documents of the chunks (or domains) seen
so far and per held-out group (the forgetting matrix), the tokens and FLOPs (6 N D) trained, and a probe
loss on a fixed sample of held-out blocks measured every ``probe_every_steps`` with snapshots, the
candidates of loss alignment (the MAE machinery: ``alignment.json``, ``fig4.png``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset, concatenate_datasets
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM

from warmstart_hf.config import ConfigError, RecipeConfig, register_recipe_check
from warmstart_hf.data.phases import build_phase_plan, replay_sample
from warmstart_hf.data.text_blocks import (
    block_tensor,
    collate_blocks,
    load_tokenizer,
    pack_blocks,
    tokenize_documents,
    tokenizer_sha256,
)
from warmstart_hf.data.text_sources import load_ood_documents, load_text_source
from warmstart_hf.hub import push_aligned_checkpoints
from warmstart_hf.metrics.diagnostics import diagnostic_sample, weight_diagnostics
from warmstart_hf.models.causal_lm import build_lm_config, create_lm, parameter_count, token_loss_sum
from warmstart_hf.report.language import write_language_summary
from warmstart_hf.seeding import derive_seed
from warmstart_hf.tasks.base import CardSpec, Task, TaskData
from warmstart_hf.tasks.probe_curve import ProbeLoss, probe_curve
from warmstart_hf.tasks.registry import register_task

# The Hub card of a phase: perplexity, tokens and FLOPs, and the model and tokenizer loaded by revision.
LM_CARD = CardSpec(
    description="causal language model (decoder pretraining)",
    pipeline_tag="text-generation",
    task_name="Causal language modeling",
    headline=("validation_perplexity", "perplexity", "held-out perplexity"),
    columns=(
        ("num_train_examples", "train blocks", "d"),
        ("train_tokens", "train tokens", ","),
        ("train_flops", "train FLOPs (6ND)", ".3e"),
        ("validation_loss", "held-out loss", ".4f"),
        ("validation_perplexity", "held-out perplexity", ".2f"),
        ("probe_loss", "probe loss", ".5f"),
        ("train_loss", "train loss", ".4f"),
    ),
    results_note=(
        "Held-out loss: next-token cross-entropy (nats per token) over the held-out documents of the chunks "
        "(or domains) seen so far, packed into blocks like the training text; perplexity is its exp. Train "
        "tokens: the tokens the phase trained on (its blocks x block size x epochs); FLOPs: 6 x parameters x "
        "tokens. Probe loss: the same loss on a fixed sample of held-out blocks (loss alignment)."
    ),
    load=(
        "from transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
        'tokenizer = AutoTokenizer.from_pretrained("{repo_id}", revision="{branch}")  # the run\'s fixed tokenizer\n'
        'model = AutoModelForCausalLM.from_pretrained("{repo_id}", revision="{branch}")\n'
        'ids = tokenizer("Some text", return_tensors="pt").input_ids\n'
        "loss = model(input_ids=ids, labels=ids).loss  # nats per token, like the held-out loss\n"
    ),
    continue_from=(
        "To continue pretraining from this phase, download it "
        '(`huggingface_hub.snapshot_download("{repo_id}", revision="{branch}")`) and set both `pretrained` and '
        "`tokenizer` of a causal_lm recipe to that directory."
    ),
)


@dataclass
class LanguageData(TaskData):
    tokenizer: Any = None
    tokenizer_sha256: str = ""
    chunk_blocks: list[Dataset] = field(default_factory=list)  # the training blocks of each phase's new documents
    held_out: list[torch.Tensor] = field(default_factory=list)  # held-out blocks per group (chunk or domain)
    probe: torch.Tensor | None = None  # the fixed probe sample of held-out blocks
    ood: torch.Tensor | None = None  # blocks of the recipe's out-of-distribution text (ood_dataset)


@register_task("causal_lm")
class CausalLanguageModel(Task):
    """Next-token pretraining on packed blocks; records losses, perplexities, tokens and FLOPs."""

    accepts_pretrained = True  # continual pretraining of a Hub model; from a seeded draw without it
    card = LM_CARD
    tokenizer = None  # the run's tokenizer, set by prepare()

    def prepare(self) -> LanguageData:
        config, d = self.config, self.config.data
        inc, seed = config.incremental, config.training.seed
        documents = load_text_source(d)
        plan = build_phase_plan(
            documents["train"],
            documents["test"],
            scenario="class" if inc.scenario == "domain" else "data",
            num_phases=config.num_phases,
            seed=seed,
            phase_fractions=inc.phase_fractions,
            class_order=_domain_order(documents["train"], inc.scenario, d.domain_order),
        )
        # replay_fraction acts on blocks here (train_dataset): the plan records it, its chunks stay whole
        plan.scenario, plan.replay_fraction = inc.scenario, inc.replay_fraction
        tokenizer = self.tokenizer = load_tokenizer(d.tokenizer)
        with config.training.main_process_first(desc="tokenizing and packing"):
            train = tokenize_documents(documents["train"], tokenizer, d.max_document_tokens)
            test = tokenize_documents(documents["test"], tokenizer, d.max_document_tokens)
            chunks = [pack_blocks(train, chunk, d.block_size) for chunk in plan.chunks]
            held_out = [block_tensor(pack_blocks(test, group, d.block_size)) for group in plan.test_groups]
            ood = self._ood_blocks(tokenizer) if d.ood_dataset else None
        _check_blocks(chunks, held_out, d.block_size)
        every = torch.cat([blocks for blocks in held_out if len(blocks)])
        probe = every[diagnostic_sample(len(every), inc.probe_examples, derive_seed(seed, "probe"))]
        return LanguageData(
            plan,
            train,
            test,
            self._model_config(tokenizer),
            tokenizer=tokenizer,
            tokenizer_sha256=tokenizer_sha256(tokenizer),
            chunk_blocks=chunks,
            held_out=held_out,
            probe=probe,
            ood=ood,
        )

    def _ood_blocks(self, tokenizer) -> torch.Tensor:
        d = self.config.data
        tokenized = tokenize_documents(load_ood_documents(d), tokenizer, d.max_document_tokens)
        blocks = block_tensor(pack_blocks(tokenized, range(len(tokenized)), d.block_size))
        if not len(blocks):
            raise ConfigError(
                f"Recipe field `ood_dataset` has value {d.ood_dataset!r}, whose documents hold fewer tokens than one "
                f"block of {d.block_size}. Fix: raise max_test_examples or use a smaller block_size."
            )
        return blocks

    def _model_config(self, tokenizer):
        m, d = self.config.model, self.config.data
        if m.pretrained:
            config = AutoConfig.from_pretrained(m.pretrained)
            if len(tokenizer) > config.vocab_size:
                raise ConfigError(
                    f"Recipe field `tokenizer` has value {d.tokenizer!r} ({len(tokenizer)} tokens), more than the "
                    f"vocabulary of `pretrained` {m.pretrained!r} ({config.vocab_size}). Fix: use the pretrained "
                    "model's own tokenizer."
                )
            return config
        return build_lm_config(
            m.lm_architecture,
            vocab_size=len(tokenizer),
            block_size=d.block_size,
            hidden_size=m.lm_hidden_size,
            layers=m.lm_layers,
            heads=m.lm_heads,
            intermediate_size=m.lm_intermediate_size,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )

    def initial_model(self, data: LanguageData, seed: int) -> nn.Module:
        if self.config.model.pretrained:
            return AutoModelForCausalLM.from_pretrained(self.config.model.pretrained)
        return create_lm(data.model_config, derive_seed(seed, "init"))

    def fresh_model(self, data: LanguageData, seed: int, phase: int) -> nn.Module:
        """Cold: a new seeded draw per phase, or the pretrained model reloaded (continual pretraining)."""
        if self.config.model.pretrained:
            return AutoModelForCausalLM.from_pretrained(self.config.model.pretrained)
        return create_lm(data.model_config, derive_seed(seed, "fresh", phase))

    def load_model(self, directory: Path) -> nn.Module:
        return AutoModelForCausalLM.from_pretrained(directory)

    def save_initial_model(self, model: nn.Module, directory: Path) -> None:
        """theta0 with the run's tokenizer: ``init/`` loads with the Auto classes like a phase."""
        super().save_initial_model(model, directory)
        self.tokenizer.save_pretrained(directory)

    def train_dataset(self, data: LanguageData, phase: int) -> Dataset:
        """The new chunk's blocks, after ``replay_fraction`` of the earlier chunks' blocks (seeded)."""
        new = data.chunk_blocks[phase]
        if phase == 0:
            return new
        earlier = concatenate_datasets(data.chunk_blocks[:phase])
        seed = derive_seed(self.config.training.seed, "replay", phase)
        kept = replay_sample(range(len(earlier)), self.config.incremental.replay_fraction, seed)
        return concatenate_datasets([earlier.select(kept), new])

    def trainer_options(self, data: LanguageData, phase: int) -> dict[str, Any]:
        every = self.config.incremental.probe_every_steps
        measure = lambda model: _mean_loss(model, data.probe, self._eval_batch)  # noqa: E731
        return {
            "data_collator": collate_blocks,
            "processing_class": data.tokenizer,  # saved with every checkpoint and phase model
            "running_accuracy": False,
            "callbacks": [ProbeLoss(measure, every)] if every else [],
        }

    def throughput_unit(self, data: LanguageData) -> tuple[str, int]:
        """Tokens: every training example is one packed block of ``block_size`` ids (as ``train_tokens``)."""
        return "tokens", self.config.data.block_size

    @property
    def _eval_batch(self) -> int:
        return self.config.training.per_device_eval_batch_size

    def start_record(self, model: nn.Module, data: LanguageData, phase: int) -> dict[str, Any]:
        return {"start_probe_loss": _mean_loss(model, data.probe, self._eval_batch)}

    def phase_metrics(self, trainer, data: LanguageData, phase: int, train: Dataset) -> dict[str, Any]:
        model, state = trainer.model, trainer.state
        sums = [token_loss_sum(model, blocks, self._eval_batch) for blocks in data.held_out]
        seen = range(len(sums)) if data.plan.scenario == "data" else range(phase + 1)
        total, count = sum(sums[g][0] for g in seen), sum(sums[g][1] for g in seen)
        loss = total / count
        tokens = round(float(state.epoch or 0.0) * len(train)) * self.config.data.block_size
        final = _mean_loss(model, data.probe, self._eval_batch)
        losses = [e["loss"] for e in state.log_history if "loss" in e]
        return {
            "num_train_examples": len(train),
            "train_tokens": tokens,
            "train_flops": 6 * parameter_count(model) * tokens,
            "validation_loss": loss,
            "validation_perplexity": math.exp(loss),
            "validation_loss_per_group": [s / n if n else None for s, n in sums],
            "probe_loss": final,
            "probe_curve": probe_curve(trainer, phase, final),
            "train_loss": losses[-1] if losses else None,
            "tokenizer_sha256": data.tokenizer_sha256,
            **self._ood_metrics(model, data),
        }

    def _ood_metrics(self, model: nn.Module, data: LanguageData) -> dict[str, float]:
        if data.ood is None:
            return {}
        loss = _mean_loss(model, data.ood, self._eval_batch)
        return {"ood_loss": loss, "ood_perplexity": math.exp(loss)}

    def end_diagnostics(self, model: nn.Module, data: LanguageData, phase: int, train, **state) -> dict[str, Any]:
        return weight_diagnostics(model, state["init_state"], state["previous"])

    def companion_metrics(self, model: nn.Module, data: LanguageData, phase: int, train) -> dict[str, Any]:
        raise NotImplementedError("no strategy with a companion model serves task causal_lm")

    def write_summary(self, run_dir: Path) -> str:
        """The language-model summary (perplexities, tokens, compute; alignment.json, fig4.png), then the
        aligned snapshots to the Hub."""
        table = write_language_summary(run_dir)
        push_aligned_checkpoints(self.config, run_dir)
        return table


def _domain_order(documents: Dataset, scenario: str, order: str) -> list[int] | None:
    """The domains in name order (their ClassLabel ids are sorted names), or None: a seeded order."""
    if scenario != "domain" or order != "sorted":
        return None
    return list(range(documents.features["label"].num_classes))


def _mean_loss(model: nn.Module, blocks: torch.Tensor, batch_size: int) -> float:
    total, count = token_loss_sum(model, blocks, batch_size)
    return total / count


def _check_blocks(chunks: list[Dataset], held_out: list[torch.Tensor], block_size: int) -> None:
    """Every phase trains on at least one block, and some held-out group has one."""
    empty = [k for k, blocks in enumerate(chunks) if len(blocks) == 0]
    if empty:
        raise ConfigError(
            f"Recipe field `block_size` has value {block_size}, but the documents of phase {empty[0]} hold fewer "
            "tokens than one block. Fix: use a smaller block_size, fewer num_phases, or more documents."
        )
    if not any(len(blocks) for blocks in held_out):
        raise ConfigError(
            f"Recipe field `block_size` has value {block_size}, but the held-out documents hold fewer tokens than "
            "one block. Fix: raise test_size or max_test_examples, or use a smaller block_size."
        )


@register_recipe_check
def check_causal_lm(config: RecipeConfig) -> None:
    """Recipe check: the scenario and the options fit a language model."""
    d, m, inc = config.data, config.model, config.incremental
    if inc.task != "causal_lm":
        if inc.scenario == "domain":
            raise ConfigError(
                f"Recipe field `scenario` has value 'domain', but task is {inc.task!r}. Fix: use scenario class "
                "(classes partitioned into groups), or task causal_lm."
            )
        return
    if inc.scenario == "class":
        raise ConfigError(
            "Recipe field `scenario` has value 'class', but task causal_lm has no classes. Fix: use scenario data, "
            "or scenario domain with domain_column."
        )
    if (inc.scenario == "domain") != (d.domain_column is not None):
        raise ConfigError(
            f"Recipe field `domain_column` has value {d.domain_column!r} with scenario {inc.scenario!r}: scenario "
            "domain needs a domain_column, and only it uses one. Fix: set both or neither."
        )
    if m.init_from:
        raise ConfigError(
            f"Recipe field `init_from` has value {m.init_from!r}, but task causal_lm starts from `pretrained`. Fix: "
            "set `pretrained` (and `tokenizer`) to that checkpoint's directory or Hub id instead."
        )
    for name, value in (("block_size", d.block_size), ("lm_layers", m.lm_layers), ("lm_heads", m.lm_heads)):
        if value < 1:
            raise ConfigError(f"Recipe field `{name}` has value {value}. Fix: use a positive integer.")
    if m.lm_hidden_size % m.lm_heads:
        raise ConfigError(
            f"Recipe field `lm_hidden_size` has value {m.lm_hidden_size}, which {m.lm_heads} heads (`lm_heads`) do "
            "not divide. Fix: choose a head count that divides the width."
        )
    if inc.stop_rule != "epochs" or inc.mask_unseen_logits or inc.track_test_curve or inc.augmentation:
        raise ConfigError(
            f"Recipe field `stop_rule` / `mask_unseen_logits` / `track_test_curve` / `augmentation` is set "
            f"({inc.stop_rule!r}, {inc.mask_unseen_logits}, {inc.track_test_curve}, {inc.augmentation}), but a "
            "language model has no labels or images. Fix: use stop_rule: epochs, augmentation: [], the others off."
        )
