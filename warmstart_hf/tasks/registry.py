"""The task registry: names -> Task classes, and the recipe check that a recipe's task exists and
that each of its strategies serves it."""

from __future__ import annotations

from warmstart_hf.config import REGISTERED_NAMES, ConfigError, RecipeConfig, register_recipe_check
from warmstart_hf.registry import Registry
from warmstart_hf.strategies import STRATEGIES
from warmstart_hf.tasks.base import Task

TASKS: Registry = Registry("task")
REGISTERED_NAMES["task"] = TASKS  # --help lists them
register_task = TASKS.register


def create_task(config: RecipeConfig) -> Task:
    return TASKS[config.incremental.task](config)


@register_recipe_check
def check_task(config: RecipeConfig) -> None:
    """Recipe check: the task is known and every strategy of the recipe declares that it serves it."""
    task = config.incremental.task
    if task not in TASKS:
        raise ConfigError(
            f"Recipe field `task` has value {task!r}; known tasks are {sorted(TASKS)}. Fix: change `task`."
        )
    for name in config.incremental.strategies:
        served = STRATEGIES[name].tasks if name in STRATEGIES else (task,)
        if task not in served:
            raise ConfigError(
                f"Recipe field `strategies` lists {name!r}, which does not serve task {task!r} (it serves "
                f"{list(served)}). Fix: drop {name!r} from `strategies` or change `task`."
            )
