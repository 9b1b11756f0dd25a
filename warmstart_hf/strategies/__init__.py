"""Between-phase strategies, registered by name (the timm registry pattern).

``create_strategy("warm", options)`` builds one; the loop never branches on a strategy's name, so a
new strategy is one module with ``@register_strategy("name")``.
"""

from __future__ import annotations

from collections.abc import Callable

from warmstart_hf.config import StrategyArguments
from warmstart_hf.strategies.base import PhaseContext, PhaseStart, Strategy

STRATEGIES: dict[str, type[Strategy]] = {}


def register_strategy(name: str) -> Callable[[type[Strategy]], type[Strategy]]:
    def decorate(cls: type[Strategy]) -> type[Strategy]:
        if name in STRATEGIES:
            raise ValueError(f"strategy {name!r} is already registered")
        cls.name = name
        STRATEGIES[name] = cls
        return cls

    return decorate


def create_strategy(name: str, options: StrategyArguments | None = None) -> Strategy:
    if name not in STRATEGIES:
        raise KeyError(f"unknown strategy {name!r}; known: {sorted(STRATEGIES)}")
    return STRATEGIES[name](options or StrategyArguments())


def mixed_optimizer_policies(names: list[str], options: StrategyArguments) -> str | None:
    """A warning when the warm-derived arms of a comparison treat the optimizer state differently
    (then a gap to cold mixes the intervention with the optimizer policy), else None."""
    policies = {n: create_strategy(n, options).optimizer_policy() for n in names if STRATEGIES[n].warm_derived}
    if len(set(policies.values())) < 2:
        return None
    listed = ", ".join(f"{n}: {p}" for n, p in policies.items())
    return (
        f"the warm-derived arms mix optimizer-state policies ({listed}), so their gaps to cold also differ by "
        "the optimizer policy. Set `optimizer_state: reset` or `carry` in the recipe to compare like with like."
    )


# Registering imports (each module adds its strategies to STRATEGIES).
from warmstart_hf.strategies import hare_tortoise, regularizers, resets, warm_cold  # noqa: E402,F401
from warmstart_hf.strategies.dash import dash  # noqa: E402
from warmstart_hf.strategies.shrink_perturb import shrink_perturb  # noqa: E402

__all__ = [
    "STRATEGIES",
    "PhaseContext",
    "PhaseStart",
    "Strategy",
    "create_strategy",
    "mixed_optimizer_policies",
    "dash",
    "register_strategy",
    "shrink_perturb",
]
