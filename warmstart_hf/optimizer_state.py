"""Carry an optimizer's state (SGD momentum, Adam moments) from one phase's optimizer to the next.

Stored as safetensors (no pickle) so a phase directory can be shared and loaded safely.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file


def save_optimizer_state(state: dict[str, Any], path: str | Path) -> None:
    tensors, scalars = {}, {}
    for pid, entries in state["state"].items():
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{pid}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{pid}.{key}"] = value
    groups = [
        {k: v for k, v in g.items() if k != "params"} | {"params": list(g["params"])} for g in state["param_groups"]
    ]
    save_file(tensors, str(path), metadata={"param_groups": json.dumps(groups), "scalars": json.dumps(scalars)})


def load_optimizer_state(path: str | Path) -> dict[str, Any]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
    state: dict[int, dict[str, Any]] = {}
    for name, tensor in load_file(str(path)).items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = tensor
    for name, value in json.loads(metadata["scalars"]).items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    return {"state": state, "param_groups": json.loads(metadata["param_groups"])}


def apply_optimizer_state(optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """Load the per-parameter state but keep the new optimizer's hyperparameters (lr, wd, ...),
    so the learning-rate schedule restarts each phase as in every reference."""
    fresh = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
    # Loaded under the new optimizer's kernel choice: a fused (or capturable) optimizer keeps its step
    # counts on the device, and load_state_dict places them by the flags it reads.
    kernel = ("fused", "foreach", "capturable")
    groups = [{**saved, **{k: new[k] for k in kernel if k in new}} for saved, new in zip(state["param_groups"], fresh)]
    optimizer.load_state_dict({**state, "param_groups": groups})
    for group, hyper in zip(optimizer.param_groups, fresh):
        group.update(hyper)
