"""The README's "Language models warm vs cold" commands, read from the README and run as a new user
types them (in a fresh directory, offline, through the scripts), with size overrides appended so they
take a minute; the outputs the section promises must appear. The full-size run's figures are in
docs/results/lm_demo (docs/language-models.md gives its run times)."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

SECTION = "## Language models warm vs cold"
# appended to each script's command: the demo's shapes (block 128, width 64, 3 phases), less text and steps
SMALLER = {
    "train_incremental.py": "--max_document_tokens 768 --num_train_epochs 1 --probe_every_steps 2",
    "evaluate_pretraining.py": "--max_train_examples 48 --max_test_examples 24 --num_train_epochs 1",
}


def readme_commands(section: str) -> list[str]:
    """The lines of the first ```bash block under ``section`` of README.md."""
    text = (REPO / "README.md").read_text()
    body = text.split(f"\n{section}\n", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", body, re.S)
    assert block, f"README section {section!r} has no bash block"
    return [line for line in block.group(1).splitlines() if line.strip()]


def run_as_typed(command: str, cwd) -> str:
    """``command`` with its script's size overrides, run in ``cwd`` by this interpreter; its output."""
    words = shlex.split(command)
    assert words[0] == "python" and words[1].startswith("scripts/"), command
    words = [sys.executable, *words[1:], *shlex.split(SMALLER[words[1].removeprefix("scripts/")])]
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    done = subprocess.run(words, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"{command}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.mark.slow
def test_the_language_model_section_runs_as_written_and_writes_what_it_promises(tmp_path):
    commands = readme_commands(SECTION)
    assert [shlex.split(c)[1] for c in commands] == ["scripts/train_incremental.py", "scripts/evaluate_pretraining.py"]
    for name in ("scripts", "recipes"):
        (tmp_path / name).symlink_to(REPO / name)
    run_as_typed(commands[0], tmp_path)
    run = tmp_path / "runs" / "lm_demo"
    for arm in ("warm", "cold"):
        records = [json.loads(line) for line in (run / f"{arm}-seed0" / "results.jsonl").read_text().splitlines()]
        assert [r["phase"] for r in records] == [0, 1, 2]
        for r in records:  # per-phase perplexity, the forgetting matrix's row, tokens and FLOPs (6ND)
            assert r["validation_perplexity"] > 1 and len(r["validation_loss_per_group"]) == 3
            assert r["train_tokens"] > 0 and r["train_flops"] > 0
    summary = (run / "summary.md").read_text()
    assert "tokens saved vs cold" in summary and "perplexity" in summary
    assert json.loads((run / "alignment.json").read_text())["seeds"]["0"]["phases"]
    assert (run / "fig4.png").stat().st_size > 0

    out = run_as_typed(commands[1], tmp_path)
    table = (run / "downstream" / "downstream.md").read_text()
    recipes = [Path(word).stem for word in shlex.split(commands[1]) if word.endswith(".yaml")]
    assert len(recipes) == 2, commands[1]
    for recipe in recipes:
        assert f"| {recipe} | end_of_phase | warm |" in table and f"| {recipe} | end_of_phase | cold |" in table
        assert f"| {recipe} | end_of_phase | 1 |" in table  # the paired warm - cold gap, one seed
    assert (run / "downstream" / "fig5.png").stat().st_size > 0 and "Downstream results in" in out
