"""Partitioned vs replicated LightGCN training at scale (default: 1M nodes, 10M edges).

    .venv/bin/python benchmarks/partitioned_scale.py                 # 300k users + 700k items
    .venv/bin/python benchmarks/partitioned_scale.py --users 30000 --items 70000 \\
        --edges 1000000 --steps 3                                    # a quick look

1. synthetic data (recmind_dist.data.synthetic, cached under --cache); all interactions are
   the training graph (no split: this measures the engine, not quality);
2. partitions into --workers parts: METIS and random (cached by graph checksum); halo rows
   and halo bytes per propagation layer (float32, --dim) for each;
3. --steps BPR training steps (batch --batch, 3 layers) on --workers gloo processes
   (torch.multiprocessing) in three modes: partitioned/METIS, partitioned/random (each
   worker loads only its share of Â; own rows of the table + Adam state), and replicated
   (every worker loads the whole Â and table; DDP all-reduce of the full gradient).
   Per worker: peak RSS (VmHWM), RSS after `import torch` (the floor), seconds per step,
   halo bytes actually received per layer.

Prints a table (and --json for one JSON object).
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np


def _rss_mb() -> float:
    """Peak RSS of this process image (VmHWM). Not ru_maxrss: Linux keeps ru_maxrss across
    execve, so spawned workers would report the (large) parent's peak."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _current_rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _worker(rank: int, world: int, tmp: str, mode: str, cfg: dict) -> None:
    floor = _current_rss_mb()  # before torch
    import torch
    import torch.distributed as dist

    torch.set_num_threads(cfg["threads"])
    after_import = _current_rss_mb()
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    dist.init_process_group("gloo", init_method=f"file://{tmp}/pg-{mode}", rank=rank,
                            world_size=world)
    from recmind_dist.models.base import Batch
    from recmind_dist.specs import LightGCNSpec

    batches = np.load(f"{tmp}/batches.npy")  # (steps, 3, B) global (user, item, neg)
    nu = cfg["n_users"]
    t_build = time.perf_counter()
    if mode == "replicated":
        from torch.nn.parallel import DistributedDataParallel

        from recmind_dist.graph.adjacency import to_torch_csr
        from recmind_dist.models.lightgcn import LightGCN

        with open(f"{tmp}/full.pkl", "rb") as f:
            a = pickle.load(f)
        model = LightGCN(nu, cfg["n_items"], to_torch_csr(a),
                         LightGCNSpec(dim=cfg["dim"], layers=cfg["layers"], reg=1e-4), seed=0)
        del a

        class _L(torch.nn.Module):
            def __init__(self, m):
                super().__init__()
                self.m = m

            def forward(self, b):
                return self.m.training_loss(b, 1)

        net = DistributedDataParallel(_L(model))
        halo_bytes = 0
    else:
        from recmind_dist.models.partitioned_lightgcn import PartitionedLightGCN

        with open(f"{tmp}/{mode}-rank{rank}.pkl", "rb") as f:
            lg = pickle.load(f)
        lspec = LightGCNSpec(dim=cfg["dim"], layers=cfg["layers"], reg=1e-4)
        model = PartitionedLightGCN(nu, cfg["n_items"], lg, lspec, "cpu", None, 0)
        net = None
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    build_s = time.perf_counter() - t_build
    times = []
    for s in range(batches.shape[0]):
        u, i, j = (torch.from_numpy(batches[s, k]) for k in range(3))
        n = len(u)
        lo, hi = n * rank // world, n * (rank + 1) // world
        b = Batch(u[lo:hi], i[lo:hi], j[lo:hi])
        dist.barrier()
        t0 = time.perf_counter()
        if net is not None:
            loss, _ = net(b)
            scaled = loss
        else:  # each worker's share of the global batch loss; gradients summed at owners
            loss, _ = model.training_loss(b, 1)
            scaled = loss * (hi - lo) / n
        opt.zero_grad(set_to_none=True)
        scaled.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    if net is None:
        halo_bytes = model.adj.halo_bytes / batches.shape[0] / cfg["layers"]
    out = {"rank": rank, "mode": mode, "peak_rss_mb": _rss_mb(), "rss_before_torch_mb": floor,
           "rss_after_import_mb": after_import, "build_s": build_s,
           "step_s_median": float(np.median(times[1:] if len(times) > 1 else times)),
           "first_step_s": times[0], "halo_bytes_per_layer_received": halo_bytes,
           "loss_last": float(loss.detach())}
    with open(f"{tmp}/res-{mode}-{rank}.json", "w") as f:
        json.dump(out, f)
    dist.barrier()
    dist.destroy_process_group()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--users", type=int, default=300_000)
    p.add_argument("--items", type=int, default=700_000)
    p.add_argument("--edges", type=int, default=10_000_000)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--layers", type=int, default=3)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--batch", type=int, default=8192)
    p.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    p.add_argument("--modes", default="partitioned-metis,partitioned-random,replicated")
    p.add_argument("--cache", type=Path, default=Path("data/bench"))
    p.add_argument("--json", action="store_true")
    args = p.parse_args()

    import torch.multiprocessing as mp

    from recmind_dist.data.schema import load_dataset
    from recmind_dist.data.synthetic import generate_synthetic
    from recmind_dist.graph.adjacency import bipartite_adjacency, normalize_symmetric
    from recmind_dist.graph.partition import halo_stats, load_or_partition
    from recmind_dist.graph.partitioned import split_graph

    timings: dict[str, float] = {}
    ds_dir = args.cache / f"synthetic-{args.users}-{args.items}-{args.edges}"
    t0 = time.perf_counter()
    if not (ds_dir / "meta.json").exists():
        generate_synthetic(ds_dir, args.users, args.items, args.edges, 16, 0)
    inter = load_dataset(ds_dir).interactions
    pairs = np.stack([inter["user"].to_numpy(np.int64), inter["item"].to_numpy(np.int64)], 1)
    del inter
    timings["data_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    a = bipartite_adjacency(args.users, args.items, pairs)
    an = normalize_symmetric(a)
    timings["adjacency_s"] = time.perf_counter() - t0
    n_nodes, nnz = a.shape[0], a.nnz

    rng = np.random.default_rng(0)
    idx = rng.integers(0, len(pairs), size=(args.steps, args.batch))
    batches = np.stack([pairs[idx, 0], pairs[idx, 1],
                        rng.integers(0, args.items, size=(args.steps, args.batch))], 1)
    del pairs
    tmp = tempfile.mkdtemp(prefix="partbench-")
    np.save(f"{tmp}/batches.npy", batches)

    rows = []
    halo = {}
    modes = args.modes.split(",")
    for method in ("metis", "random"):
        t0 = time.perf_counter()
        parts = load_or_partition(a, args.workers, method, args.cache / "partitions")
        timings[f"partition_{method}_s"] = time.perf_counter() - t0
        stats = halo_stats(a, parts, args.workers, args.dim)
        halo[method] = stats
        if f"partitioned-{method}" in modes:
            for lg in split_graph(an, parts, args.workers):
                with open(f"{tmp}/partitioned-{method}-rank{lg.rank}.pkl", "wb") as f:
                    pickle.dump(lg, f, protocol=5)
    del a
    if "replicated" in modes:
        with open(f"{tmp}/full.pkl", "wb") as f:
            pickle.dump(an, f, protocol=5)
    del an
    cfg = {"n_users": args.users, "n_items": args.items, "dim": args.dim,
           "layers": args.layers, "threads": args.threads}
    for mode in modes:
        t0 = time.perf_counter()
        mp.start_processes(_worker, args=(args.workers, tmp, mode, cfg), nprocs=args.workers,
                           start_method="spawn")
        timings[f"run_{mode}_s"] = time.perf_counter() - t0
        for r in range(args.workers):
            with open(f"{tmp}/res-{mode}-{r}.json") as f:
                rows.append(json.load(f))

    report = {"nodes": n_nodes, "edges": nnz // 2, "nnz": nnz, "workers": args.workers,
              "dim": args.dim, "layers": args.layers, "steps": args.steps, "batch": args.batch,
              "halo": halo, "workers_runs": rows, "timings": timings}
    full_table_mb = n_nodes * args.dim * 4 / 2**20
    print(f"graph: {n_nodes:,} nodes, {nnz // 2:,} edges ({nnz:,} nnz of Â); dim {args.dim}; "
          f"{args.workers} workers; full table {full_table_mb:.0f} MB (float32)")
    print("\nhalo per propagation layer (rows each worker receives; bytes = rows*dim*4):")
    print(f"{'partitioner':<12}{'part':>5}{'own rows':>12}{'halo rows':>12}{'cut nnz':>12}"
          f"{'halo MB/layer':>15}")
    for method, stats in halo.items():
        for s in stats:
            print(f"{method:<12}{s['part']:>5}{s['own_rows']:>12,}{s['halo_rows']:>12,}"
                  f"{s['cut_nnz']:>12,}{s['halo_bytes_per_layer'] / 2**20:>15.1f}")
        tot = sum(s["halo_bytes_per_layer"] for s in stats) / 2**20
        print(f"{method:<12}{'all':>5}{'':>12}{'':>12}{'':>12}{tot:>15.1f}")
    print(f"\ntraining ({args.steps} steps, batch {args.batch}, {args.layers} layers, "
          f"{args.threads} thread/worker):")
    print(f"{'mode':<22}{'rank':>5}{'peak RSS MB':>13}{'torch floor MB':>16}{'s/step':>9}"
          f"{'halo MB/layer recv':>20}{'loss':>9}")
    for r in rows:
        print(f"{r['mode']:<22}{r['rank']:>5}{r['peak_rss_mb']:>13.0f}"
              f"{r['rss_after_import_mb']:>16.0f}{r['step_s_median']:>9.2f}"
              f"{r['halo_bytes_per_layer_received'] / 2**20:>20.1f}{r['loss_last']:>9.4f}")
    print("\ntimings: " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))
    if args.json:
        print(json.dumps(report, default=float))


if __name__ == "__main__":
    main()
