"""One writer per arm directory: an exclusive ``flock`` held while a process runs the arm.

Two terminals on the same run, or a Slurm array that lists an arm twice, would otherwise interleave
writes to one arm. The choice here is to refuse, not to wait: the second process exits with status 2,
naming the directory and the process that holds it. Arms are locked, not the whole run directory, so
the one-arm-per-job commands of ``scripts/sweep.py --commands`` still run side by side. The kernel
drops a ``flock`` when its process dies, so a lock left by a killed run never blocks the rerun (the
file stays, only as a note of who held it last). Only the main process locks; the other ranks of a
multi-process run follow it. ``flock`` needs a local or lock-aware shared file system.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path

import torch.distributed as dist

from warmstart_hf.config import ConfigError

LOCK_FILE = ".lock"


class ArmBusy(ConfigError):
    """Another live process is running this arm (exit status 2)."""


@contextmanager
def arm_lock(arm_dir: str | Path):
    """Hold the arm's lock for the duration of the block, or raise :class:`ArmBusy` at once."""
    arm_dir = Path(arm_dir)
    arm_dir.mkdir(parents=True, exist_ok=True)
    path = arm_dir / LOCK_FILE
    handle = path.open("a+")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise ArmBusy(
                f"Arm directory {str(arm_dir)!r} is being written by {holder}. Fix: wait for that run to end (or "
                "stop it) and rerun this command; it resumes where that one stopped."
            ) from None
        handle.seek(0)
        handle.truncate()
        note = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        handle.write(json.dumps(note))
        handle.flush()
        yield
    finally:
        handle.close()  # closing releases the lock


@contextmanager
def locked_arms(arm_dirs: list[Path], is_main: bool = True):
    """Lock every arm a command will run before it runs any of them (all or none). The main process
    locks; under torch.distributed every rank learns the outcome, so none waits on a rank that left."""
    with ExitStack() as stack:
        error = None
        if is_main:
            try:
                for arm_dir in arm_dirs:
                    stack.enter_context(arm_lock(arm_dir))
            except ArmBusy as busy:
                error = str(busy)
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            shared = [error]
            dist.broadcast_object_list(shared, src=0)
            error = shared[0]
        if error:
            raise ArmBusy(error)
        yield
