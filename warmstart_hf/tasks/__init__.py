"""Tasks: what a phase trains and how it is judged, one module per kind, registered by name."""

from warmstart_hf.tasks import (  # noqa: F401 - registers them
    causal_lm,
    classification,
    finetune,
    linear_probe,
    mae_pretrain,
    text_classification,
)
from warmstart_hf.tasks.base import Task, TaskData
from warmstart_hf.tasks.registry import TASKS, check_task, create_task, register_task

__all__ = ["TASKS", "Task", "TaskData", "check_task", "create_task", "register_task"]
