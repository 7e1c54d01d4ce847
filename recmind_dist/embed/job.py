"""Frozen-LM embedding job: node texts -> one vector per node, on Ray Data or in-process.

Output layout under ``out_dir``::

    embeddings/
      items.parquet, users.parquet      combined, one row per node id, sorted by id
      manifest.json                     model, dim, pooling, spec, fingerprint, counts
      items/shard-00000.parquet ...     per-shard outputs (unit of resume)
    _texts/items/shard-00000.parquet    Ray Data input (texts of the pending shards)

Every Parquet file has columns ``id`` int64, ``vector`` fixed_size_list<float32|float16>[dim],
``has_text`` bool (shard files also keep ``n_tokens`` int32). **Nodes without text get a row
with the zero vector and ``has_text = False``** (never NaN, never a missing row), so
``np.stack(table.vector)[i]`` is node ``id[i]`` and models route ``~has_text`` rows to their
fallback (e.g. RecMind's ID/feature MLP).

Shards are fixed row ranges of the id-sorted text table (``spec.shard_rows`` rows), so a
re-run with the same texts and spec finds the same shards. A shard file carries a fingerprint
(model, pooling, normalisation, max_length, dtypes, row range and a hash of its texts) in its
Parquet metadata; a re-run skips every shard whose file exists with the right fingerprint and
row count and recomputes only the rest. All files are written atomically (temp + rename).

Vectors do not depend on concurrency or on how rows are grouped into batches beyond float
round-off (padding is masked out), and Ray Data's row order is never relied upon: every row
carries its (kind, shard, id).

With ``spec.tensor_parallel`` N > 1 each Ray replica shards the model over its own N-rank
DeepSpeed group (:mod:`recmind_dist.embed.tp_group`); the manifest's ``last_run`` records the
planned ``layout`` (incl. ``tensor_parallel``) and ``tp_group``: the ranks that computed the
vectors and rank 0's share of the model's parameters, as the replicas reported them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from recmind_dist.errors import InputError
from recmind_dist.io import write_json, write_parquet
from recmind_dist.specs import EmbedSpec

log = logging.getLogger(__name__)

__all__ = [
    "FAIL_AFTER_ENV",
    "EmbedResult",
    "embed_dataset",
    "read_embeddings",
    "run_embedding_job",
]

#: Test hook: raise after this many shards were written in one run (simulated crash).
FAIL_AFTER_ENV = "RECMIND_EMBED_FAIL_AFTER_SHARDS"

_FP_KEY = b"recmind.fingerprint"


@dataclass
class EmbedResult:
    """What a job produced and how fast."""

    out_dir: Path
    paths: dict[str, Path]  # kind -> combined embeddings/{kind}.parquet
    n_texts: int  # rows over all kinds (with and without text)
    n_encoded: int  # texts run through the model in this run (skipped shards excluded)
    n_tokens: int  # real tokens of the encoded texts (after truncation)
    wall_s: float
    texts_per_s: float  # n_encoded / wall_s
    tokens_per_s: float
    shards_total: int = 0
    shards_computed: int = 0
    shards_skipped: int = 0
    dim: int = 0
    model: str = ""
    backend: str = ""
    n_replicas: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["out_dir"] = str(self.out_dir)
        d["paths"] = {k: str(v) for k, v in self.paths.items()}
        return d


@dataclass
class _Shard:
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
# inputs
# ------------------------------------------------------------------------------------------


def _load_texts(obj: pd.DataFrame | str | Path, kind: str, max_texts: int | None
                ) -> pd.DataFrame:
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


def _plan(tables: dict[str, pd.DataFrame], spec: EmbedSpec, model_id: str, emb_dir: Path
          ) -> list[_Shard]:
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
            shards.append(_Shard(kind, i, lo, hi, emb_dir / kind / f"shard-{i:05d}.parquet",
                                 h.hexdigest()[:24], ids[lo:hi], texts[lo:hi], has[lo:hi]))
    return shards


def _shard_done(s: _Shard) -> bool:
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


def _write_shard(s: _Shard, vec_by_row: np.ndarray, tokens: np.ndarray, spec: EmbedSpec
                 ) -> None:
    """``vec_by_row``/``tokens``: one row per shard row (zeros where has_text is False)."""
    tbl = pa.table({
        "id": pa.array(s.ids, pa.int64()),
        "vector": _vector_array(vec_by_row, spec.output_dtype),
        "has_text": pa.array(s.has_text, pa.bool_()),
        "n_tokens": pa.array(tokens.astype(np.int32), pa.int32()),
    }).replace_schema_metadata({_FP_KEY: s.fingerprint.encode()})
    write_parquet(tbl, s.path)


def _combine(kind: str, shards: list[_Shard], emb_dir: Path, meta: dict[str, Any]) -> Path:
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


def read_embeddings(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read a combined file -> ``(ids int64, vectors (n, dim) float32, has_text bool)``."""
    tbl = pq.read_table(path)
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


# ------------------------------------------------------------------------------------------
# encoder replica (Ray actor body; also used in-process)
# ------------------------------------------------------------------------------------------


class EncoderReplica:
    """Callable for ``Dataset.map_batches``: a batch of (kind, shard, id, text) -> vectors.

    The whole batch is encoded in one :meth:`TextEncoder.encode` call, which sorts it by token
    length and runs sub-batches of ``batch_size``; ids travel with their vectors.

    With ``spec.tensor_parallel`` N > 1 the replica is rank 0 of its own N-rank DeepSpeed
    group (:class:`~recmind_dist.embed.tp_group.TPGroup`: N-1 helper processes on the same
    node, the model sharded over all N). Every output row also carries ``tp_size`` (ranks
    that computed it) and ``param_share`` (rank 0's share of the model's parameters), so the
    driver can record that the model really was sharded.
    """

    def __init__(self, spec_json: str, model_id: str) -> None:
        import torch

        from recmind_dist.embed.encoder import TextEncoder

        spec = EmbedSpec.model_validate_json(spec_json)
        self.spec = spec
        self.group = None
        cuda = spec.gpus_per_replica > 0 and torch.cuda.is_available()
        if spec.tensor_parallel > 1:
            from recmind_dist.embed.tp_group import TPGroup

            self.group = TPGroup(spec, model_id, cuda=cuda, threads=spec.threads)
            self.encoder = self.group.encoder
            self.param_share = self.group.param_share
        else:
            self.encoder = TextEncoder(model_id, pooling=spec.pooling, normalize=spec.normalize,
                                       max_length=spec.max_length, dtype=spec.dtype,
                                       device="cuda" if cuda else "cpu",
                                       torch_threads=spec.threads)
            self.param_share = 1.0

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        vecs, lengths = self.encoder.encode_with_lengths(list(batch["text"]),
                                                         self.spec.batch_size)
        n = len(lengths)
        return {"kind": batch["kind"], "shard": batch["shard"], "id": batch["id"],
                "vector": vecs, "n_tokens": lengths.astype(np.int32),
                "tp_size": np.full(n, self.spec.tensor_parallel, np.int16),
                "param_share": np.full(n, self.param_share, np.float32)}

    def __del__(self) -> None:
        if getattr(self, "group", None) is not None:
            self.group.close()


# ------------------------------------------------------------------------------------------
# backends
# ------------------------------------------------------------------------------------------


class _Writer:
    """Assemble rows per shard; write a shard as soon as all its texts have arrived."""

    def __init__(self, pending: list[_Shard], spec: EmbedSpec, dim: int, pbar: Any,
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
            _write_shard(s, v, t, self.spec)
        del self.vec[key], self.tok[key]
        self.written += 1
        if self.pbar is not None:
            self.pbar.update(1)
        if self.fail_after and self.written >= self.fail_after:
            raise RuntimeError(f"{FAIL_AFTER_ENV}={self.fail_after}: simulated crash")


#: An actor that starts costs ~4-5 s (import torch + transformers, load the model) before its
#: first text; below this many texts per replica another replica does not pay for its start.
MIN_TEXTS_PER_REPLICA = 8192


@dataclass(frozen=True)
class Layout:
    """How the texts are spread: actors, torch threads per process (an actor, or each rank
    of its tensor-parallel group), input block size, ranks per actor."""

    replicas: int
    threads: int
    block_rows: int
    tensor_parallel: int = 1


NO_LAYOUT = Layout(replicas=0, threads=0, block_rows=0)  # nothing was encoded in this run


def plan_layout(spec: EmbedSpec, n_rows: int, cluster_cpus: float, cluster_gpus: float,
                node_cpus: float) -> Layout:
    """Choose replicas, threads per process and block size for ``n_rows`` texts.

    A replica with ``tensor_parallel`` N runs N processes (N GPUs, or N CPU processes that
    each count like one replica for CPUs and threads).

    * ``num_replicas: auto`` on GPUs: one per ``gpus_per_replica``. On CPUs: one per N
      cluster CPUs, but at most one per :data:`MIN_TEXTS_PER_REPLICA` texts -- a 2,625-text
      job runs one actor, not two that each pay the start-up.
    * ``torch_threads`` unset: the CPUs of a node divided among the processes that share it
      (2 CPUs, 1 replica -> 2 threads; 2 replicas, or 1 replica at tensor_parallel 2 -> 1
      thread each); explicit replicas keep the spec's rule (``max(1, round(cpus_per_replica))``).
    * ``block_rows`` unset: about 4 blocks per replica (load balance) of at least
      ``4 * batch_size`` and at most 2,048 rows (per-block overhead vs. memory).
    """
    tp = spec.tensor_parallel
    if spec.num_replicas != "auto":
        reps = int(spec.num_replicas)
        threads = spec.threads
    elif spec.gpus_per_replica > 0:
        reps = max(1, int(cluster_gpus // spec.gpus_per_replica))
        threads = spec.threads
    else:
        reps = max(1, min(int(cluster_cpus // tp), math.ceil(n_rows / MIN_TEXTS_PER_REPLICA)))
        per_node = max(1, math.ceil(reps * node_cpus / max(cluster_cpus, 1)))
        threads = spec.torch_threads or max(1, int(node_cpus // (per_node * tp)))
    if spec.block_rows:
        block = spec.block_rows
    else:
        block = min(2048, max(4 * spec.batch_size, math.ceil(n_rows / (4 * reps))))
    reps = max(1, min(reps, math.ceil(n_rows / block)))
    return Layout(replicas=reps, threads=threads, block_rows=block, tensor_parallel=tp)


def check_fits(spec: EmbedSpec, layout: Layout, cluster_cpus: float, node_cpus: float,
               node_gpus: float) -> None:
    """Refuse (``InputError`` naming the spec field) a layout the Ray cluster cannot run.

    ``node_cpus``/``node_gpus``: the largest node's. A replica's tensor-parallel ranks are
    processes on its node, so one node must hold N CPUs (one per rank) or N GPUs. The actors
    together (``replicas x tensor_parallel x cpus_per_replica``) must leave one cluster CPU
    for Ray Data's read tasks, or the job waits forever (STACK-NOTES).
    """
    tp = spec.tensor_parallel
    if spec.gpus_per_replica > node_gpus:
        field, why = "gpus_per_replica", ""
        if tp > 1:
            field, why = "tensor_parallel", f" (one per rank, tensor_parallel={tp})"
        raise InputError("embed spec", field,
                         f"a replica needs {spec.gpus_per_replica:g} GPUs on one node{why}, but "
                         f"the largest node has {node_gpus:g}")
    if tp > 1 and spec.gpus_per_replica == 0 and tp > node_cpus:
        raise InputError("embed spec", "tensor_parallel",
                         f"tensor_parallel={tp} runs {tp} processes of one replica on one node, "
                         f"but the largest node has {node_cpus:g} CPUs")
    need = layout.replicas * tp * spec.cpus_per_replica
    if need > cluster_cpus - 1 + 1e-9:
        # the actors would hold every CPU and Ray Data's read tasks (1 CPU each) never run
        ranks = f" x {tp} tensor-parallel ranks" if tp > 1 else ""
        raise InputError("embed spec", "cpus_per_replica",
                         f"{layout.replicas} replicas{ranks} x {spec.cpus_per_replica} CPU "
                         f"leave less than one of the cluster's {cluster_cpus:g} CPUs for Ray "
                         "Data's read tasks; the job would wait forever. Lower "
                         "cpus_per_replica or num_replicas")


def _run_local(pending: list[_Shard], spec: EmbedSpec, model_id: str, pbar: Any,
               encoder: Any = None) -> tuple[int, int, Layout]:
    import torch

    from recmind_dist.embed.encoder import TextEncoder

    if encoder is None and spec.tensor_parallel > 1:
        raise InputError("embed spec", "tensor_parallel",
                         f"tensor_parallel={spec.tensor_parallel} needs the ray backend (each "
                         "replica shards the model) or torchrun with a sharded encoder "
                         "(jobs/embed.py --tp N --backend local); the local backend would "
                         "run the whole model in one process")
    if encoder is None:
        encoder = TextEncoder(model_id, pooling=spec.pooling, normalize=spec.normalize,
                              max_length=spec.max_length, dtype=spec.dtype,
                              device="cuda" if spec.gpus_per_replica > 0
                              and torch.cuda.is_available() else "cpu",
                              torch_threads=spec.torch_threads)
    rank0 = not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0
    w = _Writer(pending, spec, encoder.dim, pbar, is_writer=rank0)
    for s in pending:
        sel = np.flatnonzero(s.has_text)
        key = (s.kind, s.index)
        if len(sel):
            vecs, lengths = encoder.encode_with_lengths([s.texts[i] for i in sel],
                                                        spec.batch_size)
            w.add(s.kind, s.index, s.ids[sel], vecs, lengths)
        else:
            w.finish(key)
    tp = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
    return w.n_encoded, w.n_tokens, Layout(replicas=1, threads=torch.get_num_threads(),
                                           block_rows=0, tensor_parallel=tp)


def _run_ray(pending: list[_Shard], spec: EmbedSpec, model_id: str, dim: int, text_dir: Path,
             pbar: Any, ray_address: str | None, num_cpus: int | None
             ) -> tuple[int, int, Layout, dict[str, Any]]:
    """Encode ``pending`` on a Ray Data actor pool; also returns what the replicas reported
    about tensor parallelism (``ranks``, rank 0's ``param_share``)."""
    import ray

    from recmind_dist.embed.ray_runtime import ensure_ray

    ensure_ray(ray_address, num_cpus)
    n_rows = int(sum(s.has_text.sum() for s in pending))
    res = ray.cluster_resources()
    cpus, gpus = float(res.get("CPU", 0)), float(res.get("GPU", 0))
    alive = [n["Resources"] for n in ray.nodes() if n["Alive"]]
    node_cpus = max((float(r.get("CPU", 0)) for r in alive), default=cpus)
    node_gpus = max((float(r.get("GPU", 0)) for r in alive), default=gpus)
    layout = plan_layout(spec, max(n_rows, 1), cpus, gpus, node_cpus)
    n_rep, tp = layout.replicas, layout.tensor_parallel
    if n_rows:
        check_fits(spec, layout, cpus, node_cpus, node_gpus)
    w = _Writer(pending, spec, dim, pbar)
    paths = []
    for s in pending:
        sel = np.flatnonzero(s.has_text)
        if not len(sel):
            w.finish((s.kind, s.index))
            continue
        p = text_dir / s.kind / f"shard-{s.index:05d}.parquet"
        write_parquet(pa.table({
            "kind": pa.array([s.kind] * len(sel), pa.string()),
            "shard": pa.array(np.full(len(sel), s.index, np.int32)),
            "id": pa.array(s.ids[sel], pa.int64()),
            "text": pa.array([s.texts[i] for i in sel], pa.string()),
        }), p)
        paths.append(str(p))
    if not paths:
        return w.n_encoded, w.n_tokens, NO_LAYOUT, {}
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    n_blocks = max(n_rep, math.ceil(n_rows / layout.block_rows))
    actor_spec = spec.model_copy(update={"torch_threads": layout.threads})
    log.info("ray: %d texts in %d blocks over %d replicas x %d tensor-parallel ranks (%.2f CPU "
             "per rank, %.2f GPU per replica, %d threads per rank)", n_rows, n_blocks, n_rep, tp,
             spec.cpus_per_replica, spec.gpus_per_replica, layout.threads)
    # One small Parquet file is one read block: repartition so every actor gets work.
    ds = ray.data.read_parquet(paths).repartition(n_blocks)
    out = ds.map_batches(
        EncoderReplica,
        fn_constructor_kwargs={"spec_json": actor_spec.model_dump_json(), "model_id": model_id},
        compute=ray.data.ActorPoolStrategy(size=n_rep),
        num_cpus=spec.cpus_per_replica * tp,  # the helper ranks run beside the actor
        num_gpus=spec.gpus_per_replica or None,  # = tp GPUs at tensor_parallel > 1
        batch_size=None,
        batch_format="numpy",
    )
    tp_seen = {"ranks": 0, "param_share": 0.0}  # what the replicas reported
    for batch in out.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=1):
        if len(batch["id"]):
            tp_seen["ranks"] = max(tp_seen["ranks"], int(batch["tp_size"].max()))
            tp_seen["param_share"] = max(tp_seen["param_share"],
                                         float(batch["param_share"].max()))
        kinds, shards = batch["kind"], batch["shard"]
        keys = pd.DataFrame({"k": kinds, "s": shards}).groupby(["k", "s"]).indices
        for (k, sh), rows in keys.items():
            w.add(str(k), int(sh), batch["id"][rows], batch["vector"][rows],
                  batch["n_tokens"][rows])
    missing = [key for key in w.by_key if key in w.vec]
    if missing:
        raise RuntimeError(f"Ray job ended with incomplete shards {missing[:5]}")
    for p in paths:  # inputs of finished shards are no longer needed
        Path(p).unlink(missing_ok=True)
    return w.n_encoded, w.n_tokens, layout, tp_seen


def _compute_dtype(spec: EmbedSpec, backend: str, encoder: Any) -> str:
    """The dtype the replicas computed in (``spec.dtype`` resolved for their device)."""
    import torch

    from recmind_dist.embed.encoder import resolve_dtype

    if encoder is not None:
        return str(encoder.dtype)
    on_gpu = spec.gpus_per_replica > 0 or (backend == "local" and torch.cuda.is_available())
    if on_gpu and not torch.cuda.is_available():
        return f"{spec.dtype} (resolved on the GPU replicas)"
    return resolve_dtype(spec.dtype, "cuda" if on_gpu else "cpu")


def _model_dim(model_id: str) -> int:
    from transformers import AutoConfig

    p = Path(model_id)
    try:
        cfg = AutoConfig.from_pretrained(model_id, local_files_only=p.exists())
    except (OSError, ValueError) as e:
        raise InputError("embed spec", "model", f"cannot load config of {model_id!r}: {e}") from e
    return int(getattr(cfg, "hidden_size", None) or cfg.d_model)


# ------------------------------------------------------------------------------------------
# public entry points
# ------------------------------------------------------------------------------------------


def run_embedding_job(texts: Mapping[str, pd.DataFrame | str | Path], spec: EmbedSpec,
                      out_dir: str | Path, progress: bool = True,
                      backend: Literal["ray", "local"] = "ray", ray_address: str | None = None,
                      num_cpus: int | None = None, encoder: Any = None) -> EmbedResult:
    """Embed every text table in ``texts`` (kind -> ``DataFrame(id, text, has_text)`` or a
    Parquet path) and write ``out_dir/embeddings/{kind}.parquet``.

    Args:
        texts: e.g. ``{"items": item_texts, "users": user_texts}``.
        spec: model, pooling and scheduling settings.
        out_dir: output root (see module docstring for the layout).
        progress: tqdm bar over shards.
        backend: ``ray`` (Ray Data + actor pool; ``tensor_parallel`` > 1 shards each replica)
            or ``local`` (in-process reference; also the torchrun tensor-parallel path,
            where rank 0 writes).
        ray_address: Ray cluster to join (None = ``RAY_ADDRESS`` or a private local Ray).
        num_cpus: CPUs of a private local Ray (None = all cores).
        encoder: a ready :class:`TextEncoder` for the local backend (e.g. DeepSpeed-sharded).

    Returns:
        :class:`EmbedResult`. Re-running after a crash recomputes only unfinished shards.
    """
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    if backend not in ("ray", "local"):
        raise InputError("embed job", "backend", f"expected ray|local, got {backend!r}")
    if not texts:
        raise InputError("embed job", "texts", "nothing to embed")
    out_dir = Path(out_dir)
    emb_dir = out_dir / "embeddings"
    from recmind_dist.embed.encoder import default_model_path

    model_id = encoder.model_name if encoder is not None else (spec.model or default_model_path())
    tables = {k: _load_texts(v, k, spec.max_texts) for k, v in texts.items()}
    shards = _plan(tables, spec, model_id, emb_dir)
    pending = [s for s in shards if not _shard_done(s)]
    skipped = len(shards) - len(pending)
    dim = encoder.dim if encoder is not None else _model_dim(model_id)
    log.info("%d shards, %d already done, %d to compute", len(shards), skipped, len(pending))
    try:
        import torch

        rank0 = not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0
    except ImportError:  # pragma: no cover
        rank0 = True
    pbar = tqdm(total=len(shards), initial=skipped, desc="embed shards", unit="shard",
                disable=not (progress and rank0))
    layout, tp_seen = NO_LAYOUT, {}
    try:
        if pending and backend == "local":
            n_enc, n_tok, layout = _run_local(pending, spec, model_id, pbar, encoder)
        elif pending:
            n_enc, n_tok, layout, tp_seen = _run_ray(pending, spec, model_id, dim,
                                                     out_dir / "_texts", pbar, ray_address,
                                                     num_cpus)
        else:
            n_enc, n_tok = 0, 0
    finally:
        pbar.close()
    paths: dict[str, Path] = {}
    from recmind_dist.embed.encoder import resolve_pooling

    if rank0:
        # Drop shard files from an earlier run with another shard_rows/texts.
        for kind in tables:
            keep = {s.path.name for s in shards if s.kind == kind}
            for p in (emb_dir / kind).glob("shard-*.parquet"):
                if p.name not in keep:
                    p.unlink()
        meta_base = {"model": model_id, "dim": dim, "normalize": spec.normalize,
                     "pooling": spec.pooling, "max_length": spec.max_length,
                     "output_dtype": spec.output_dtype,
                     "fingerprint": spec.fingerprint(model_id),
                     "compute_dtype": _compute_dtype(spec, backend, encoder),
                     "no_text_rows": "zero vector, has_text=False"}
        try:
            from transformers import AutoConfig

            meta_base["pooling"] = resolve_pooling(
                AutoConfig.from_pretrained(model_id, local_files_only=Path(model_id).exists()),
                spec.pooling)
        except (OSError, ValueError):  # pragma: no cover - config was loaded above
            pass
        for kind in tables:
            ks = [s for s in shards if s.kind == kind]
            paths[kind] = _combine(kind, ks, emb_dir, {**meta_base, "kind": kind})
        # (tokens of skipped shards are in their shard files, not counted as encoded here)
        wall = time.perf_counter() - t0
        write_json({**meta_base, "spec": spec.model_dump(), "backend": backend,
                    "counts": {k: {"rows": len(df), "with_text": int(df.has_text.sum())}
                               for k, df in tables.items()},
                    "shards": {"total": len(shards), "skipped": skipped,
                               "computed": len(pending)},
                    "last_run": {"wall_s": wall, "n_encoded": n_enc, "n_tokens": n_tok,
                                 "layout": asdict(layout),
                                 **({"tp_group": tp_seen} if tp_seen else {})}},
                   emb_dir / "manifest.json")
    wall = time.perf_counter() - t0
    return EmbedResult(out_dir=out_dir, paths=paths, n_texts=sum(len(t) for t in tables.values()),
                       n_encoded=n_enc, n_tokens=n_tok, wall_s=wall,
                       texts_per_s=n_enc / wall if wall > 0 else 0.0,
                       tokens_per_s=n_tok / wall if wall > 0 else 0.0,
                       shards_total=len(shards), shards_computed=len(pending),
                       shards_skipped=skipped, dim=dim, model=model_id, backend=backend,
                       n_replicas=layout.replicas,
                       extra={"tp_group": tp_seen} if tp_seen else {})


def dataset_texts(dataset_dir: str | Path, text_spec: Any = None, train_pairs: Any = None,
                  split_spec: Any = None, seed: int = 0) -> tuple[dict[str, pd.DataFrame], str]:
    """Build ``{"items": ..., "users": ...}`` texts for a canonical dataset directory.

    User profiles use ``train_pairs`` (canonical ``(users, items)``) if given, else the train
    split of ``recmind_dist.data.split.make_split(ds, split_spec or SplitSpec(), seed)`` (use
    the same spec/seed as training), else (split module
    unavailable) all interactions. Returns the texts and a note naming the history source.
    """
    from recmind_dist.data.schema import load_dataset
    from recmind_dist.specs import TextSpec
    from recmind_dist.text.templates import build_item_texts, build_user_texts

    text_spec = text_spec or TextSpec()
    ds = load_dataset(dataset_dir)
    meta = getattr(ds, "meta", None) or {}
    inter = ds.interactions
    n_items = int(meta.get("n_items") or (int(inter["item"].max()) + 1 if len(inter) else 0))
    n_users = int(meta.get("n_users") or (int(inter["user"].max()) + 1 if len(inter) else 0))
    source = "given train_pairs"
    if train_pairs is None:
        try:
            from recmind_dist.data.split import make_split
            from recmind_dist.specs import SplitSpec
        except ImportError:
            train_pairs = (inter["user"].to_numpy(np.int64), inter["item"].to_numpy(np.int64))
            source = ("ALL interactions (recmind_dist.data.split not importable): profiles may "
                      "contain held-out items")
            log.warning("user profiles built from %s", source)
        else:
            split_spec = split_spec or SplitSpec()
            try:
                split = make_split(ds, split_spec, seed)
            except TypeError:  # older signature without a seed
                split = make_split(ds, split_spec)
            tr = np.asarray(split.train)
            train_pairs = (np.asarray(split.user_ids)[tr[:, 0]],
                           np.asarray(split.item_ids)[tr[:, 1]])
            source = f"train split ({split_spec!r}, seed={seed})"
    items = build_item_texts(ds.items, text_spec, item_ids=n_items)
    users = build_user_texts(ds.users, train_pairs, ds.items, text_spec, user_ids=n_users)
    return {"items": items, "users": users}, source


def embed_dataset(dataset_dir: str | Path, text_spec: Any = None,
                  embed_spec: EmbedSpec | None = None, out_dir: str | Path | None = None,
                  train_pairs: Any = None, split_spec: Any = None, seed: int = 0,
                  **job_kwargs: Any) -> EmbedResult:
    """Texts for a canonical dataset directory -> :func:`run_embedding_job`.

    ``out_dir`` defaults to ``dataset_dir``; extra keyword arguments go to the job
    (``backend``, ``progress``, ``ray_address``, ``num_cpus``, ``encoder``).
    """
    texts, source = dataset_texts(dataset_dir, text_spec, train_pairs, split_spec, seed)
    res = run_embedding_job(texts, embed_spec or EmbedSpec(), out_dir or dataset_dir,
                            **job_kwargs)
    res.extra["user_history_source"] = source
    return res
