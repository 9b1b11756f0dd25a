"""AID: activation by interval-wise dropout (Park, Han, Oh and Kim, ICML 2025, "Activation by Interval-wise
Dropout: A Simple Way to Prevent Neural Networks from Plasticity Loss", arXiv 2502.01342).

Reference code: the ``AID(nn.Module)`` activation class released for the paper (``p=0.9``; in training
``x * (pos_mask + neg_mask)`` with ``pos_mask = (x >= 0) * Bernoulli(p)``, ``neg_mask = (x < 0) *
Bernoulli(1 - p)``, no rescaling; in evaluation ``p * x`` on ``x >= 0`` and ``(1 - p) * x`` on ``x < 0``).
The code index holds that class without its repository's name; kohya-ss/sd-scripts
library/model_utils.py (class ``AID``) holds an earlier revision of it, which rescaled twice through
``F.dropout`` (and returned ``-(1 - p) x`` for negatives in evaluation) and which the unscaled one replaced.
The module here (``models/aid.py``) is written anew from that formulation; it draws one mask per element
instead of two per element, the same distribution.

The arm: warm start in which every ReLU of the network is AID(``aid_p``) from phase 0 on. The activation
has no parameters, so the arm starts from the same theta0 as warm and cold (the same weights; only the
nonlinearity differs) and is warm-derived; AID is part of the arm's architecture in every phase, not an
intervention between phases.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import TrainerCallback

from warmstart_hf.config import ConfigError, RecipeConfig, register_recipe_check
from warmstart_hf.models.aid import AID, MaskGenerator, replace_relus
from warmstart_hf.seeding import derive_seed
from warmstart_hf.strategies.base import PhaseContext, PhaseStart, Strategy
from warmstart_hf.strategies.registry import register_strategy


def apply_aid(model: nn.Module, p: float) -> int:
    """Make every ReLU of ``model`` AID(p) and record ``aid_p`` in its config, so that ``save_pretrained``
    / ``from_pretrained`` of a phase directory rebuilds the AID layers. Returns the number of AID layers."""
    count = replace_relus(model, p)
    if count == 0:
        raise ConfigError(
            f"Strategy `aid` replaces the network's nn.ReLU activations, but {type(model).__name__} has none. "
            "Fix: use a ReLU network (e.g. model_name resnet18_cifar, or a timm ResNet for finetune)."
        )
    config = getattr(model, "config", None)
    if config is not None:
        config.aid_p = p
    return count


MASKS_FILE = "aid_masks-rank{rank}.safetensors"


class AIDMasksCallback(TrainerCallback):
    """Saves the mask generator's state into each Trainer checkpoint (one file per process), so that an
    interrupted phase resumes with the masks an uninterrupted one would draw."""

    def __init__(self, masks: MaskGenerator):
        self.masks = masks

    def write_checkpoint(self, folder: Path, args) -> None:
        """Called by the trainer while it writes a checkpoint, before marking it complete."""
        state = self.masks.state()
        if state is not None:
            save_file({"state": state.cpu().contiguous()}, str(folder / MASKS_FILE.format(rank=args.process_index)))


def _process_index() -> int:
    dist = torch.distributed
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def phase_masks(model: nn.Module, seed: int, resume_checkpoint: str | None) -> MaskGenerator:
    """One generator for every AID layer of ``model``, seeded for the arm, the phase and the process (each
    rank's shard draws its own masks, as one process's batch would), or in the state of the checkpoint the
    phase resumes from."""
    rank = _process_index()
    masks = MaskGenerator(seed if rank == 0 else derive_seed(seed, "aid-masks", rank))
    saved = Path(resume_checkpoint or "") / MASKS_FILE.format(rank=rank)
    if resume_checkpoint and saved.exists():
        masks.load(load_file(str(saved))["state"])
    for module in model.modules():
        if isinstance(module, AID):
            module.masks = masks
    return masks


@register_strategy("aid")
class ActivationByIntervalDropout(Strategy):
    """Warm start with AID(``aid_p``, default 0.9) in place of every ReLU, in every phase (applied again
    at each phase start: idempotent, and a model loaded from a phase directory has them already).
    Optimizer: reset unless ``optimizer_state: carry``. The masks come from a generator of their own on the
    training device, seeded from the arm seed, the phase and the process and saved in every
    checkpoint; torch's global stream (augmentation) is untouched, so ``aid_p: 1`` trains exactly as warm."""

    reference = "Park et al. 2025, AID (activation by interval-wise dropout), p = 0.9"
    tasks = ("classification", "finetune")

    def prepare(self, ctx: PhaseContext) -> PhaseStart:
        p = self.options.aid_p
        layers = apply_aid(ctx.previous_model, p)
        masks = phase_masks(ctx.previous_model, ctx.seed, ctx.resume_checkpoint)
        return PhaseStart(
            model=ctx.previous_model,
            carry_optimizer_state=self.carries_optimizer_state(),
            callbacks=[AIDMasksCallback(masks)],
            stats={"aid_p": p, "aid_layers": layers},
        )


@register_recipe_check
def check_aid_fast_path(config: RecipeConfig) -> None:
    """AID draws from its own generator every step; torch.compile (and CUDA graphs, which replay captured
    kernels) is not verified to draw the same masks from it: refused."""
    tr = config.training
    if "aid" in config.incremental.strategies and tr.torch_compile:
        raise ConfigError(
            f"Strategy `aid` is not supported with torch_compile (torch_compile_mode {tr.torch_compile_mode!r}; "
            "'reduce-overhead' is CUDA graphs): its seeded masks are not verified under compilation or graph "
            "replay. Fix: set `torch_compile: false` or drop `aid` from `strategies`."
        )
