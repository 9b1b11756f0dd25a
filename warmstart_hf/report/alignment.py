"""Loss-aligned checkpoints (the target study's Fig. 4): warm pretraining reaches a lower loss than
cold, so the two are compared downstream at checkpoints of equal pretraining loss.

Rule: for every phase, one arm's end-of-phase probe loss is the target (``cold`` for
``warm_to_cold``, the default; ``warm`` for ``cold_to_warm``); among the other arm's snapshots of
that phase (taken every ``probe_every_steps`` and at the end), the one whose probe loss is nearest
the target is chosen (ties: the earlier step). A phase whose chosen pair differs by more than
``tolerance`` (absolute probe loss) is flagged: no snapshot of the moving arm reached the target.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from warmstart_hf.io import atomic_write_json, read_jsonl

DIRECTIONS = {"warm_to_cold": ("warm", "cold"), "cold_to_warm": ("cold", "warm")}


def choose(curve: list[dict[str, Any]], target: float) -> dict[str, Any]:
    """The curve point (``step``, ``probe_loss``, ``snapshot``) nearest ``target``; ties: earlier step."""
    return min(curve, key=lambda point: (abs(point["probe_loss"] - target), point["step"]))


def align_phase(moving: dict[str, Any], fixed: dict[str, Any], tolerance: float) -> dict[str, Any]:
    """One phase: ``moving`` and ``fixed`` are the two arms' records of that phase."""
    target = fixed["probe_loss"]
    chosen = choose(moving["probe_curve"], target)
    gap = chosen["probe_loss"] - target
    return {
        "phase": moving["phase"],
        "target_loss": target,
        "target_step": fixed["steps"],
        "chosen_step": chosen["step"],
        "chosen_loss": chosen["probe_loss"],
        "chosen_snapshot": chosen.get("snapshot"),
        "gap": gap,
        "end_of_phase_gap": moving["probe_loss"] - target,
        "within_tolerance": abs(gap) <= tolerance,
    }


def align_arms(moving: list[dict], fixed: list[dict], tolerance: float) -> list[dict[str, Any]]:
    return [align_phase(m, f, tolerance) for m, f in zip(moving, fixed)]


def write_alignment(run_dir: str | Path, direction: str = "warm_to_cold", tolerance: float = 0.01) -> Path:
    """``alignment.json`` in the run directory: per seed with both arms finished, the chosen pair of
    every phase, its losses and gap, and the flagged phases."""
    if direction not in DIRECTIONS:
        raise ValueError(f"direction {direction!r}: use one of {sorted(DIRECTIONS)}")
    run_dir = Path(run_dir)
    moving_name, fixed_name = DIRECTIONS[direction]
    seeds = {}
    for moving_dir in sorted(run_dir.glob(f"{moving_name}-seed*")):
        seed = moving_dir.name.split("-seed")[-1]
        fixed_path = run_dir / f"{fixed_name}-seed{seed}" / "results.jsonl"
        moving, fixed = read_jsonl(moving_dir / "results.jsonl"), read_jsonl(fixed_path)
        if not moving or not fixed or "probe_curve" not in moving[0]:
            continue
        phases = align_arms(moving, fixed, tolerance)
        seeds[seed] = {"phases": phases, "flagged": [p["phase"] for p in phases if not p["within_tolerance"]]}
    path = run_dir / "alignment.json"
    atomic_write_json(
        path, {"direction": direction, "tolerance": tolerance, "rule": __doc__.split("Rule: ")[1], "seeds": seeds}
    )
    return path
