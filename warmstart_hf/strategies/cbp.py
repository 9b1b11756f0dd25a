"""Continual backpropagation (Dohare et al. 2024, Nature): every step, replace a small fraction of the
mature hidden units with the lowest contribution utility.

Reference: github.com/shibhansh/loss-of-plasticity, ``lop/algos/res_gnt.py`` (``ResGnT.test_features``,
``ResGnT.gen_new_features``), the ResNet-18 variant that the incremental CIFAR-100 experiment uses
(``lop/incremental_cifar/incremental_cifar_experiment.py``, features from ``lop/nets/
torchvision_modified_resnet.py``; hyperparameters in ``lop/incremental_cifar/cfg/
continual_backpropagation.json``: replacement_rate 1e-5, maturity_threshold 1000, utility
"contribution", decay_rate 0.99). What carries over from it, rewritten here:

- Units: the output channels of every convolution outside the downsample shortcuts, in network order:
  the stem conv (feature: the stem's ReLU output), each BasicBlock's conv1 (feature: the block's first
  ReLU output) and conv2 (feature: the block's output, after the residual sum and the last ReLU). Each
  unit's "next layer" is the next convolution in that list (the last conv2's is the classifier), as in
  ``ResGnT.get_weight_layers``: the residual path is ignored. The classifier's units are never replaced.
  (A torchvision-style stem with a max-pool, as the finetuned ImageNet ResNet-18 has, is judged by its
  ReLU output before the pool; the reference's CIFAR stem has no pool.)
- Per step, after the optimizer step: every layer's ages += 1; ``mag += (1 - decay) * mean|feature|``
  per channel. The reference's ``mean_feature_mag`` has no decay factor and no bias correction (unlike
  ``lop/algos/gnt.py``): it is a running sum, reproduced as is. Once any unit of a layer is older than
  ``maturity_threshold``, the layer accrues ``replacement_rate * channels`` units per step; the integer
  part is replaced now, the fraction carries.
- Utility (computed only when a layer replaces): ``mean_{out, kh, kw} |W_next| * mag``; the lowest among
  the mature units are replaced (``torch.topk`` of the negated utility).
- Replacement: incoming weights redrawn (the conv bias, if any, zeroed), outgoing weights of the next
  layer zeroed, age 0, utility 0; the following BatchNorm gets gamma 1, beta 0, running mean 0 and
  running variance 1. The reference leaves ``mag`` and the optimizer state (SGD momentum) of the
  replaced units as they were and corrects no next-layer bias: so does this module.

Departures, each needed here: new incoming weights follow this model's own init (timm's Kaiming normal,
``fan_out``, ReLU gain), where the reference's std ``sqrt(2 / fan_in)`` is its network's init; they are
drawn from a CPU generator seeded by the arm seed, phase and step, so every rank draws the same. The
feature magnitude of one optimizer step is the mean over its micro-batches (gradient accumulation) and
over the processes (one all-reduce per step), so every rank makes the same decision.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from timm.models.resnet import BasicBlock
from torch import nn
from transformers import TrainerCallback

from warmstart_hf.config import ConfigError, RecipeConfig, register_recipe_check
from warmstart_hf.distributed import mean_over_ranks
from warmstart_hf.seeding import derive_seed
from warmstart_hf.strategies.base import PhaseContext, PhaseStart, Strategy
from warmstart_hf.strategies.registry import register_strategy

CBP_FILE = "cbp_state.safetensors"


class CBPLayer:
    """One replaceable layer: its conv, the BatchNorm after it, the module whose output is its feature,
    the next weight layer, and its statistics (ages on the host: they decide when to replace, no sync)."""

    def __init__(self, name: str, conv: nn.Conv2d, norm: nn.BatchNorm2d, feature: nn.Module, after: nn.Module):
        self.name, self.conv, self.norm, self.feature, self.next = name, conv, norm, feature, after
        channels = conv.out_channels
        self.ages = torch.zeros(channels)
        self.mag = torch.zeros(channels)
        self.util = torch.zeros(channels)
        self.accumulated = 0.0
        self.step_sum: torch.Tensor | None = None  # this step's summed per-channel mean |feature|
        self.step_count = 0

    def observe(self, output: torch.Tensor) -> None:
        reduce = (0, 2, 3) if output.dim() == 4 else (0,)
        batch_mag = output.detach().abs().mean(dim=reduce, dtype=torch.float32)
        self.step_sum = batch_mag if self.step_sum is None else self.step_sum + batch_mag
        self.step_count += 1


def cbp_layers(model: nn.Module) -> list[CBPLayer]:
    """The reference's layer list for a timm ResNet of BasicBlocks (see the module docstring)."""
    net = getattr(model, "timm_model", model)
    blocks = [m for m in net.modules() if isinstance(m, BasicBlock)]
    if not blocks or not all(hasattr(net, a) for a in ("conv1", "bn1", "act1", "fc")):
        raise ConfigError(
            f"Strategy `cbp` has no layer map for {type(net).__name__}: it follows the reference's ResNet variant "
            "(timm ResNet of BasicBlocks, e.g. model_name: resnet18_cifar). Fix: use such a model or drop `cbp`."
        )
    units = [("conv1", net.conv1, net.bn1, net.act1)]
    names = {m: n for n, m in net.named_modules()}
    for block in blocks:
        units += [(f"{names[block]}.conv1", block.conv1, block.bn1, block.act1)]
        units += [(f"{names[block]}.conv2", block.conv2, block.bn2, block)]
    afters = [u[1] for u in units[1:]] + [net.fc]
    return [CBPLayer(n, c, b, f, a) for (n, c, b, f), a in zip(units, afters)]


def _recorder(layer: CBPLayer):
    def hook(module: nn.Module, inputs, output: torch.Tensor) -> None:  # returns None: the output is kept
        if module.training:
            layer.observe(output)

    return hook


class ContinualBackprop:
    """The per-step generate-and-test of ``ResGnT`` over :func:`cbp_layers`; ``state_dict`` holds all
    that a resumed run needs to continue exactly."""

    def __init__(self, model: nn.Module, rate: float, maturity: int, decay: float):
        self.layers = cbp_layers(model)
        self.rate, self.maturity, self.decay = rate, maturity, decay
        self.replaced = {layer.name: 0 for layer in self.layers}
        self._hooks: list[Any] = []

    def attach(self) -> None:
        """Hooks that record each training forward's feature magnitudes (evaluation forwards are skipped)."""
        device = self.layers[0].conv.weight.device
        for layer in self.layers:
            layer.mag, layer.util = layer.mag.to(device), layer.util.to(device)
            self._hooks.append(layer.feature.register_forward_hook(_recorder(layer)))

    def detach(self) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks = []

    @torch.no_grad()
    def step(self, generator_seed: int) -> None:
        """After an optimizer step: update the statistics, then replace where the rate has accrued."""
        observed = [layer for layer in self.layers if layer.step_sum is not None]
        if observed:
            means = mean_over_ranks(torch.cat([la.step_sum / la.step_count for la in observed]))
            for layer, mean in zip(observed, means.split([la.conv.out_channels for la in observed])):
                layer.mag += (1 - self.decay) * mean
                layer.step_sum, layer.step_count = None, 0
        generator = None
        for layer in self.layers:
            layer.ages += 1
            eligible = torch.where(layer.ages > self.maturity)[0]
            if len(eligible) == 0:
                continue
            layer.accumulated += self.rate * layer.conv.out_channels
            # At most the mature units: the reference's topk would fail on more (only at rates far above
            # the published 1e-5); the rest stays accumulated for later steps.
            count = min(int(layer.accumulated), len(eligible))
            layer.accumulated -= count
            if count == 0:
                continue
            generator = generator or torch.Generator().manual_seed(generator_seed)
            self._replace(layer, eligible, count, generator)

    def _replace(self, layer: CBPLayer, eligible: torch.Tensor, count: int, generator: torch.Generator) -> None:
        """Replace the ``count`` lowest-utility mature units of ``layer`` (``ResGnT.gen_new_features``)."""
        weight, device = layer.conv.weight, layer.mag.device
        reduce = (0, 2, 3) if layer.next.weight.dim() == 4 else (0,)
        layer.util = layer.next.weight.abs().float().mean(dim=reduce) * layer.mag
        eligible = eligible.to(device)
        units = eligible[torch.topk(-layer.util[eligible], count)[1]]
        layer.util[units] = 0
        fan_out = weight.shape[0] * weight[0, 0].numel()  # timm's init: kaiming_normal_(fan_out, relu)
        std = (2.0 / fan_out) ** 0.5
        fresh = torch.randn((count, *weight.shape[1:]), generator=generator) * std
        weight[units] = fresh.to(weight.device, weight.dtype)
        if layer.conv.bias is not None:
            layer.conv.bias[units] = 0
        layer.next.weight[:, units] = 0
        norm = layer.norm
        norm.weight[units], norm.bias[units] = 1.0, 0.0
        norm.running_mean[units], norm.running_var[units] = 0.0, 1.0
        layer.ages[units.cpu()] = 0
        self.replaced[layer.name] += count

    def state_dict(self) -> dict[str, torch.Tensor]:
        state = {}
        for i, layer in enumerate(self.layers):
            state[f"{i}.ages"], state[f"{i}.mag"], state[f"{i}.util"] = layer.ages, layer.mag, layer.util
            state[f"{i}.accumulated"] = torch.tensor([layer.accumulated], dtype=torch.float64)
        return {k: v.detach().cpu().contiguous() for k, v in state.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for i, layer in enumerate(self.layers):
            layer.ages = state[f"{i}.ages"].clone()
            layer.mag = state[f"{i}.mag"].to(layer.mag.device)
            layer.util = state[f"{i}.util"].to(layer.util.device)
            layer.accumulated = float(state[f"{i}.accumulated"][0])


class CBPCallback(TrainerCallback):
    """Runs :class:`ContinualBackprop` after every optimizer step (where the reference calls
    ``gen_and_test``, after ``optim.step()``); its state goes into every Trainer checkpoint and, at the
    end of the phase, into the phase folder, from where the next phase continues it."""

    def __init__(self, cbp: ContinualBackprop, seed: int, stats: dict[str, Any]):
        self.cbp, self.seed, self.stats = cbp, seed, stats

    def on_train_begin(self, args, state, control, **kwargs):
        self.cbp.attach()

    def on_step_end(self, args, state, control, **kwargs):
        self.cbp.step(derive_seed(self.seed, "cbp", state.global_step))

    def on_train_end(self, args, state, control, **kwargs):
        self.cbp.detach()
        self.stats["cbp_replaced"] = dict(self.cbp.replaced)
        self.stats["cbp_replaced_total"] = sum(self.cbp.replaced.values())
        if args.should_save:
            save_file(self.cbp.state_dict(), str(Path(args.output_dir) / CBP_FILE))

    def write_checkpoint(self, folder: Path, args) -> None:
        """Called by the trainer while it writes a checkpoint, before marking it complete."""
        if args.should_save:
            state = self.cbp.state_dict()
            replaced = {f"replaced.{i}": torch.tensor([n]) for i, n in enumerate(self.cbp.replaced.values())}
            save_file({**state, **replaced}, str(folder / CBP_FILE))


@register_strategy("cbp")
class ContinualBackpropStrategy(Strategy):
    """Warm start plus continual backpropagation during every phase's training (``cbp_replacement_rate``
    1e-5, ``cbp_maturity_threshold`` 1000, ``cbp_decay_rate`` 0.99: the incremental CIFAR-100 values).
    Unit ages and magnitudes carry across phases, as the reference's one ``ResGnT`` object lives through
    all tasks, and so does the optimizer state unless ``optimizer_state: reset`` (the reference builds its
    SGD once: momentum carries across tasks). The replaced units' momentum is kept, as the reference does."""

    reference = "Continual backprop, Dohare et al. 2024 (lop/algos/res_gnt.py; rate 1e-5, maturity 1000)"
    default_optimizer_state = "carry"
    tasks = ("classification", "finetune")

    def __init__(self, options):
        super().__init__(options)
        self.state: dict[str, torch.Tensor] | None = None
        self.cbp: ContinualBackprop | None = None

    def prepare(self, ctx: PhaseContext) -> PhaseStart:
        o = self.options
        if self.cbp is not None:
            self.state = self.cbp.state_dict()  # the previous phase's end, in this process
        rate, maturity, decay = o.cbp_replacement_rate, o.cbp_maturity_threshold, o.cbp_decay_rate
        self.cbp = ContinualBackprop(ctx.previous_model, rate, maturity, decay)
        saved = _saved_state(ctx)
        if saved is not None:
            self.state = saved
        if self.state is not None:
            self.cbp.load_state_dict(self.state)
        if ctx.resume_checkpoint and (Path(ctx.resume_checkpoint) / CBP_FILE).exists():
            self.cbp.replaced = _replaced_counts(self.cbp, load_file(str(Path(ctx.resume_checkpoint) / CBP_FILE)))
        stats: dict[str, Any] = {"cbp_replacement_rate": o.cbp_replacement_rate}
        return PhaseStart(
            model=ctx.previous_model,
            carry_optimizer_state=self.carries_optimizer_state(),
            callbacks=[CBPCallback(self.cbp, ctx.seed, stats)],
            stats=stats,
        )


def _saved_state(ctx: PhaseContext) -> dict[str, torch.Tensor] | None:
    """The state to continue from a file: the interrupted phase's checkpoint, else the previous phase."""
    if ctx.resume_checkpoint and (Path(ctx.resume_checkpoint) / CBP_FILE).exists():
        return load_file(str(Path(ctx.resume_checkpoint) / CBP_FILE))
    if ctx.previous_phase_dir is not None and (ctx.previous_phase_dir / CBP_FILE).exists():
        return load_file(str(ctx.previous_phase_dir / CBP_FILE))
    return None


def _replaced_counts(cbp: ContinualBackprop, state: dict[str, torch.Tensor]) -> dict[str, int]:
    return {layer.name: int(state[f"replaced.{i}"][0]) for i, layer in enumerate(cbp.layers)}


@register_recipe_check
def check_cbp_options(config: RecipeConfig) -> None:
    """Fail fast on cbp options out of range, and on CUDA graphs (the hooks and host-side decisions
    change the work from step to step)."""
    s = config.strategy
    checks = (
        ("cbp_replacement_rate", s.cbp_replacement_rate, 0 < s.cbp_replacement_rate <= 1, "it must be in (0, 1]"),
        ("cbp_maturity_threshold", s.cbp_maturity_threshold, s.cbp_maturity_threshold >= 1, "it must be at least 1"),
        ("cbp_decay_rate", s.cbp_decay_rate, 0 <= s.cbp_decay_rate < 1, "it must be in [0, 1)"),
    )
    for name, value, ok, allowed in checks:
        if not ok:
            raise ConfigError(f"Recipe field `{name}` has value {value!r}; {allowed}. Fix: change `{name}`.")
    mode = getattr(config.model, "finetune_mode", "full")
    if "cbp" in config.incremental.strategies and mode != "full":
        raise ConfigError(
            f"Strategy `cbp` replaces backbone units, but Recipe field `finetune_mode` has value {mode!r} (a frozen "
            "backbone, whose replaced units would never train). Fix: set `finetune_mode: full` or drop `cbp`."
        )
    tr = config.training
    if "cbp" in config.incremental.strategies and tr.torch_compile and tr.torch_compile_mode == "reduce-overhead":
        raise ConfigError(
            "Strategy `cbp` cannot run with torch_compile_mode 'reduce-overhead' (CUDA graphs): its forward hooks "
            "and per-step replacements change the captured work. Fix: drop `cbp` or set torch_compile_mode to "
            "'default'."
        )
