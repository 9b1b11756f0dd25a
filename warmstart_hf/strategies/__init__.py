"""Between-phase strategies, registered by name (the timm registry pattern).

``create_strategy("warm", options)`` builds one; the loop never branches on a strategy's name, so a
new strategy is one module with ``@register_strategy("name")`` (from ``strategies.registry``).
"""

from __future__ import annotations

# Registering imports (each module adds its strategies to STRATEGIES).
from warmstart_hf.strategies import aid, cbp, hare_tortoise, redo, regularizers, resets, warm_cold  # noqa: F401
from warmstart_hf.strategies.base import PhaseContext, PhaseStart, Strategy
from warmstart_hf.strategies.dash import dash
from warmstart_hf.strategies.registry import (
    STRATEGIES,
    check_strategies,
    create_strategy,
    mixed_optimizer_policies,
    register_strategy,
)
from warmstart_hf.strategies.shrink_perturb import shrink_perturb

__all__ = [
    "STRATEGIES",
    "PhaseContext",
    "PhaseStart",
    "Strategy",
    "check_strategies",
    "create_strategy",
    "dash",
    "mixed_optimizer_policies",
    "register_strategy",
    "shrink_perturb",
]
