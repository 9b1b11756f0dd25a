"""One writer per arm directory: an exclusive lock on ``<arm>/.lock`` held while a process runs the arm.

Two terminals on the same run, or a Slurm array that lists an arm twice, would otherwise interleave
writes to one arm. The choice here is to refuse, not to wait: the second process exits with status 2,
naming the directory and the process that holds it. Arms are locked, not the whole run directory, so
the one-arm-per-job commands of ``scripts/sweep.py --commands`` still run side by side. The lock is
``filelock``'s ``flock``: the kernel drops it when its process dies, so a lock left by a killed run
never blocks the rerun; the file stays, only as a note of who held it last. Only the main process
locks; the other ranks of a multi-process run follow it. ``flock`` needs a local or lock-aware shared
file system (the note-writing callback turns filelock's soft-lock fallback off: a marker file that a
killed run leaves would block its rerun).
"""

from __future__ import annotations

import json
import os
import socket
import time
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path

import torch.distributed as dist
from filelock import FileLock, Timeout

from warmstart_hf.config import ConfigError

LOCK_FILE = ".lock"


class ArmBusy(ConfigError):
    """Another live process is running this arm (exit status 2)."""


def _write_holder_note(fd: int) -> None:
    """Who holds the lock, for the message a refused process prints (called with the lock held)."""
    note = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(note).encode(), 0)


def _holder(path: Path) -> str:
    try:
        return path.read_text().strip() or "another process"
    except OSError:  # released (and removed) since
        return "another process"


@contextmanager
def arm_lock(arm_dir: str | Path):
    """Hold the arm's lock for the duration of the block, or raise :class:`ArmBusy` at once."""
    arm_dir = Path(arm_dir)
    arm_dir.mkdir(parents=True, exist_ok=True)
    path = arm_dir / LOCK_FILE
    lock = FileLock(path, blocking=False, on_acquired=_write_holder_note)
    try:
        lock.acquire()
    except Timeout:
        raise ArmBusy(
            f"Arm directory {str(arm_dir)!r} is being written by {_holder(path)}. Fix: wait for that run to end (or "
            "stop it) and rerun this command; it resumes where that one stopped."
        ) from None
    try:
        yield
    finally:
        lock.release()


def _lock_all(arm_dirs: list[Path], stack: ExitStack) -> str | None:
    """Lock every arm on ``stack``, or none and return why: when one is busy, the arm directories and
    lock files this command created are removed again, so a refused command leaves none behind. Those
    lock files are unlinked while still held: a process that opened one meanwhile finds it unlinked once
    it gets the lock, and filelock then refuses it instead of granting a lock on a file that is gone."""
    new_dirs = {Path(d) for d in arm_dirs if not Path(d).exists()}
    new_locks = {Path(d) / LOCK_FILE for d in arm_dirs if not (Path(d) / LOCK_FILE).exists()}
    locked: list[Path] = []
    try:
        for arm_dir in arm_dirs:
            stack.enter_context(arm_lock(arm_dir))
            locked.append(Path(arm_dir))
    except ArmBusy as busy:
        for arm_dir in locked:
            if arm_dir / LOCK_FILE in new_locks:
                (arm_dir / LOCK_FILE).unlink(missing_ok=True)
        stack.close()
        for arm_dir in (d for d in locked if d in new_dirs):
            with suppress(OSError):  # not empty: someone else's by now
                arm_dir.rmdir()
        return str(busy)
    return None


@contextmanager
def locked_arms(arm_dirs: list[Path], is_main: bool = True):
    """Lock every arm a command will run before it runs any of them (all or none). The main process
    locks; under torch.distributed every rank learns the outcome, so none waits on a rank that left."""
    with ExitStack() as stack:
        error = None
        if is_main:
            error = _lock_all(arm_dirs, stack)
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            shared = [error]
            dist.broadcast_object_list(shared, src=0)
            error = shared[0]
        if error:
            raise ArmBusy(error)
        yield
