"""Frozen-LM embedding job: node texts -> one vector per node, on Ray Data or in-process.

:func:`run_embedding_job` takes text tables (kind -> ``DataFrame(id, text, has_text)``), cuts
them into resumable shards (:mod:`recmind_dist.embed.shards`, which also describes the output
files), encodes the pending ones with a runner (:mod:`recmind_dist.embed.runners`: in-process
or a Ray Data actor pool laid out by :mod:`recmind_dist.embed.layout`), and writes one
combined ``embeddings/{kind}.parquet`` per kind plus ``embeddings/manifest.json``.
:func:`embed_dataset` does the same for a canonical dataset directory, with the node texts of
:func:`recmind_dist.text.templates.training_texts` (user profiles from the train split only).

Ray Data reads its input from ``out_dir/_texts/{kind}/shard-00000.parquet`` (texts of the
pending shards). With ``spec.tensor_parallel`` N > 1 each Ray replica shards the model over its
own N-rank DeepSpeed group; the manifest's ``last_run`` records the planned ``layout`` (incl.
``tensor_parallel``) and ``tp_group``: the ranks that computed the vectors and rank 0's share
of the model's parameters, as the replicas reported them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from recmind_dist.data.schema import load_dataset
from recmind_dist.data.split import make_split
from recmind_dist.embed.layout import NO_LAYOUT
from recmind_dist.embed.runners import compute_dtype, model_dim, run_local, run_ray
from recmind_dist.embed.shards import (
    combine_shards,
    drop_stale_shards,
    load_texts,
    plan_shards,
    shard_done,
    write_manifest,
)
from recmind_dist.errors import InputError
from recmind_dist.specs import EmbedSpec, SplitSpec, TextSpec
from recmind_dist.text.templates import training_texts

log = logging.getLogger(__name__)

__all__ = ["EmbedResult", "choose_runner", "dataset_texts", "embed_dataset", "run_embedding_job"]


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



def run_embedding_job(texts: Mapping[str, pd.DataFrame | str | Path], spec: EmbedSpec,
                      out_dir: str | Path, progress: bool = True,
                      backend: Literal["ray", "local", "auto"] = "ray", ray_address: str | None = None,
                      num_cpus: int | None = None, encoder: Any = None) -> EmbedResult:
    """Embed every text table in ``texts`` (kind -> ``DataFrame(id, text, has_text)`` or a
    Parquet path) and write ``out_dir/embeddings/{kind}.parquet``.

    Args:
        texts: e.g. ``{"items": item_texts, "users": user_texts}``.
        spec: model, pooling and scheduling settings.
        out_dir: output root (files: see :mod:`recmind_dist.embed.shards`).
        progress: tqdm bar over the texts (rows/s and ETA); off when not on a terminal.
        backend: ``ray`` (Ray Data + actor pool; ``tensor_parallel`` > 1 shards each replica),
            ``local`` (in-process reference; also the torchrun tensor-parallel path,
            where rank 0 writes) or ``auto`` (:func:`choose_runner`).
        ray_address: Ray cluster to join (None = ``RAY_ADDRESS`` or a private local Ray).
        num_cpus: CPUs of a private local Ray (None = all cores).
        encoder: a ready :class:`TextEncoder` for the local backend (e.g. DeepSpeed-sharded).

    Returns:
        :class:`EmbedResult`. Re-running after a crash recomputes only unfinished shards.
    """
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    if backend not in ("ray", "local", "auto"):
        raise InputError("embed job", "backend", f"expected ray|local|auto, got {backend!r}")
    if not texts:
        raise InputError("embed job", "texts", "nothing to embed")
    out_dir = Path(out_dir)
    emb_dir = out_dir / "embeddings"
    from recmind_dist.embed.encoder import default_model_path

    model_id = encoder.model_name if encoder is not None else (spec.model or default_model_path())
    tables = {k: load_texts(v, k, spec.max_texts) for k, v in texts.items()}
    shards = plan_shards(tables, spec, model_id, emb_dir)
    pending = [s for s in shards if not shard_done(s)]
    skipped = len(shards) - len(pending)
    dim = encoder.dim if encoder is not None else model_dim(model_id)
    log.info("%d shards, %d already done, %d to compute", len(shards), skipped, len(pending))
    try:
        import torch

        rank0 = not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0
    except ImportError:  # pragma: no cover
        rank0 = True
    n_todo = sum(s.n_text for s in pending)
    backend, why = choose_runner(backend, n_todo, spec, ray_address, encoder)
    if pending:
        log.info("embed %s: %d texts to encode -> %s runner (%s)", "+".join(tables), n_todo,
                 "in-process" if backend == "local" else "Ray Data", why)
    pbar = tqdm(total=sum(s.n_text for s in shards), initial=sum(s.n_text for s in shards)
                - n_todo, desc=f"embed {'+'.join(tables)} ({backend})", unit="text",
                disable=not (progress and rank0), dynamic_ncols=True)
    layout, tp_seen = NO_LAYOUT, {}
    try:
        if pending and backend == "local":
            n_enc, n_tok, layout = run_local(pending, spec, model_id, pbar, encoder)
        elif pending:
            n_enc, n_tok, layout, tp_seen = run_ray(pending, spec, model_id, dim,
                                                    out_dir / "_texts", pbar, ray_address,
                                                    num_cpus)
        else:
            n_enc, n_tok = 0, 0
    finally:
        pbar.close()
    paths: dict[str, Path] = {}
    from recmind_dist.embed.encoder import resolve_pooling

    if rank0:
        drop_stale_shards(shards, tables, emb_dir)
        meta_base = {"model": model_id, "dim": dim, "normalize": spec.normalize,
                     "pooling": spec.pooling, "max_length": spec.max_length,
                     "output_dtype": spec.output_dtype,
                     "fingerprint": spec.fingerprint(model_id),
                     "compute_dtype": compute_dtype(spec, backend, encoder),
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
            paths[kind] = combine_shards(kind, ks, emb_dir, {**meta_base, "kind": kind})
        # (tokens of skipped shards are in their shard files, not counted as encoded here)
        wall = time.perf_counter() - t0
        write_manifest(emb_dir, meta_base, spec, backend, tables, len(shards), skipped,
                       {"wall_s": wall, "n_encoded": n_enc, "n_tokens": n_tok,
                        "layout": asdict(layout), **({"tp_group": tp_seen} if tp_seen else {})})
    wall = time.perf_counter() - t0
    return EmbedResult(out_dir=out_dir, paths=paths, n_texts=sum(len(t) for t in tables.values()),
                       n_encoded=n_enc, n_tokens=n_tok, wall_s=wall,
                       texts_per_s=n_enc / wall if wall > 0 else 0.0,
                       tokens_per_s=n_tok / wall if wall > 0 else 0.0,
                       shards_total=len(shards), shards_computed=len(pending),
                       shards_skipped=skipped, dim=dim, model=model_id, backend=backend,
                       n_replicas=layout.replicas,
                       extra={"runner_choice": why,
                              **({"tp_group": tp_seen} if tp_seen else {})})


def choose_runner(backend: str, n_texts: int, spec: EmbedSpec, ray_address: str | None,
                  encoder: Any = None) -> tuple[str, str]:
    """(runner, reason). ``auto``: in-process below ``spec.local_below_texts`` texts to encode
    (a Ray actor's fixed start-up outweighs its speed-up there), Ray Data from that size on,
    and always Ray when a cluster is named (``ray_address`` / ``RAY_ADDRESS``) or each
    replica shards the model (``tensor_parallel`` > 1) -- unless a ready ``encoder`` is given."""
    import os

    if backend != "auto":
        return backend, f"backend={backend} requested"
    if encoder is not None:
        return "local", "a ready encoder was given"
    if spec.tensor_parallel > 1:
        return "ray", f"embed.tensor_parallel={spec.tensor_parallel} shards each Ray replica"
    if ray_address or os.environ.get("RAY_ADDRESS"):
        return "ray", "a Ray cluster is named (ray_address / RAY_ADDRESS)"
    if n_texts < spec.local_below_texts:
        return "local", f"{n_texts} < embed.local_below_texts={spec.local_below_texts}"
    return "ray", f"{n_texts} >= embed.local_below_texts={spec.local_below_texts}"


def dataset_texts(dataset_dir: str | Path, text_spec: TextSpec | None = None, *,
                  split_spec: SplitSpec | None = None, seed: int = 0
                  ) -> tuple[dict[str, pd.DataFrame], str]:
    """``{"items": ..., "users": ...}`` texts of a canonical dataset directory
    (:func:`~recmind_dist.text.templates.training_texts`), user profiles from the train split
    of ``make_split(ds, split_spec, seed)`` (use the same spec/seed as training). Returns the
    texts and a note naming the history source."""
    text_spec = text_spec or TextSpec()
    split_spec = split_spec or SplitSpec()
    ds = load_dataset(dataset_dir)
    items, users = training_texts(ds, make_split(ds, split_spec, seed), text_spec)
    return {"items": items, "users": users}, f"train split ({split_spec!r}, seed={seed})"


def embed_dataset(dataset_dir: str | Path, text_spec: TextSpec | None = None,
                  embed_spec: EmbedSpec | None = None, out_dir: str | Path | None = None, *,
                  split_spec: SplitSpec | None = None, seed: int = 0,
                  **job_kwargs: Any) -> EmbedResult:
    """Texts for a canonical dataset directory (:func:`dataset_texts`) ->
    :func:`run_embedding_job`.

    ``out_dir`` defaults to ``dataset_dir``; extra keyword arguments go to the job
    (``backend``, ``progress``, ``ray_address``, ``num_cpus``, ``encoder``).
    """
    texts, source = dataset_texts(dataset_dir, text_spec, split_spec=split_spec, seed=seed)
    res = run_embedding_job(texts, embed_spec or EmbedSpec(), out_dir or dataset_dir,
                            **job_kwargs)
    res.extra["user_history_source"] = source
    return res
