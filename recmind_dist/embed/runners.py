"""Where the vectors are computed: in-process (:func:`run_local`) or on a Ray Data actor pool
(:func:`run_ray`), each replica an :class:`EncoderReplica`.

Both take the pending :class:`~recmind_dist.embed.shards.Shard` s, encode their texts and hand
the vectors to a :class:`~recmind_dist.embed.shards.ShardWriter`, which writes a shard as soon
as all its rows have arrived. Vectors do not depend on concurrency or on how rows are grouped
into batches beyond float round-off (padding is masked out), and Ray Data's row order is never
relied upon: every row carries its (kind, shard, id).

With ``spec.tensor_parallel`` N > 1 each Ray replica shards the model over its own N-rank
DeepSpeed group (:mod:`recmind_dist.embed.tp_group`) and reports the ranks that computed its
vectors and rank 0's share of the model's parameters.
"""

from __future__ import annotations

import logging
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from recmind_dist.embed.layout import NO_LAYOUT, Layout, check_fits, plan_layout
from recmind_dist.embed.shards import Shard, ShardWriter
from recmind_dist.errors import InputError
from recmind_dist.io import write_parquet
from recmind_dist.specs import EmbedSpec

log = logging.getLogger(__name__)

__all__ = ["EncoderReplica", "compute_dtype", "model_dim", "run_local", "run_ray"]


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
        from transformers.utils import logging as hf_logging

        from recmind_dist.embed.encoder import TextEncoder

        hf_logging.disable_progress_bar()  # a bar per actor in the driver's log says nothing
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


def run_local(pending: list[Shard], spec: EmbedSpec, model_id: str, pbar: Any,
              encoder: Any = None) -> tuple[int, int, Layout]:
    """Encode ``pending`` in this process (``encoder``, or a new one from ``spec``); returns
    (texts encoded, tokens, layout). Under torchrun only rank 0 writes shard files."""
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
    w = ShardWriter(pending, spec, encoder.dim, None, is_writer=rank0)  # pbar counts texts
    for s in pending:
        sel = np.flatnonzero(s.has_text)
        key = (s.kind, s.index)
        if len(sel):
            vecs, lengths = encoder.encode_with_lengths([s.texts[i] for i in sel],
                                                        spec.batch_size, on_batch=pbar.update)
            w.add(s.kind, s.index, s.ids[sel], vecs, lengths)
        else:
            w.finish(key)
    tp = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
    return w.n_encoded, w.n_tokens, Layout(replicas=1, threads=torch.get_num_threads(),
                                           block_rows=0, tensor_parallel=tp)


def run_ray(pending: list[Shard], spec: EmbedSpec, model_id: str, dim: int, text_dir: Path,
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
    w = ShardWriter(pending, spec, dim, None)  # pbar counts texts as their vectors arrive
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
    with warnings.catch_warnings():  # max_restarts has no named parameter (yet): see below
        warnings.simplefilter("ignore", DeprecationWarning)
        out = _map_encoder(ds, spec, actor_spec, model_id, n_rep, tp)
    tp_seen = {"ranks": 0, "param_share": 0.0}  # what the replicas reported
    for batch in out.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=1):
        if len(batch["id"]):
            tp_seen["ranks"] = max(tp_seen["ranks"], int(batch["tp_size"].max()))
            tp_seen["param_share"] = max(tp_seen["param_share"],
                                         float(batch["param_share"].max()))
        pbar.update(len(batch["id"]))
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


def _map_encoder(ds: Any, spec: EmbedSpec, actor_spec: EmbedSpec, model_id: str, n_rep: int,
                 tp: int) -> Any:
    """``ds.map_batches`` with an :class:`EncoderReplica` pool. Ray Data passes a map actor's
    constructor through the object store, and with actor restarts on every run logged an
    E-level core_worker line (ray#53727): restarts are off (a lost actor fails its tasks,
    retried on the pool's other actors; a failed job keeps its finished shards and a rerun
    resumes). Ray versions whose map_batches takes no extra remote arguments keep their
    default."""
    import inspect

    import ray

    extra = {}
    if any(p.kind is inspect.Parameter.VAR_KEYWORD
           for p in inspect.signature(ds.map_batches).parameters.values()):
        extra["max_restarts"] = 0
    return ds.map_batches(
        EncoderReplica,
        fn_constructor_kwargs={"spec_json": actor_spec.model_dump_json(), "model_id": model_id},
        compute=ray.data.ActorPoolStrategy(size=n_rep),
        num_cpus=spec.cpus_per_replica * tp,  # the helper ranks run beside the actor
        num_gpus=spec.gpus_per_replica or None,  # = tp GPUs at tensor_parallel > 1
        batch_size=None,
        batch_format="numpy",
        **extra,
    )


def compute_dtype(spec: EmbedSpec, backend: str, encoder: Any) -> str:
    """The dtype the replicas computed in (``spec.dtype`` resolved for their device)."""
    import torch

    from recmind_dist.embed.encoder import resolve_dtype

    if encoder is not None:
        return str(encoder.dtype)
    on_gpu = spec.gpus_per_replica > 0 or (backend == "local" and torch.cuda.is_available())
    if on_gpu and not torch.cuda.is_available():
        return f"{spec.dtype} (resolved on the GPU replicas)"
    return resolve_dtype(spec.dtype, "cuda" if on_gpu else "cpu")


def model_dim(model_id: str) -> int:
    """Hidden size of ``model_id`` from its config (no weights are loaded)."""
    from transformers import AutoConfig

    from recmind_dist.embed.gguf_models import resolve_model_source

    model_id = resolve_model_source(model_id)  # a packaged GGUF name -> its converted copy
    p = Path(model_id)
    try:
        cfg = AutoConfig.from_pretrained(model_id, local_files_only=p.exists())
    except (OSError, ValueError) as e:
        raise InputError("embed spec", "model", f"cannot load config of {model_id!r}: {e}") from e
    return int(getattr(cfg, "hidden_size", None) or cfg.d_model)
