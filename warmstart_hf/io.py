"""Atomic writes: a result or file is either fully there or not there at all.

Temporary files and directories are created with the modes an ordinary ``open``/``mkdir`` would give
them (0666 / 0777 less the umask, and any default ACL), so a run directory is as readable to the
group or a web server as the user's other files. ``tempfile.mkstemp``/``mkdtemp`` would not do (and
take no mode): they create 0600 / 0700 whatever the umask, and ``os.replace`` keeps that mode.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

_Made = TypeVar("_Made")


def _unique_sibling(path: Path, suffix: str, create: Callable[[str], _Made]) -> tuple[str, _Made]:
    """Create ``.<name>.<random><suffix>`` beside ``path`` with ``create`` (which must fail with
    FileExistsError on a taken name, as O_EXCL and mkdir do); returns its name and what it returned."""
    for _ in range(100):
        name = str(path.parent / f".{path.name}.{secrets.token_hex(4)}{suffix}")
        try:
            return name, create(name)
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name beside {path}")


def current_umask() -> int:
    """The process's umask. Linux reports it in /proc/self/status; elsewhere ``os.umask`` has to set it to
    read it, and puts it back at once (0o077 meanwhile, so a file another thread makes then is private)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def give_ordinary_modes(files: Iterable[str | Path]) -> None:
    """Set ``files`` to the mode an ordinary write gives a new file (0666 less the umask). safetensors
    (0.8) writes through a temporary file that it creates 0600 and renames into place (safetensors#782),
    so every ``*.safetensors`` it or ``save_pretrained`` writes would be private to the user."""
    mode = 0o666 & ~current_umask()
    for path in files:
        os.chmod(path, mode)


def make_staging_dir(path: str | Path) -> Path:
    """An empty directory beside ``path`` (``.<name>.<random>``), to be swapped in with ``os.replace``."""
    path = Path(path)
    return Path(_unique_sibling(path, "", os.mkdir)[0])


def atomic_write_text(path: str | Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    tmp, fd = _unique_sibling(path, ".tmp", lambda name: os.open(name, flags, 0o666))
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: str | Path, record: Any) -> None:
    atomic_write_text(path, json.dumps(record, indent=1) + "\n")


def read_jsonl(path: str | Path, skip_partial_last_line: bool = False) -> list[dict]:
    """The records of a JSON-lines file. With ``skip_partial_last_line`` a last line that does not
    parse (a file truncated by something other than this package's atomic writes) is dropped."""
    path = Path(path)
    if not path.exists():
        return []
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    records = []
    for index, line in enumerate(lines):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if not (skip_partial_last_line and index == len(lines) - 1):
                raise
            logging.getLogger(__name__).warning("Ignoring the truncated last line of %s.", path)
    return records


def append_jsonl_atomic(path: str | Path, record: dict) -> None:
    """Rewrite the file with one more line, via a temporary file and ``os.replace``."""
    lines = [json.dumps(r) for r in read_jsonl(path)] + [json.dumps(record)]
    atomic_write_text(path, "\n".join(lines) + "\n")
