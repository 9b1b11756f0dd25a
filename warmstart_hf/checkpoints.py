"""What counts as saved: Trainer checkpoints marked complete, phase files that load, atomic model dirs.

A process can be killed at any instant (Slurm limits, preemption, the OOM killer). Every file the
run later trusts is therefore either written atomically (a temporary name, then ``os.replace``) or
validated before use: a Trainer checkpoint counts only once :func:`mark_complete` wrote its marker,
which happens after every file of it (the Trainer's, and each rank's extras) is on disk; safetensors
files are opened and read in full before a phase is taken as finished.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from pathlib import Path

from safetensors import SafetensorError, safe_open

from warmstart_hf.io import atomic_write_json, give_ordinary_modes, make_staging_dir

logger = logging.getLogger(__name__)

COMPLETE_MARKER = "warmstart_checkpoint_complete.json"
_STEP = re.compile(r"^checkpoint-(\d+)$")


def mark_complete(folder: str | Path, step: int) -> None:
    """Written last, after every file of the checkpoint: from now on it may be resumed from. It lists
    every file with its size, so a checkpoint later damaged (half deleted, truncated) is not trusted."""
    folder = Path(folder)
    files = {str(p.relative_to(folder)): p.stat().st_size for p in sorted(folder.rglob("*")) if p.is_file()}
    files.pop(COMPLETE_MARKER, None)
    give_ordinary_modes(folder / name for name in files)  # safetensors writes its files 0600
    atomic_write_json(folder / COMPLETE_MARKER, {"step": step, "files": files})


def is_complete(folder: str | Path) -> bool:
    """Marked complete, and every file the marker lists is there with its size."""
    folder = Path(folder)
    try:
        listed = json.loads((folder / COMPLETE_MARKER).read_text())["files"]
    except (OSError, ValueError, KeyError):
        return False
    return all((folder / name).is_file() and (folder / name).stat().st_size == size for name, size in listed.items())


def _checkpoints(phase_dir: Path) -> list[Path]:
    found = [p for p in phase_dir.glob("checkpoint-*") if p.is_dir() and _STEP.match(p.name)]
    return sorted(found, key=lambda p: int(_STEP.match(p.name).group(1)))


def remove_checkpoint(folder: Path) -> None:
    """Unmark first, then delete: a kill half-way leaves an incomplete checkpoint, never a marked
    checkpoint with files missing."""
    (folder / COMPLETE_MARKER).unlink(missing_ok=True)
    shutil.rmtree(folder, ignore_errors=True)


def last_complete_checkpoint(phase_dir: str | Path, remove_incomplete: bool = True) -> str | None:
    """The newest complete ``checkpoint-N`` of a phase, or None. Incomplete ones (a process killed
    while writing them) are skipped with a warning and, on the main process, removed."""
    phase_dir = Path(phase_dir)
    if not phase_dir.is_dir():
        return None
    complete = []
    for folder in _checkpoints(phase_dir):
        if is_complete(folder):
            complete.append(folder)
            continue
        logger.warning("Skipping incomplete checkpoint %s (the run was stopped while writing it).", folder)
        if remove_incomplete:
            remove_checkpoint(folder)
    return str(complete[-1]) if complete else None


def prune_checkpoints(phase_dir: str | Path, keep: int | None, protect: set[str]) -> None:
    """Keep the newest ``keep`` complete checkpoints (and the protected ones, e.g. the best)."""
    if not keep or keep <= 0:
        return
    complete = [p for p in _checkpoints(Path(phase_dir)) if is_complete(p)]
    protected = {str(Path(p)) for p in protect if p} | ({str(complete[-1])} if complete else set())
    for folder in complete[: max(0, len(complete) - keep)]:
        if str(folder) not in protected:
            remove_checkpoint(folder)


def safetensors_readable(path: str | Path) -> bool:
    """Whether the file exists, has a valid header and every tensor reads back (not truncated)."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            for key in handle.keys():  # noqa: SIM118 - safe_open is not a mapping
                handle.get_tensor(key)
        return True
    except (OSError, SafetensorError, RuntimeError, ValueError):
        return False


def phase_files_readable(phase_dir: str | Path) -> bool:
    """A finished phase's directory can be resumed from: its config and every safetensors file load."""
    phase_dir = Path(phase_dir)
    files = list(phase_dir.glob("*.safetensors"))
    has_model = (phase_dir / "model.safetensors").exists() and (phase_dir / "config.json").exists()
    return has_model and all(safetensors_readable(f) for f in files)


def remove_stale_temporaries(arm_dir: str | Path) -> None:
    """Delete what a killed process left half-made in an arm directory: temporary files of atomic
    writes (``.name.XXXX.tmp``) and staging directories (``.init.XXXX``). Call it only while holding
    the arm's lock, so no live writer owns them."""
    for path in sorted(Path(arm_dir).rglob(".*"), reverse=True):
        if path.name.endswith(".tmp") and path.is_file():
            path.unlink(missing_ok=True)
        elif path.is_dir() and path.name.startswith(".init."):
            shutil.rmtree(path, ignore_errors=True)


def save_pretrained_atomic(model, directory: str | Path) -> None:
    """``save_pretrained`` into a temporary sibling, then swap it in: the directory is complete or
    absent, never half-written."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = make_staging_dir(directory)  # the umask's mode, like the directory it replaces
    try:
        model.save_pretrained(staging)
        give_ordinary_modes(staging.glob("*.safetensors"))  # safetensors writes its files 0600
        if directory.exists():
            shutil.rmtree(directory)
        os.replace(staging, directory)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
