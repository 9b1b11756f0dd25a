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
    "dash",
    "register_strategy",
    "shrink_perturb",
]
