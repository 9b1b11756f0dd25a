"""Loss alignment (the target study's Fig. 4) and the downstream tables (Fig. 5) on records written
here: the candidates span the earlier phases, the choice names its phase and step, flagged pairs
stay out of the aligned averages and are listed, the warm - cold gap is paired by seed, and probes
whose training loss did not plateau are marked. No training runs."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

from warmstart_hf import downstream
from warmstart_hf.io import append_jsonl_atomic
from warmstart_hf.report.alignment import write_alignment
from warmstart_hf.report.pretraining import fig4_section

T_975_DF2 = 4.302652729911275  # scipy.stats.t.ppf(0.975, 2)


def _curve(phase: int, points: list[tuple[int, float]]) -> list[dict]:
    """Probe-curve points as mae_pretrain records them: snapshots inside the phase, its end last."""
    last = points[-1][0]
    return [
        {
            "step": step,
            "probe_loss": loss,
            "snapshot": f"phase-{phase:02d}" if step == last else f"phase-{phase:02d}/snapshots/step-{step:07d}",
        }
        for step, loss in points
    ]


def _record(strategy: str, phase: int, points: list[tuple[int, float]], start: float) -> dict:
    curve = _curve(phase, points)
    return {
        "strategy": strategy,
        "seed": 0,
        "phase": phase,
        "steps": curve[-1]["step"],
        "probe_loss": curve[-1]["probe_loss"],
        "probe_curve": curve,
        "start_probe_loss": start,
    }


def _pretraining_run(tmp_path: Path, cold_ends: tuple[float, float]) -> Path:
    """Warm: phase 0 falls 0.9 -> 0.5; phase 1 restarts its learning rate (0.48 mid warm-up) and ends
    at 0.35. Cold: phase 0 is warm's; phase 1 from a fresh draw (start 0.51) ends at ``cold_ends[1]``."""
    run = tmp_path / "pretrain"
    warm = [
        _record("warm", 0, [(2, 0.9), (4, 0.6), (6, 0.5)], 1.0),
        _record("warm", 1, [(2, 0.48), (4, 0.40), (6, 0.35)], 0.5),
    ]
    cold = [
        _record("cold", 0, [(2, 0.9), (4, 0.6), (6, cold_ends[0])], 1.0),
        _record("cold", 1, [(2, 0.8), (4, 0.65), (6, cold_ends[1])], 0.51),
    ]
    for name, records in (("warm-seed0", warm), ("cold-seed0", cold)):
        for record in records:
            append_jsonl_atomic(run / name / "results.jsonl", record)
    return run


def test_the_candidates_span_earlier_phases_and_the_choice_names_its_phase_and_step(tmp_path):
    # cold's phase-1 end (0.51) lies between warm's phase-0 end (0.50, the start of warm's phase 1) and
    # anything warm does in phase 1 (0.48 at best, mid warm-up): the end of phase 0 is the aligned one
    run = _pretraining_run(tmp_path, (0.5, 0.51))
    alignment = json.loads(write_alignment(run, "warm_to_cold", tolerance=0.015).read_text())
    phase1 = alignment["seeds"]["0"]["phases"][1]
    assert (phase1["chosen_phase"], phase1["chosen_step"], phase1["chosen_snapshot"]) == (0, 6, "phase-00")
    assert phase1["gap"] == pytest.approx(-0.01) and phase1["within_tolerance"]
    assert alignment["seeds"]["0"]["flagged"] == []
    assert "earlier phase" in alignment["rule"] and "start_probe_loss" in alignment["rule"]
    # a snapshot inside phase 0 (0.6 at step 4) is nearest a target of 0.61
    run = _pretraining_run(tmp_path / "b", (0.5, 0.61))
    phase1 = json.loads(write_alignment(run, "warm_to_cold", tolerance=0.015).read_text())["seeds"]["0"]["phases"][1]
    assert (phase1["chosen_phase"], phase1["chosen_step"]) == (0, 4)
    assert phase1["chosen_snapshot"] == "phase-00/snapshots/step-0000004"


def test_ties_go_to_the_earlier_phase_and_a_fresh_start_is_no_candidate(tmp_path):
    run = _pretraining_run(tmp_path, (0.5, 0.49))  # warm's 0.50 (phase 0 end) and 0.48 (phase 1) are equidistant
    phases = json.loads(write_alignment(run, "warm_to_cold", tolerance=0.015).read_text())["seeds"]["0"]["phases"]
    assert (phases[1]["chosen_phase"], phases[1]["chosen_step"]) == (0, 6)
    # cold_to_warm: cold moves; its phase-1 start (0.51, a fresh draw with no snapshot) is never chosen,
    # but its phase-0 checkpoints (data available at phase 1) are
    run = _pretraining_run(tmp_path / "b", (0.5, 0.3))
    phases = json.loads(write_alignment(run, "cold_to_warm", tolerance=0.2).read_text())["seeds"]["0"]["phases"]
    assert phases[1]["target_loss"] == pytest.approx(0.35)
    assert (phases[1]["chosen_phase"], phases[1]["chosen_step"], phases[1]["chosen_loss"]) == (1, 6, 0.3)
    run = _pretraining_run(tmp_path / "c", (0.5, 0.3))
    warm = run / "warm-seed0" / "results.jsonl"
    lines = warm.read_text().splitlines()
    last = json.loads(lines[1])
    last["probe_loss"] = last["probe_curve"][-1]["probe_loss"] = 0.52  # warm's target: cold's start 0.51 is nearer
    warm.write_text(lines[0] + "\n" + json.dumps(last) + "\n")
    phases = json.loads(write_alignment(run, "cold_to_warm", tolerance=0.2).read_text())["seeds"]["0"]["phases"]
    assert (phases[1]["chosen_phase"], phases[1]["chosen_loss"]) == (0, 0.5)  # cold's phase-0 end, not its start


def test_the_study_table_names_the_chosen_phase_and_flags_but_keeps_a_flagged_phase(tmp_path):
    run = _pretraining_run(tmp_path, (0.5, 0.2))  # nothing of warm reaches 0.2: phase 1 flagged
    write_alignment(run, "warm_to_cold", tolerance=0.015)
    out = tmp_path / "report"
    out.mkdir()
    text = "".join(fig4_section([("demo", run)], out))
    header = next(line for line in text.splitlines() if line.startswith("| run"))
    assert "chosen_phase" in header and "flagged" in header
    rows = list(csv.DictReader((out / "alignment.csv").open()))
    assert [(r["phase"], r["chosen_phase"], r["flagged"]) for r in rows] == [("0", "0", ""), ("1", "1", "flagged")]
    assert (out / "fig4.png").stat().st_size > 0
    # an alignment.json written before chosen_phase existed still reads (the choice was within the phase)
    alignment = json.loads((run / "alignment.json").read_text())
    for p in alignment["seeds"]["0"]["phases"]:
        del p["chosen_phase"]
    (run / "alignment.json").write_text(json.dumps(alignment))
    fig4_section([("demo", run)], out)
    assert [r["chosen_phase"] for r in csv.DictReader((out / "alignment.csv").open())] == ["0", "1"]


def test_the_hub_card_of_an_aligned_checkpoint_names_its_phase_and_step_and_says_flagged():
    from warmstart_hf.hub import _aligned_note

    chosen = {"phase": 2, "chosen_phase": 1, "chosen_step": 40, "chosen_loss": 0.5, "target_loss": 0.51}
    note = _aligned_note({**chosen, "gap": -0.01, "within_tolerance": True})
    assert "Loss-aligned checkpoint of phase 2: the checkpoint at step 40 of phase 1" in note
    assert "FLAGGED" not in note
    assert "FLAGGED" in _aligned_note({**chosen, "gap": -0.3, "within_tolerance": False})


# --- Fig. 5 --------------------------------------------------------------------------------------

# (seed, phase) -> top-1 of warm's aligned snapshot and of cold's end of phase (warm_to_cold: cold's
# aligned checkpoint is its end of phase); seed 0 phase 1 is flagged
ALIGNED = {(0, 0): (0.70, 0.62), (0, 1): (0.10, 0.90), (1, 0): (0.72, 0.66), (1, 1): (0.80, 0.69)}
ALIGNED.update({(2, 0): (0.60, 0.55), (2, 1): (0.84, 0.74)})
WARM_END = 0.65  # every end of phase of warm


def _alignment_run(tmp_path: Path) -> Path:
    run = tmp_path / "pretrain"
    run.mkdir(parents=True)
    seeds = {}
    for seed in range(3):
        phases = [
            {
                "phase": phase,
                "chosen_phase": phase,
                "chosen_step": 4,
                "chosen_snapshot": f"phase-{phase:02d}/snapshots/step-0000004",
                "within_tolerance": (seed, phase) != (0, 1),
            }
            for phase in range(2)
        ]
        seeds[str(seed)] = {"phases": phases, "flagged": [1] if seed == 0 else []}
    alignment = {"direction": "warm_to_cold", "tolerance": 0.01, "seeds": seeds}
    (run / "alignment.json").write_text(json.dumps(alignment))
    return run


def _fake_evaluate(plateaued=lambda point: None):
    def evaluate(recipe, stem, point, out, overrides):
        assert overrides == []  # the command line added nothing
        warm, cold = ALIGNED[point["seed"], point["phase"]]
        if point["arm"] == "warm":
            accuracy = WARM_END if point["kind"] == "end_of_phase" else warm
        else:
            assert point["kind"] == "end_of_phase"  # the same checkpoint as cold's aligned one: evaluated once
            accuracy = cold
        return {"test_accuracy": accuracy, "plateaued": plateaued(point), "train_loss_tail_fraction": None}

    return evaluate


def _evaluate_run(tmp_path, monkeypatch, plateaued=lambda point: None) -> tuple[str, list[dict]]:
    from tests.conftest import REPO

    run = _alignment_run(tmp_path)
    monkeypatch.setattr(downstream, "_evaluate", _fake_evaluate(plateaued))
    out = downstream.evaluate_run(run, [str(REPO / "recipes" / "mae" / "demo_probe_digits.yaml")])
    return (out / "downstream.md").read_text(), list(csv.DictReader((out / "downstream.csv").open()))


def _cell(table: str, *cells: str) -> list[str]:
    line = next(line for line in table.splitlines() if line.startswith("| " + " | ".join(cells) + " |"))
    return [c.strip() for c in line.strip("|").split("|")]


def test_flagged_pairs_are_left_out_of_the_aligned_averages_and_listed(tmp_path, monkeypatch):
    table, rows = _evaluate_run(tmp_path, monkeypatch)
    # seed 0 averages phase 0 only (both arms); seeds 1 and 2 both phases
    warm = [0.70, (0.72 + 0.80) / 2, (0.60 + 0.84) / 2]
    cold = [0.62, (0.66 + 0.69) / 2, (0.55 + 0.74) / 2]
    assert float(_cell(table, "demo_probe_digits", "aligned", "warm")[4]) == pytest.approx(
        100 * sum(warm) / 3, abs=5e-3
    )
    assert float(_cell(table, "demo_probe_digits", "aligned", "cold")[4]) == pytest.approx(
        100 * sum(cold) / 3, abs=5e-3
    )
    assert float(_cell(table, "demo_probe_digits", "end_of_phase", "warm")[4]) == pytest.approx(65.0)
    cold_end = sum(c for _, c in ALIGNED.values()) / 6  # end of phase: every phase, the flag is about alignment
    assert float(_cell(table, "demo_probe_digits", "end_of_phase", "cold")[4]) == pytest.approx(
        100 * cold_end, abs=5e-3
    )
    assert "aligned: phases excluded (flagged, both arms): seed 0: [1]" in table
    flagged = {(r["arm"], r["seed"], r["phase"]) for r in rows if r["kind"] == "aligned" and r["flagged"] == "True"}
    assert flagged == {("warm", "0", "1"), ("cold", "0", "1")}  # listed in the csv with its number
    assert len(rows) == 3 * 2 * 2 * 2


def test_the_warm_minus_cold_gap_is_paired_by_seed_with_its_interval_and_verdict(tmp_path, monkeypatch):
    table, _ = _evaluate_run(tmp_path, monkeypatch)
    gaps = [100 * (0.70 - 0.62), 100 * ((0.72 + 0.80) - (0.66 + 0.69)) / 2, 100 * ((0.60 + 0.84) - (0.55 + 0.74)) / 2]
    mean = sum(gaps) / 3
    sd = math.sqrt(sum((g - mean) ** 2 for g in gaps) / 2)
    half = T_975_DF2 * sd / math.sqrt(3)
    cells = _cell(table, "demo_probe_digits", "aligned", "3")
    assert float(cells[3]) == pytest.approx(mean, abs=5e-3)
    low, high = (float(v) for v in cells[4].strip("[]").split(","))
    assert (low, high) == (pytest.approx(mean - half, abs=5e-3), pytest.approx(mean + half, abs=5e-3))
    assert cells[5] == "warm better"  # 8.0 +- 1.2 points: above 0, not within +-1
    end = _cell(table, "demo_probe_digits", "end_of_phase", "3")
    end_gaps = [100 * (2 * WARM_END - ALIGNED[s, 0][1] - ALIGNED[s, 1][1]) / 2 for s in range(3)]
    assert float(end[3]) == pytest.approx(sum(end_gaps) / 3, abs=5e-3)


def test_probes_that_did_not_plateau_are_marked_and_unknown_is_not_failure(tmp_path, monkeypatch):
    result = tmp_path / "probe-run"
    record = {"phase": 0, "test_accuracy": 0.8, "train_loss_plateaued": False, "train_loss_tail_fraction": 0.3}
    append_jsonl_atomic(result / "warm-seed0" / "results.jsonl", record)
    assert downstream.outcome(result) == {"test_accuracy": 0.8, "plateaued": False, "train_loss_tail_fraction": 0.3}
    append_jsonl_atomic(result / "warm-seed1" / "results.jsonl", {"phase": 0, "test_accuracy": 0.7})
    assert downstream.outcome(result)["plateaued"] is None  # no mark recorded: unknown

    def stalled(point):
        return not (point["arm"] == "cold" and (point["seed"], point["phase"]) == (2, 0))

    table, rows = _evaluate_run(tmp_path / "a", monkeypatch, stalled)
    assert "1 of 18 probes of `demo_probe_digits` did not plateau: cold seed 2 phase 0 end_of_phase" in table
    assert "\u2020" in _cell(table, "demo_probe_digits", "end_of_phase", "cold")[4]
    assert "\u2020" not in _cell(table, "demo_probe_digits", "aligned", "warm")[4]
    assert sorted({r["plateaued"] for r in rows}) == ["False", "True"]
    table, rows = _evaluate_run(tmp_path / "b", monkeypatch)  # no marks recorded (e.g. a finetuning recipe)
    assert "did not plateau" not in table and "\u2020" not in table and {r["plateaued"] for r in rows} == {""}
