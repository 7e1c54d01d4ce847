"""Shard files of an embedding job: planning, resume, writing, combining, reading back.

Output layout under ``out_dir``::

    embeddings/
      items.parquet, users.parquet      combined, one row per node id, sorted by id
      manifest.json                     model, dim, pooling, spec, fingerprint, counts
      items/shard-00000.parquet ...     per-shard outputs (unit of resume)

Every Parquet file has columns ``id`` int64, ``vector`` fixed_size_list<float32|float16>[dim],
``has_text`` bool (shard files also keep ``n_tokens`` int32). **Nodes without text get a row
with the zero vector and ``has_text = False``** (never NaN, never a missing row), so
``np.stack(table.vector)[i]`` is node ``id[i]`` and models route ``~has_text`` rows to their
fallback (e.g. RecMind's ID/feature MLP).

Shards are fixed row ranges ``[lo, hi)`` of the id-sorted text table (``spec.shard_rows``
rows), so a re-run with the same texts and spec finds the same shards. A shard's fingerprint
is

    sha256(spec.fingerprint(model) || "kind:lo:hi" || ids || has_text || text_0 \\x1f ...)[:24]

kept in its Parquet metadata; a re-run skips every shard whose file exists with the right
fingerprint and row count (:func:`shard_done`) and recomputes only the rest. All files are
written atomically (temp + rename).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from recmind_dist.errors import InputError
from recmind_dist.io import write_json, write_parquet
from recmind_dist.specs import EmbedSpec

__all__ = [
    "FAIL_AFTER_ENV",
    "MANIFEST_FILE",
    "Shard",
    "ShardWriter",
    "cache_problem",
    "cache_record",
    "combine_shards",
    "drop_stale_shards",
    "load_texts",
    "plan_shards",
    "read_embeddings",
    "shard_done",
    "write_manifest",
    "write_shard",
]

#: Test hook: raise after this many shards were written in one run (simulated crash).
FAIL_AFTER_ENV = "RECMIND_EMBED_FAIL_AFTER_SHARDS"

MANIFEST_FILE = "manifest.json"

_FP_KEY = b"recmind.fingerprint"


@dataclass
class Shard:
    """Rows ``[lo, hi)`` of one kind's id-sorted text table and the file they go to."""

    kind: str
    index: int
    lo: int
    hi: int
    path: Path
    fingerprint: str
    ids: np.ndarray
    texts: list[str]
    has_text: np.ndarray

    @property
    def n_text(self) -> int:
        return int(self.has_text.sum())


# ------------------------------------------------------------------------------------------
# inputs and plan
# ------------------------------------------------------------------------------------------


def load_texts(obj: pd.DataFrame | str | Path, kind: str, max_texts: int | None
               ) -> pd.DataFrame:
    """A text table (DataFrame or Parquet path) -> ``DataFrame(id, text, has_text)`` sorted by
    id; blank texts count as no text. Bad tables raise :class:`InputError`."""
    src = f"texts[{kind}]"
    if isinstance(obj, (str, Path)):
        src = str(obj)
        if not Path(obj).exists():
            raise InputError(obj, None, "text table not found")
        obj = pq.read_table(obj).to_pandas()
    if not isinstance(obj, pd.DataFrame):
        raise InputError(src, None, f"expected a DataFrame or a Parquet path, got {type(obj)}")
    for col in ("id", "text"):
        if col not in obj.columns:
            raise InputError(src, col, "missing column")
    df = pd.DataFrame({"id": obj["id"], "text": obj["text"]})
    if df["id"].isna().any():
        raise InputError(src, "id", "null ids")
    df["id"] = df["id"].astype(np.int64)
    if df["id"].duplicated().any():
        raise InputError(src, "id", f"duplicate id {df.loc[df.id.duplicated(), 'id'].iloc[0]}")
    df["text"] = df["text"].where(df["text"].notna(), "").astype(str)
    has = obj["has_text"].astype(bool).to_numpy() if "has_text" in obj.columns else None
    nonempty = df["text"].str.strip().str.len().to_numpy() > 0
    df["has_text"] = nonempty if has is None else (has & nonempty)
    df.loc[~df["has_text"], "text"] = ""
    df = df.sort_values("id", kind="stable").reset_index(drop=True)
    if max_texts is not None:
        df = df.iloc[:max_texts].reset_index(drop=True)
    return df


def plan_shards(tables: Mapping[str, pd.DataFrame], spec: EmbedSpec, model_id: str,
                emb_dir: Path) -> list[Shard]:
    """Cut every table into ``spec.shard_rows``-row shards and fingerprint each one."""
    base = spec.fingerprint(model_id)
    shards = []
    for kind, df in tables.items():
        ids = df["id"].to_numpy()
        texts = df["text"].tolist()
        has = df["has_text"].to_numpy()
        n = len(df)
        for i, lo in enumerate(range(0, n, spec.shard_rows)):
            hi = min(n, lo + spec.shard_rows)
            h = hashlib.sha256(base.encode())
            h.update(f"{kind}:{lo}:{hi}".encode())
            h.update(ids[lo:hi].tobytes())
            h.update(has[lo:hi].tobytes())
            for t in texts[lo:hi]:
                h.update(t.encode("utf-8", "surrogatepass"))
                h.update(b"\x1f")
            shards.append(Shard(kind, i, lo, hi, emb_dir / kind / f"shard-{i:05d}.parquet",
                                h.hexdigest()[:24], ids[lo:hi], texts[lo:hi], has[lo:hi]))
    return shards


def shard_done(s: Shard) -> bool:
    """Whether ``s``'s file exists with its fingerprint and row count (then it is skipped)."""
    if not s.path.exists():
        return False
    try:
        md = pq.read_metadata(s.path)
    except Exception:  # noqa: BLE001 - any unreadable file is simply recomputed
        return False
    kv = md.metadata or {}
    return kv.get(_FP_KEY, b"").decode() == s.fingerprint and md.num_rows == s.hi - s.lo


# ------------------------------------------------------------------------------------------
# outputs
# ------------------------------------------------------------------------------------------


def _vector_array(vecs: np.ndarray, out_dtype: str) -> pa.FixedSizeListArray:
    vecs = np.ascontiguousarray(vecs, dtype=np.float16 if out_dtype == "float16" else np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(vecs.reshape(-1)), vecs.shape[1])


def write_shard(s: Shard, vec_by_row: np.ndarray, tokens: np.ndarray, spec: EmbedSpec
                ) -> None:
    """``vec_by_row``/``tokens``: one row per shard row (zeros where has_text is False)."""
    tbl = pa.table({
        "id": pa.array(s.ids, pa.int64()),
        "vector": _vector_array(vec_by_row, spec.output_dtype),
        "has_text": pa.array(s.has_text, pa.bool_()),
        "n_tokens": pa.array(tokens.astype(np.int32), pa.int32()),
    }).replace_schema_metadata({_FP_KEY: s.fingerprint.encode()})
    write_parquet(tbl, s.path)


class ShardWriter:
    """Assemble rows per shard; write a shard as soon as all its texts have arrived."""

    def __init__(self, pending: list[Shard], spec: EmbedSpec, dim: int, pbar: Any,
                 is_writer: bool = True) -> None:
        self.spec, self.dim, self.pbar, self.is_writer = spec, dim, pbar, is_writer
        self.by_key = {(s.kind, s.index): s for s in pending}
        self.vec: dict[tuple[str, int], np.ndarray] = {}
        self.tok: dict[tuple[str, int], np.ndarray] = {}
        self.seen: dict[tuple[str, int], int] = {}
        self.fail_after = int(os.environ.get(FAIL_AFTER_ENV, "0") or 0)
        self.written = 0
        self.n_encoded = 0
        self.n_tokens = 0

    def _buffers(self, key: tuple[str, int]) -> tuple[np.ndarray, np.ndarray]:
        if key not in self.vec:
            s = self.by_key[key]
            self.vec[key] = np.zeros((s.hi - s.lo, self.dim), np.float32)
            self.tok[key] = np.zeros(s.hi - s.lo, np.int32)
            self.seen[key] = 0
        return self.vec[key], self.tok[key]

    def add(self, kind: str, shard: int, ids: np.ndarray, vecs: np.ndarray,
            tokens: np.ndarray) -> None:
        key = (kind, int(shard))
        s = self.by_key[key]
        v, t = self._buffers(key)
        rows = np.searchsorted(s.ids, ids)
        if (rows >= len(s.ids)).any() or (s.ids[np.minimum(rows, len(s.ids) - 1)] != ids).any():
            raise RuntimeError(f"rows for unknown ids arrived for shard {key}")
        v[rows] = vecs
        t[rows] = tokens
        self.seen[key] += len(ids)
        self.n_encoded += len(ids)
        self.n_tokens += int(tokens.sum())
        if self.seen[key] >= s.n_text:
            self.finish(key)

    def finish(self, key: tuple[str, int]) -> None:
        s = self.by_key[key]
        v, t = self._buffers(key)
        if self.is_writer:
            write_shard(s, v, t, self.spec)
        del self.vec[key], self.tok[key]
        self.written += 1
        if self.pbar is not None:
            self.pbar.update(1)
        if self.fail_after and self.written >= self.fail_after:
            raise RuntimeError(f"{FAIL_AFTER_ENV}={self.fail_after}: simulated crash")


def drop_stale_shards(shards: list[Shard], kinds: Iterable[str], emb_dir: Path) -> None:
    """Delete shard files of ``kinds`` left by an earlier run with another shard_rows/texts."""
    for kind in kinds:
        keep = {s.path.name for s in shards if s.kind == kind}
        for p in (emb_dir / kind).glob("shard-*.parquet"):
            if p.name not in keep:
                p.unlink()


def combine_shards(kind: str, shards: list[Shard], emb_dir: Path, meta: dict[str, Any]
                   ) -> Path:
    """Concatenate ``kind``'s shard files into ``emb_dir/{kind}.parquet`` (``meta`` in its
    schema metadata)."""
    parts = [pq.read_table(s.path, columns=["id", "vector", "has_text"])
             for s in sorted(shards, key=lambda s: s.index)]
    tbl = pa.concat_tables(parts) if parts else pa.table({
        "id": pa.array([], pa.int64()), "vector": pa.array([], pa.list_(pa.float32(), 1)),
        "has_text": pa.array([], pa.bool_())})
    ids = tbl.column("id").to_numpy()
    if len(ids) > 1 and not (np.diff(ids) > 0).all():  # shards are id ranges: already sorted
        tbl = tbl.sort_by("id")
    tbl = tbl.replace_schema_metadata({b"recmind.embeddings": json.dumps(meta).encode()})
    path = emb_dir / f"{kind}.parquet"
    write_parquet(tbl, path)
    return path


def write_manifest(emb_dir: Path, meta: dict[str, Any], spec: EmbedSpec, backend: str,
                   tables: Mapping[str, pd.DataFrame], n_shards: int, n_skipped: int,
                   last_run: dict[str, Any]) -> Path:
    """``emb_dir/manifest.json``: ``meta`` (model, dim, pooling, fingerprint, ...), the spec,
    row counts per kind, shard counts and what the last run did."""
    path = emb_dir / MANIFEST_FILE
    write_json({**meta, "spec": spec.model_dump(), "backend": backend,
                "counts": {k: {"rows": len(df), "with_text": int(df.has_text.sum())}
                           for k, df in tables.items()},
                "shards": {"total": n_shards, "skipped": n_skipped,
                           "computed": n_shards - n_skipped},
                "last_run": last_run},
               path)
    return path


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def cache_record(path: str | Path) -> dict[str, Any]:
    """What a reader checks a combined file against: its sha256, row count and dimension."""
    ids, vec, _ = read_embeddings(path)
    return {"sha256": file_sha256(path), "rows": len(ids), "dim": int(vec.shape[1])}


def cache_problem(path: str | Path, record: Mapping[str, Any] | None) -> str | None:
    """Why the combined file ``path`` is not the one ``record`` (:func:`cache_record`)
    describes -- missing, truncated/corrupt, changed content, other shape, non-finite
    vectors -- or None when it is. A record without ``sha256`` (older caches) is checked for
    readability and finite values only."""
    path = Path(path)
    if not path.is_file():
        return "missing"
    record = record or {}
    if record.get("sha256") and file_sha256(path) != record["sha256"]:
        return "content differs from what was written (sha256)"
    try:
        ids, vec, _ = read_embeddings(path)
    except InputError as exc:
        return str(exc)
    if "rows" in record and len(ids) != record["rows"]:
        return f"{len(ids)} rows, {record['rows']} written"
    if "dim" in record and vec.shape[1] != record["dim"]:
        return f"dimension {vec.shape[1]}, the encoder's is {record['dim']}"
    if not np.isfinite(vec).all():
        return "non-finite vectors"
    return None


def read_embeddings(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read a combined file -> ``(ids int64, vectors (n, dim) float32, has_text bool)``;
    an unreadable (truncated, corrupt) file is an InputError naming it."""
    try:
        tbl = pq.read_table(path)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise InputError(path, None, f"unreadable or truncated Parquet file ({exc})") from None
    for col in ("id", "vector", "has_text"):
        if col not in tbl.column_names:
            raise InputError(path, col, "missing column")
    vec = tbl.column("vector").combine_chunks()
    dim = vec.type.list_size if isinstance(vec.type, pa.FixedSizeListType) else None
    if dim is None:
        raise InputError(path, "vector", f"expected a fixed-size list, got {vec.type}")
    flat = vec.values.to_numpy(zero_copy_only=False).astype(np.float32)
    return (tbl.column("id").to_numpy().astype(np.int64), flat.reshape(-1, dim),
            tbl.column("has_text").to_numpy(zero_copy_only=False).astype(bool))
