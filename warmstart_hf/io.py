"""Atomic writes: a result or file is either fully there or not there at all."""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any


def atomic_write_text(path: str | Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
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
