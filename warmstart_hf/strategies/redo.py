"""ReDo (Sokar et al. 2023, "The Dormant Neuron Phenomenon in Deep Reinforcement Learning"): every
``redo_interval`` optimizer steps, units whose normalized activity is at most ``redo_tau`` are recycled.

Reference: google/dopamine, dopamine/labs/redo/weight_recyclers.py (``NeuronRecycler``:
``estimate_neuron_score``, ``create_masks``, ``create_mask_helper``, ``recycle_dead_neurons``,
``is_update_iter``) and recycled_dqn_agents.py (``_training_step_update``, ``get_intermediates``,
``batch_size_statistics=256``). What carries over from there:

- score: s_i = mean |h_i| over the batch and, for a conv channel, every spatial position, divided by
  (the layer's mean of those + 1e-9); dormant when s_i <= tau (``<=``: tau = 0 recycles exact zeros);
- when: after the optimizer update whose 0-indexed number k satisfies k > 0 and k % interval == 0
  (counted within a phase here), on the updated weights, scored on a separate batch of
  ``redo_score_batch_size`` examples drawn from the data seen so far (the reference: a fresh replay
  sample, not the training batch), without augmentation;
- recycle: the unit's incoming kernel is redrawn from the layer's initializer (the reference's
  networks use xavier_uniform; timm's ResNets use Kaiming-normal fan_out, ``ResNet.init_weights``), its
  bias zeroed, its outgoing kernel zeroed; the optimizer moments (SGD's momentum buffer, Adam's exp_avg
  / exp_avg_sq) of exactly those incoming and outgoing kernel entries are zeroed, and nothing else: the
  reference masks 1-D parameters (biases) as None, so their moments are kept, and Adam's step count is
  kept (``ScaleByAdamState(count, ...)``).
- which layers: with ``network='resnet'`` the reference recycles only the first conv of each residual
  block (its output feeds only the block's second conv) and the hidden dense layer, never the output
  layer nor a unit on the residual stream (whose outgoing connection includes the skip, which zeroing
  cannot cut). Here: every timm BasicBlock's ``act1`` units and every Bottleneck's ``act1`` and
  ``act2`` units; timm's ResNet has no hidden dense layer, and its ``fc`` is the output.

BatchNorm (the reference networks have none): the unit's BatchNorm after the conv is part of its
incoming side. Its beta takes the place of the reference's bias (zeroed), gamma returns to its init (1)
and the running statistics of the channel to theirs (0, 1), since they describe the discarded filter.
A dormant BatchNorm channel is one whose beta pushed it below zero; redrawing the kernel alone would
leave it dormant. Scoring runs the model in eval mode (running statistics, no dropout): like the
reference's forward, it is deterministic and changes no buffer.

Agreement across processes: the batch and the new weights come from CPU generators seeded from the
arm's seed, phase and step, and the per-unit activities are all-reduced before the threshold.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from timm.models.resnet import BasicBlock, Bottleneck
from torch import nn
from transformers import TrainerCallback

from warmstart_hf.config import ConfigError, RecipeConfig, register_recipe_check
from warmstart_hf.data.pixels import iter_pixel_batches
from warmstart_hf.distributed import mean_over_ranks
from warmstart_hf.seeding import derive_seed
from warmstart_hf.strategies.base import PhaseContext, PhaseStart, Strategy
from warmstart_hf.strategies.registry import register_strategy

STATS_FILE = "redo_stats.json"
EPSILON = 1e-9  # the reference's guard in the normalization


@dataclass
class Units:
    """One layer of recyclable units: ``act``'s output channels, fed by ``conv_in`` (then ``norm``)
    and read only by ``conv_out``."""

    name: str
    act: nn.Module
    conv_in: nn.Conv2d
    norm: nn.Module | None
    conv_out: nn.Conv2d


def recyclable_units(model: nn.Module) -> list[Units]:
    """The block-internal units of every timm residual block, in model order."""
    found = []
    for name, m in model.named_modules():
        if isinstance(m, BasicBlock):
            found.append(Units(f"{name}.act1", m.act1, m.conv1, m.bn1, m.conv2))
        elif isinstance(m, Bottleneck):
            found.append(Units(f"{name}.act1", m.act1, m.conv1, m.bn1, m.conv2))
            found.append(Units(f"{name}.act2", m.act2, m.conv2, m.bn2, m.conv3))
    if not found:
        raise ValueError("redo: the model has no timm BasicBlock or Bottleneck, so no units to recycle")
    for units in found:
        if not (isinstance(units.conv_in, nn.Conv2d) and isinstance(units.conv_out, nn.Conv2d)):
            raise ValueError(f"redo: {units.name} is not fed and read by plain Conv2d layers (LoRA-wrapped?)")
    return found


def normalized_scores(activity: torch.Tensor) -> torch.Tensor:
    """The reference's s_i: each unit's mean |activation| over the layer's mean of those (+ 1e-9)."""
    return activity / (activity.mean() + EPSILON)


@torch.no_grad()
def unit_activity(model: nn.Module, units: list[Units], images: torch.Tensor) -> list[torch.Tensor]:
    """Mean |activation| per unit (channel: over batch and positions), the model in eval mode."""
    sums: dict[int, torch.Tensor] = {}

    def hook(index: int):
        def record(_module, _inputs, output):
            dims = [d for d in range(output.dim()) if d != 1]
            sums[index] = output.detach().abs().mean(dims, dtype=torch.float32)

        return record

    handles = [u.act.register_forward_hook(hook(i)) for i, u in enumerate(units)]
    was_training = model.training
    model.eval()
    try:
        forward = getattr(model, "forward_features", model)
        forward(images)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    flat = mean_over_ranks(torch.cat([sums[i] for i in range(len(units))]).double())
    return list(flat.split([len(sums[i]) for i in range(len(units))]))


def _reset_moments(optimizer, param: torch.Tensor, index: tuple) -> None:
    """Zero the optimizer's per-entry state (momentum buffer, exp_avg, exp_avg_sq) at ``index``."""
    inner = getattr(optimizer, "optimizer", optimizer)  # Accelerate's wrapper
    for value in inner.state.get(param, {}).values():
        if torch.is_tensor(value) and value.shape == param.shape:
            value[index] = 0


@torch.no_grad()
def reinitialize_units(units: Units, mask: torch.Tensor, generator: torch.Generator, optimizer=None) -> None:
    """Recycle the masked units: incoming kernel redrawn (timm ResNet's Kaiming-normal fan_out, drawn
    whole on the CPU as the reference draws the whole kernel), bias and BatchNorm to their init,
    outgoing kernel zeroed, the two kernels' moments zeroed at those entries."""
    weight = units.conv_in.weight
    fresh = torch.empty(weight.shape, dtype=torch.float32)
    nn.init.kaiming_normal_(fresh, mode="fan_out", nonlinearity="relu", generator=generator)
    if not mask.any():
        return
    mask = mask.to(weight.device)
    weight[mask] = fresh.to(weight.device, weight.dtype)[mask]
    if units.conv_in.bias is not None:
        units.conv_in.bias[mask] = 0
    norm = units.norm
    if norm is not None:
        for tensor, value in ((norm.weight, 1.0), (norm.bias, 0.0), (norm.running_mean, 0.0), (norm.running_var, 1.0)):
            if tensor is not None:
                tensor[mask] = value
    units.conv_out.weight[:, mask] = 0
    if optimizer is not None:
        _reset_moments(optimizer, weight, (mask,))
        _reset_moments(optimizer, units.conv_out.weight, (slice(None), mask))


def _dormant_fraction(scores: list[torch.Tensor], tau: float) -> float:
    return float(torch.cat([s <= tau for s in scores]).double().mean())


def recycle(model: nn.Module, images: torch.Tensor, tau: float, generator: torch.Generator, optimizer=None) -> dict:
    """One ReDo intervention: score, recycle the tau-dormant units, score again; returns what it did."""
    units = recyclable_units(model)
    scores = [normalized_scores(a) for a in unit_activity(model, units, images)]
    recycled = {}
    for layer, score in zip(units, scores):
        mask = (score <= tau).cpu()
        reinitialize_units(layer, mask, generator, optimizer)
        if mask.any():
            recycled[layer.name] = mask.nonzero().flatten().tolist()
    after = [normalized_scores(a) for a in unit_activity(model, units, images)]
    return {
        "recycled": recycled,
        "units_recycled": sum(len(v) for v in recycled.values()),
        "num_units": sum(len(s) for s in scores),
        "dormant_fraction_before": _dormant_fraction(scores, tau),
        "dormant_fraction_after": _dormant_fraction(after, tau),
    }


class ReDoCallback(TrainerCallback):
    """Runs :func:`recycle` after every ``interval``-th update (the reference's 0-indexed k > 0 and
    k % interval == 0) and appends what it did to ``stats["recycles"]``, saved with each checkpoint."""

    def __init__(self, sample: Callable[[int], torch.Tensor], seed: int, interval: int, tau: float, stats: dict):
        self.sample, self.seed, self.interval, self.tau, self.stats = sample, seed, interval, tau, stats

    def on_step_end(self, args, state, control, model=None, optimizer=None, **kwargs):
        update = state.global_step - 1
        if update <= 0 or update % self.interval:
            return
        images = self.sample(state.global_step).to(next(model.parameters()).device)
        generator = torch.Generator().manual_seed(derive_seed(self.seed, "redo-init", state.global_step))
        event = recycle(model, images, self.tau, generator, optimizer)
        self.stats["recycles"].append({"step": state.global_step, **event})
        self.stats["units_recycled"] = sum(e["units_recycled"] for e in self.stats["recycles"])

    def write_checkpoint(self, folder: Path, args) -> None:
        if args.should_save:
            (folder / STATS_FILE).write_text(json.dumps(self.stats["recycles"]))


def score_sampler(ctx: PhaseContext, size: int) -> Callable[[int], torch.Tensor]:
    """The scoring batch for a step: ``size`` examples of the data seen so far, uniformly without
    replacement (seeded by the arm, phase and step), in the task's evaluation view."""

    def sample(step: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(derive_seed(ctx.seed, "redo-sample", step))
        picked = torch.randperm(len(ctx.train_dataset), generator=generator)[:size].sort().values.tolist()
        images, _ = next(iter_pixel_batches(ctx.train_dataset.select(picked), size))
        return ctx.eval_transform(images) if ctx.eval_transform is not None else images

    return sample


@register_strategy("redo")
class ReDo(Strategy):
    """Warm start, then every ``redo_interval`` optimizer steps of each phase the tau-dormant units
    (``redo_tau``, scored on ``redo_score_batch_size`` seen examples) are recycled. Stats per phase:
    each recycle's step, units per layer, dormant fraction before and after. Optimizer: reset unless
    ``optimizer_state: carry``."""

    reference = "ReDo, Sokar et al. 2023 (paper: every 1000 updates, tau 0.025; dopamine labs/redo: score batch 256)"
    tasks = ("classification", "finetune")

    def prepare(self, ctx: PhaseContext) -> PhaseStart:
        o = self.options
        recyclable_units(ctx.previous_model)  # fails now, not at the first recycle
        recycles: list[dict[str, Any]] = []
        if ctx.resume_checkpoint and (Path(ctx.resume_checkpoint) / STATS_FILE).exists():
            recycles = json.loads((Path(ctx.resume_checkpoint) / STATS_FILE).read_text())
        stats = {"redo_interval": o.redo_interval, "redo_tau": o.redo_tau}
        stats["redo_score_batch_size"] = o.redo_score_batch_size
        stats.update(recycles=recycles, units_recycled=sum(e["units_recycled"] for e in recycles))
        sampler = score_sampler(ctx, o.redo_score_batch_size)
        callback = ReDoCallback(sampler, ctx.seed, o.redo_interval, o.redo_tau, stats)
        return PhaseStart(
            model=ctx.previous_model,
            carry_optimizer_state=self.carries_optimizer_state(),
            callbacks=[callback],
            stats=stats,
        )


@register_recipe_check
def check_redo(config: RecipeConfig) -> None:
    """Recipe check: the ReDo options, and what ReDo cannot run with."""
    s, fix = config.strategy, "Fix: set it to at least 1."
    for name in ("redo_interval", "redo_score_batch_size"):
        if getattr(s, name) < 1:
            raise ConfigError(f"Recipe field `{name}` has value {getattr(s, name)!r}; it must be at least 1. {fix}")
    if not s.redo_tau >= 0:
        raise ConfigError(f"Recipe field `redo_tau` has value {s.redo_tau!r}; it must be >= 0. Fix: use e.g. 0.025.")
    if "redo" not in config.incremental.strategies:
        return
    tr = config.training
    if tr.torch_compile and tr.torch_compile_mode == "reduce-overhead":
        raise ConfigError(
            "Strategy `redo` rewrites weights and optimizer state between CUDA-graph replays, which is untested; "
            "Recipe field `torch_compile_mode` has value 'reduce-overhead'. Fix: use torch_compile_mode default, "
            "or drop `redo` from `strategies`."
        )
    mode = getattr(config.model, "finetune_mode", "full")
    if config.incremental.task == "finetune" and mode != "full":
        raise ConfigError(
            f"Strategy `redo` recycles backbone units, but Recipe field `finetune_mode` has value {mode!r} (a frozen "
            "backbone). Fix: set `finetune_mode: full` or drop `redo` from `strategies`."
        )
