"""AID: activation by interval-wise dropout (Park, Han, Oh and Kim, ICML 2025, "Activation by Interval-wise
Dropout: A Simple Way to Prevent Neural Networks from Plasticity Loss", arXiv 2502.01342).

Reference code: the authors' ``AID(nn.Module)`` activation (``p=0.9``; in training
``x * (pos_mask + neg_mask)`` with ``pos_mask = (x >= 0) * Bernoulli(p)``, ``neg_mask = (x < 0) *
Bernoulli(1 - p)``, no rescaling; in evaluation ``p * x`` on ``x >= 0`` and ``(1 - p) * x`` on ``x < 0``),
as found in the code index (kohya-ss/sd-scripts library/model_utils.py carries an earlier revision of the
same class, which rescaled twice through ``F.dropout`` and was replaced by the unscaled one). The module
here (``models/aid.py``) is written anew from that formulation; it draws one mask per element instead of
two per element, the same distribution.

The arm: warm start in which every ReLU of the network is AID(``aid_p``) from phase 0 on. The activation
has no parameters, so the arm starts from the same theta0 as warm and cold (the same weights; only the
nonlinearity differs) and is warm-derived; AID is part of the arm's architecture in every phase, not an
intervention between phases.
"""

from __future__ import annotations

from torch import nn

from warmstart_hf.config import ConfigError, RecipeConfig, register_recipe_check
from warmstart_hf.models.aid import replace_relus
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


@register_strategy("aid")
class ActivationByIntervalDropout(Strategy):
    """Warm start with AID(``aid_p``, default 0.9) in place of every ReLU, in every phase (applied again
    at each phase start: idempotent, and a model loaded from a phase directory has them already).
    Optimizer: reset unless ``optimizer_state: carry``. Masks come from torch's global RNG on the training
    device, which the Trainer seeds and restores on resume."""

    reference = "Park et al. 2025, AID (activation by interval-wise dropout), p = 0.9"
    tasks = ("classification", "finetune")

    def prepare(self, ctx: PhaseContext) -> PhaseStart:
        p = self.options.aid_p
        layers = apply_aid(ctx.previous_model, p)
        return PhaseStart(
            model=ctx.previous_model,
            carry_optimizer_state=self.carries_optimizer_state(),
            stats={"aid_p": p, "aid_layers": layers},
        )


@register_recipe_check
def check_aid_fast_path(config: RecipeConfig) -> None:
    """AID draws fresh masks every step; CUDA graphs replay captured kernels, which is not verified to
    draw new masks each replay (nor to match the eager stream on resume): refused."""
    tr = config.training
    if "aid" in config.incremental.strategies and tr.torch_compile and tr.torch_compile_mode == "reduce-overhead":
        raise ConfigError(
            "Strategy `aid` is not supported with torch_compile_mode 'reduce-overhead' (CUDA graphs): its random "
            "masks are not verified under graph replay. Fix: set `torch_compile_mode` to 'default' or drop `aid`."
        )
