"""The prompt cache: Parquet part files keyed by (backend, model, settings, prompt).

``cache_key = sha256(json([backend, model, params, prompt]))`` with sorted keys and non-ASCII
characters written as UTF-8, where ``params`` are the settings besides model and prompt that
change an answer (:meth:`recmind_dist.generation.backends.base.Backend.params`). Each
:meth:`GenerationCache.put` writes one part atomically, so an interrupted run keeps the chunks
it finished; :meth:`GenerationCache.compact` merges the parts into one.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from recmind_dist.hashing import stable_hash
from recmind_dist.io import write_parquet

log = logging.getLogger(__name__)

__all__ = ["GenerationCache", "cache_key"]


def cache_key(backend: str, model: str, prompt: str, params: dict[str, Any] | None = None) -> str:
    """sha256 (64 hex digits) of (backend, model, the settings that change the answer, prompt)."""
    return stable_hash([backend, model, params or {}, prompt], length=64, ascii_only=False)


class GenerationCache:
    """Parquet part files under ``root``: every :meth:`put` writes one part atomically."""

    COLUMNS = ("key", "backend", "model", "task", "prompt", "text", "created")

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._texts: dict[str, str] = {}
        self._load()

    def _parts(self) -> list[Path]:
        return sorted(self.root.glob("part-*.parquet"))

    def _load(self) -> None:
        for p in self._parts():
            try:
                df = pd.read_parquet(p, columns=["key", "text"])
            except Exception as exc:  # noqa: BLE001 - a corrupt part is skipped, not fatal
                log.warning("generation cache: unreadable part %s skipped (%s)", p, exc)
                continue
            self._texts.update(zip(df["key"].tolist(), df["text"].tolist(), strict=True))

    def __len__(self) -> int:
        return len(self._texts)

    def __contains__(self, key: str) -> bool:
        return key in self._texts

    def get(self, key: str) -> str | None:
        return self._texts.get(key)

    def put(self, rows: Sequence[dict[str, Any]]) -> None:
        """Persist rows (dicts with :attr:`COLUMNS` minus ``created``) as one new part."""
        rows = [r for r in rows if r["key"] not in self._texts]
        if not rows:
            return
        now = time.time()
        df = pd.DataFrame([{**{c: r.get(c, "") for c in self.COLUMNS[:-1]}, "created": now}
                           for r in rows])
        name = f"part-{int(now * 1000):013d}-{uuid.uuid4().hex[:8]}.parquet"
        write_parquet(df, self.root / name)
        for r in rows:
            self._texts[r["key"]] = r["text"]

    def compact(self) -> Path | None:
        """Merge all parts into one (atomic write first, then old parts removed)."""
        parts = self._parts()
        if len(parts) <= 1:
            return parts[0] if parts else None
        df = pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)
        df = df.drop_duplicates("key", keep="first")
        out = self.root / f"part-{int(time.time() * 1000):013d}-compact.parquet"
        write_parquet(df, out)
        for p in parts:
            if p != out:
                p.unlink(missing_ok=True)
        return out
