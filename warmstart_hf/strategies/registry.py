"""The strategy registry (the timm ``register_model`` pattern): names -> Strategy classes, the recipe
check on ``strategies`` and the optimizer-policy warning. Strategy modules import this module, the
package ``__init__`` imports them: no module imports its own package."""

from __future__ import annotations

from warmstart_hf.config import REGISTERED_NAMES, ConfigError, RecipeConfig, StrategyArguments, register_recipe_check
from warmstart_hf.registry import Registry
from warmstart_hf.strategies.base import Strategy

STRATEGIES: Registry = Registry("strategy")
REGISTERED_NAMES["strategies"] = STRATEGIES  # --help lists them
register_strategy = STRATEGIES.register


def create_strategy(name: str, options: StrategyArguments | None = None) -> Strategy:
    if name not in STRATEGIES:
        raise KeyError(f"unknown strategy {name!r}; known: {sorted(STRATEGIES)}")
    return STRATEGIES[name](options or StrategyArguments())


@register_recipe_check
def check_strategies(config: RecipeConfig) -> None:
    """Recipe check: at least one strategy, each known, none twice."""
    names = config.incremental.strategies
    fix = f"Fix: list strategies from {sorted(STRATEGIES)}, each once."
    if not names:
        raise ConfigError(f"Recipe field `strategies` has value {names!r}; list at least one. {fix}")
    for name in names:
        if name not in STRATEGIES:
            known = f"known strategies are {sorted(STRATEGIES)}"
            raise ConfigError(f"Recipe field `strategies` has value {name!r}; {known}. {fix}")
    if len(set(names)) != len(names):
        raise ConfigError(f"Recipe field `strategies` has value {names!r}; each strategy may appear once. {fix}")


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
