"""Every random choice takes a seed derived from the run's master seed and a purpose.

Arms of one seed share the derived seeds of the split, the initial weights and the data order, so
warm and cold are compared on exactly the same draws (paired).
"""

from __future__ import annotations

import hashlib


def derive_seed(seed: int, *purpose: object) -> int:
    """A stable 31-bit seed for ``purpose`` (e.g. ``("init", 3)``) under master ``seed``."""
    text = "/".join([str(seed), *map(str, purpose)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big") & 0x7FFFFFFF
