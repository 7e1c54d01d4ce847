"""Full-ranking evaluation at scale: every test user over every item, on 1 and 2 workers.

    nice -n 5 .venv/bin/python benchmarks/eval_scale.py       # 100k and 1M nodes, 1 and 2 workers
    .venv/bin/python benchmarks/eval_scale.py --sizes 3000:7000:100000 --workers 1,2  # a quick look

1. synthetic data (recmind_dist.data.synthetic, cached under --cache in the folders of
   benchmarks/partitioned_scale.py); a size is USERS:ITEMS:EDGES (100k nodes: 30k users +
   70k items, 1M edges; 1M nodes: 300k + 700k, 10M edges); the job's random 80/10/10 split
   (all interactions implicit) and its SplitEvaluator (test: train + valid items masked,
   degree buckets cold/tail/head);
2. random user/item representations of width --dim (ranking time does not depend on the
   values; the model is not the object here);
3. for each worker count, that many gloo processes (torch.multiprocessing, --threads torch
   threads each) run ``evaluate_ranking(..., over_workers=True)``: each worker ranks its
   share of the test users over all items, EvalSpec.batch_users x EvalSpec.chunk_items
   scores at a time with a running top-K, and the metric sums are all-reduced.

Per run: test users evaluated, items, seconds (slowest worker, from a barrier to the
all-reduced metrics), CPU seconds (all workers; the work, whatever the box's load), peak RSS per worker (VmHWM; includes the full tables and the sparse
train/test matrices every worker loads), the 1-minute load average before and after, and
Recall@20 (equal across worker counts). ``--max-users N`` ranks only the first N test users
(then the table says so).
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np


def _peak_rss_mb() -> float:
    """VmHWM of this process (not ru_maxrss: Linux keeps that across execve)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def _worker(rank: int, world: int, tmp: str, threads: int, tag: str) -> None:
    import torch
    import torch.distributed as dist

    torch.set_num_threads(threads)
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    dist.init_process_group("gloo", init_method=f"file://{tmp}/pg-{tag}", rank=rank,
                            world_size=world)
    from recmind_dist.eval.ranking import evaluate_ranking

    with open(f"{tmp}/problem.pkl", "rb") as f:
        p = pickle.load(f)
    dist.barrier()
    t0, c0 = time.perf_counter(), time.process_time()
    metrics = evaluate_ranking(p["user"], p["item"], p["truth"], p["exclude"], p["ks"],
                               p["buckets"], p["batch_users"], p["progress"] and rank == 0,
                               p["chunk_items"], over_workers=True)
    seconds, cpu_s = time.perf_counter() - t0, time.process_time() - c0
    with open(f"{tmp}/res-{tag}-{rank}.json", "w") as f:
        json.dump({"rank": rank, "seconds": seconds, "cpu_s": cpu_s, "peak_rss_mb": _peak_rss_mb(),
                   "metrics": metrics}, f)
    dist.barrier()
    dist.destroy_process_group()


def _problem(users: int, items: int, edges: int, args: argparse.Namespace) -> dict:
    import scipy.sparse as sp
    import torch

    from recmind_dist.data.schema import load_dataset
    from recmind_dist.data.split import make_split
    from recmind_dist.data.synthetic import generate_synthetic
    from recmind_dist.eval.evaluator import SplitEvaluator
    from recmind_dist.specs import EvalSpec, SplitSpec

    ds_dir = args.cache / f"synthetic-{users}-{items}-{edges}"
    if not (ds_dir / "meta.json").exists():
        generate_synthetic(ds_dir, users, items, edges, 16, 0)
    data = make_split(load_dataset(ds_dir), SplitSpec(threshold=None), seed=0)
    spec = EvalSpec(**{k: v for k, v in (("batch_users", args.batch_users),
                                          ("chunk_items", args.chunk_items)) if v})
    ev = SplitEvaluator(data, spec)
    truth = ev.test_mat
    if args.max_users:
        rows = np.flatnonzero(np.diff(truth.indptr) > 0)[: args.max_users]
        keep = np.zeros(truth.shape[0], dtype=np.float32)
        keep[rows] = 1.0
        truth = (sp.diags(keep) @ truth).tocsr()
        truth.eliminate_zeros()
    g = torch.Generator().manual_seed(0)
    return {"user": torch.randn(data.n_users, args.dim, generator=g),
            "item": torch.randn(data.n_items, args.dim, generator=g),
            "truth": truth, "exclude": ev.test_exclude, "ks": spec.ks, "buckets": ev.buckets,
            "batch_users": spec.batch_users, "chunk_items": spec.chunk_items,
            "progress": args.progress, "n_users": data.n_users, "n_items": data.n_items,
            "n_train": len(data.train), "n_test_users": int((np.diff(truth.indptr) > 0).sum())}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--sizes", default="30000:70000:1000000,300000:700000:10000000",
                   help="comma-separated USERS:ITEMS:EDGES")
    p.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    p.add_argument("--batch-users", type=int, default=None, help="default: EvalSpec's")
    p.add_argument("--chunk-items", type=int, default=None, help="default: EvalSpec's")
    p.add_argument("--max-users", type=int, default=None, help="rank only the first N test users")
    p.add_argument("--cache", type=Path, default=Path("data/bench"))
    p.add_argument("--progress", action="store_true", help="worker 0's progress bar")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()

    import torch.multiprocessing as mp

    rows = []
    for size in args.sizes.split(","):
        users, items, edges = (int(x) for x in size.split(":"))
        t0 = time.perf_counter()
        prob = _problem(users, items, edges, args)
        prep_s = time.perf_counter() - t0
        tmp = tempfile.mkdtemp(prefix="evalbench-")
        with open(f"{tmp}/problem.pkl", "wb") as f:
            pickle.dump(prob, f, protocol=5)
        for world in (int(w) for w in args.workers.split(",")):
            tag = f"{users}-{world}"
            load_before = os.getloadavg()[0]
            t0 = time.perf_counter()
            mp.start_processes(_worker, args=(world, tmp, args.threads, tag), nprocs=world,
                               start_method="spawn")
            wall = time.perf_counter() - t0
            res = []
            for r in range(world):
                with open(f"{tmp}/res-{tag}-{r}.json") as f:
                    res.append(json.load(f))
            row = {"nodes": prob["n_users"] + prob["n_items"], "users": prob["n_users"],
                   "items": prob["n_items"], "train_edges": prob["n_train"],
                   "users_evaluated": prob["n_test_users"], "workers": world,
                   "threads": args.threads, "dim": args.dim,
                   "batch_users": prob["batch_users"], "chunk_items": prob["chunk_items"],
                   "seconds": max(x["seconds"] for x in res), "wall_s": wall,
                   "cpu_s": sum(x["cpu_s"] for x in res),
                   "prep_s": prep_s, "peak_rss_mb": [x["peak_rss_mb"] for x in res],
                   "load_before": load_before, "load_after": os.getloadavg()[0],
                   "recall_at_20": res[0]["metrics"].get("recall_at_20"),
                   "cold_recall_at_20": res[0]["metrics"].get("cold/recall_at_20")}
            rows.append(row)
            print(f"done: {row}", file=sys.stderr, flush=True)

    print(f"full-ranking evaluation, dim {args.dim}, {args.threads} torch thread(s)/worker, "
          f"top-K over every item, train+valid items masked, degree buckets")
    print(f"{'nodes':>10}{'users eval':>12}{'items':>10}{'workers':>8}{'chunk':>14}"
          f"{'seconds':>9}{'CPU s':>9}{'users/s':>9}{'peak RSS MB/worker':>20}{'load 1m':>12}{'R@20':>9}")
    for r in rows:
        rss = "/".join(f"{x:.0f}" for x in r["peak_rss_mb"])
        print(f"{r['nodes']:>10,}{r['users_evaluated']:>12,}{r['items']:>10,}{r['workers']:>8}"
              f"{r['batch_users']:>6}x{r['chunk_items']:<7}{r['seconds']:>9.1f}{r['cpu_s']:>9.1f}"
              f"{r['users_evaluated'] / r['seconds']:>9.0f}{rss:>20}"
              f"{r['load_before']:>6.1f}/{r['load_after']:<5.1f}{r['recall_at_20']:>9.5f}")
    if args.json:
        print(json.dumps(rows, default=float))


if __name__ == "__main__":
    main()
