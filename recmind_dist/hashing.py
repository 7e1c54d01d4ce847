"""One stable hash for cache keys, run keys and fingerprints."""

from __future__ import annotations

import hashlib
import json
from typing import Any


def stable_hash(obj: Any, length: int = 16, *, ascii_only: bool = True) -> str:
    """First ``length`` hex digits of sha256 over ``obj`` as canonical JSON (sorted keys;
    objects JSON cannot write, such as paths, by their ``str``). Equal inputs give equal keys
    on every machine and Python version. ``ascii_only=False`` writes non-ASCII characters as
    UTF-8 instead of ``\\uXXXX`` escapes (the generation cache's keys are made that way)."""
    blob = json.dumps(obj, sort_keys=True, default=str, ensure_ascii=ascii_only)
    return hashlib.sha256(blob.encode()).hexdigest()[:length]
