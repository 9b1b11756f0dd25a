"""Loss-aligned checkpoints (the target study's Fig. 4): warm pretraining reaches a lower loss than
cold, so the two are compared downstream at checkpoints of equal pretraining loss.

Rule: for every phase p, one arm's end-of-phase probe loss is the target (``cold`` for
``warm_to_cold``, the default; ``warm`` for ``cold_to_warm``). The candidates are every saved
checkpoint of the other (moving) arm trained only on data available at phase p: the points of its
probe curves of phases 0..p (snapshots taken every ``probe_every_steps``, and each phase's end; for
warm the end of phase p-1 is also the start of phase p). A start that is a fresh initialisation
(every arm's phase 0, cold's every phase) has a probe loss (``start_probe_loss``) but no saved
snapshot, so it is not a candidate. The candidate whose probe loss is nearest the target is chosen
(ties: the earlier phase, then the earlier step) and recorded as ``chosen_phase``, ``chosen_step``
and ``chosen_snapshot`` (a path relative to the arm directory). A phase whose chosen pair differs by
more than ``tolerance`` (absolute probe loss) is flagged: no checkpoint of the moving arm reached the
target; downstream averages leave flagged pairs out and list them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from warmstart_hf.io import atomic_write_json, read_jsonl

DIRECTIONS = {"warm_to_cold": ("warm", "cold"), "cold_to_warm": ("cold", "warm")}


def candidates(moving: dict[str, Any], earlier: list[dict[str, Any]] = ()) -> list[dict[str, Any]]:
    """The probe-curve points of ``earlier`` (the moving arm's records of the phases before) and of
    ``moving`` (its record of the phase aligned), each with its ``phase``."""
    return [{**point, "phase": record["phase"]} for record in (*earlier, moving) for point in record["probe_curve"]]


def choose(curve: list[dict[str, Any]], target: float) -> dict[str, Any]:
    """The curve point (``step``, ``probe_loss``, ``snapshot``, optional ``phase``) nearest ``target``;
    ties: the earlier phase, then the earlier step."""
    return min(curve, key=lambda point: (abs(point["probe_loss"] - target), point.get("phase", 0), point["step"]))


def align_phase(
    moving: dict[str, Any], fixed: dict[str, Any], tolerance: float, earlier: list[dict[str, Any]] = ()
) -> dict[str, Any]:
    """One phase: ``moving`` and ``fixed`` are the two arms' records of that phase, ``earlier`` the
    moving arm's records of the phases before it (their checkpoints are candidates too)."""
    target = fixed["probe_loss"]
    chosen = choose(candidates(moving, earlier), target)
    gap = chosen["probe_loss"] - target
    return {
        "phase": moving["phase"],
        "target_loss": target,
        "target_step": fixed["steps"],
        "chosen_phase": chosen["phase"],
        "chosen_step": chosen["step"],
        "chosen_loss": chosen["probe_loss"],
        "chosen_snapshot": chosen.get("snapshot"),
        "gap": gap,
        "end_of_phase_gap": moving["probe_loss"] - target,
        "within_tolerance": abs(gap) <= tolerance,
    }


def align_arms(moving: list[dict], fixed: list[dict], tolerance: float) -> list[dict[str, Any]]:
    """Every phase of two arms' records (in phase order), each against all earlier checkpoints too."""
    return [align_phase(m, f, tolerance, moving[:index]) for index, (m, f) in enumerate(zip(moving, fixed))]


def chosen_phase(aligned: dict[str, Any]) -> int:
    """The phase of the chosen checkpoint; files written before the candidates spanned earlier phases
    lack ``chosen_phase`` and chose within the phase itself."""
    return aligned.get("chosen_phase", aligned["phase"])


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
    rule = " ".join(__doc__.split("Rule: ")[1].split())
    atomic_write_json(
        path,
        {"direction": direction, "tolerance": tolerance, "candidates": "phases <= p", "rule": rule, "seeds": seeds},
    )
    return path
