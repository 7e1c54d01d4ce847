"""Embed a canonical dataset's item and user texts with a frozen language model.

On a Ray cluster::

    ray job submit --address http://127.0.0.1:8265 --working-dir . -- \\
        python jobs/embed.py --dataset data/ml-100k --out runs/emb

On a laptop (starts a private Ray on 127.0.0.1)::

    python jobs/embed.py --dataset data/ml-100k --out runs/emb

DeepSpeed tensor parallelism (CPU or GPU): with ``--tp N`` every Ray encoder replica is rank 0
of its own N-rank group and starts the other N-1 ranks beside it (N CPU processes or N GPUs
per replica; ``recmind_dist.embed.tp_group``)::

    python jobs/embed.py --dataset data/ml-100k --out runs/emb --tp 2

Without Ray, one torchrun process per rank runs the in-process backend (rank 0 writes)::

    LOCAL_SIZE=2 torchrun --nproc_per_node 2 jobs/embed.py --dataset DIR --out DIR --tp 2 \\
        --backend local

All logic lives in :func:`recmind_dist.embed.job.embed_dataset`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from recmind_dist.errors import InputError
from recmind_dist.specs import EmbedSpec, TextSpec


def build_parser() -> argparse.ArgumentParser:
    d = EmbedSpec()
    t = TextSpec()
    p = argparse.ArgumentParser(
        prog="jobs/embed.py", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--dataset", required=True, type=Path, help="canonical dataset directory")
    p.add_argument("--out", type=Path, default=None,
                   help="output root; writes OUT/embeddings/{items,users}.parquet "
                   "(default: the dataset directory)")
    g = p.add_argument_group("model")
    g.add_argument("--model", default=None,
                   help="local model dir or hub id (default: bundled offline all-MiniLM-L6-v2)")
    g.add_argument("--pooling", choices=["auto", "mean", "last"], default=d.pooling)
    g.add_argument("--no-normalize", action="store_true", help="keep raw pooled vectors")
    g.add_argument("--max-length", type=int, default=d.max_length, help="tokens per text")
    g.add_argument("--batch-size", type=int, default=d.batch_size)
    g.add_argument("--dtype", choices=["auto", "float32", "float16", "bfloat16"],
                   default=d.dtype, help="compute dtype: auto = bf16 on GPUs and AMX CPUs, "
                   "else fp32 (float16 only on GPU)")
    g.add_argument("--output-dtype", choices=["float32", "float16"], default=d.output_dtype)
    g.add_argument("--max-texts", type=int, default=None, help="first N texts per kind only")
    g = p.add_argument_group("texts")
    g.add_argument("--item-template", default=t.item_template)
    g.add_argument("--user-template", default=t.user_template)
    g.add_argument("--history-titles", type=int, default=t.max_history_titles)
    g.add_argument("--top-genres", type=int, default=t.top_genres)
    g.add_argument("--seed", type=int, default=0, help="split seed for train-only profiles")
    g = p.add_argument_group("execution")
    g.add_argument("--backend", choices=["ray", "local"], default="ray")
    g.add_argument("--ray-address", default=None,
                   help="Ray cluster (default: RAY_ADDRESS, else a private local Ray)")
    g.add_argument("--num-cpus", type=int, default=None, help="CPUs of a private local Ray")
    g.add_argument("--replicas", default="auto", help="encoder actors ('auto' or an int)")
    g.add_argument("--cpus-per-replica", type=float, default=d.cpus_per_replica)
    g.add_argument("--gpus-per-replica", type=float, default=d.gpus_per_replica)
    g.add_argument("--threads", type=int, default=None, help="torch threads per replica")
    g.add_argument("--shard-rows", type=int, default=d.shard_rows, help="rows per resume shard")
    g.add_argument("--tp", type=int, default=1,
                   help="DeepSpeed tensor-parallel degree per replica. Ray backend: each "
                   "replica starts TP-1 helper ranks on its node (reserving TP x "
                   "--cpus-per-replica CPUs, or TP GPUs with --gpus-per-replica TP). Local "
                   "backend: run under torchrun --nproc_per_node TP")
    g.add_argument("--no-progress", action="store_true")
    g.add_argument("--json", action="store_true", help="print the result as JSON")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    from recmind_dist.embed.job import embed_dataset

    try:
        spec = EmbedSpec(
            model=args.model, pooling=args.pooling, normalize=not args.no_normalize,
            max_length=args.max_length, batch_size=args.batch_size, dtype=args.dtype,
            output_dtype=args.output_dtype,
            num_replicas=args.replicas if args.replicas == "auto" else int(args.replicas),
            cpus_per_replica=args.cpus_per_replica, gpus_per_replica=args.gpus_per_replica,
            tensor_parallel=args.tp, torch_threads=args.threads, shard_rows=args.shard_rows,
            max_texts=args.max_texts)
        tspec = TextSpec(item_template=args.item_template, user_template=args.user_template,
                         max_history_titles=args.history_titles, top_genres=args.top_genres)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    kwargs: dict = {"progress": not args.no_progress, "backend": args.backend,
                    "ray_address": args.ray_address, "num_cpus": args.num_cpus}
    rank = 0
    try:
        if args.tp > 1 and (args.backend == "local" or "WORLD_SIZE" in os.environ):
            kwargs["encoder"] = _tp_encoder(spec)  # torchrun: this process is one rank
            kwargs["backend"] = "local"
            rank = int(os.environ.get("RANK", "0"))
        res = embed_dataset(args.dataset, tspec, spec, args.out or args.dataset,
                            seed=args.seed, **kwargs)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if rank == 0:
        if args.json:
            print(json.dumps(res.to_dict(), indent=2, default=str))
        print(f"embedded {res.n_encoded} texts ({res.n_tokens} tokens) in {res.wall_s:.1f} s: "
              f"{res.texts_per_s:.1f} texts/s, {res.tokens_per_s:.0f} tokens/s; "
              f"{res.shards_computed} shards computed, {res.shards_skipped} reused; "
              f"user history: {res.extra.get('user_history_source')}")
        for kind, path in res.paths.items():
            print(f"  {kind}: {path}")
    return 0


def _tp_encoder(spec: EmbedSpec):
    """Shard the model over the torchrun process group (gloo on CPU, nccl on GPU)."""
    import deepspeed
    import torch

    from recmind_dist.embed.encoder import default_model_path
    from recmind_dist.embed.tp_group import load_rank_model, sharded_encoder

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world != spec.tensor_parallel:
        raise InputError("--tp", "tensor_parallel",
                         f"--tp {spec.tensor_parallel} with --backend local needs torchrun "
                         f"--nproc_per_node {spec.tensor_parallel} (WORLD_SIZE is {world}); "
                         "or use --backend ray, where each replica starts its own ranks")
    cuda = torch.cuda.is_available()
    deepspeed.init_distributed(dist_backend="nccl" if cuda else "gloo")
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    device = f"cuda:{torch.cuda.current_device()}" if cuda else "cpu"
    model_id = spec.model or default_model_path()
    tok, model, dtype = load_rank_model(spec, model_id, device)
    enc, _ = sharded_encoder(spec, model_id, device, spec.torch_threads or 1, tok, model, dtype)
    return enc


if __name__ == "__main__":
    sys.exit(main())
