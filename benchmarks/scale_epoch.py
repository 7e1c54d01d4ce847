"""Full partitioned LightGCN epochs at 1M nodes / 10M training edges on 2 gloo workers.

    python benchmarks/scale_epoch.py                                   # the 1M-node run
    python benchmarks/scale_epoch.py --users 30000 --items 70000 --edges 1111112 \\
        --ab-steps 2 --epochs 1                                        # a quick look

1. synthetic data (recmind_dist.data.synthetic, cached under --cache), a per-user random
   0.9/0.05/0.05 split (the default --edges makes 10M training edges); Â of the training
   graph; partitions (METIS balancing nodes = today's ``metis``, METIS balancing non-zeros =
   ``metis_nnz``; cached); halo rows and bytes per layer for each.
2. **kernel A/B** (driver, 1 thread): the largest worker's local product ``Â_r x`` and its
   transpose (one layer forward + backward) with the rows in today's order (sorted ids) vs
   reverse Cuthill-McKee order (own rows; halo columns by first use), float32 CSR vs
   bfloat16 (torch's CPU CSR kernel has no bf16: COO), 1 vs 2 threads.
3. **training A/B** (``--ab-steps`` steps each, 2 workers, 1 thread each): the trainer's
   partitioned step (:class:`~recmind_dist.models.partitioned_lightgcn.PartitionedLightGCN`,
   :func:`~recmind_dist.train.loop.shard_batches` / :func:`~recmind_dist.train.loop.train_epoch`
   exactly as :mod:`recmind_dist.train.distributed` runs them, Adam at
   :func:`~recmind_dist.train.lr_rule.effective_lr`) for each ``partitioner:batch`` in
   ``--ab``: median s/step (after the first), steps/epoch, projected epoch seconds, peak RSS
   per worker, halo MB received per layer.
4. **full epochs** (``--epochs``) with the chosen ``--partitioner``, ``--batch`` and
   ``--lr-scaling``: every training edge once per epoch; epoch seconds measured (negative
   sampling included); after each epoch validation Recall@20 / NDCG@20 over a fixed random
   sample of ``--valid-users`` users (full ranking over every item, on rank 0, after the
   collective gather of the representations -- evaluation time reported apart).

Every timing row records the 1-minute load average beside it (the box is shared). Prints
tables; --json writes everything.
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

sys.path.insert(0, str(Path(__file__).resolve().parent))  # partitioned_scale's RSS helpers

import numpy as np
from partitioned_scale import _current_rss_mb, _rss_mb


def _load() -> float:
    return os.getloadavg()[0]


# ------------------------------------------------------------------ training workers


def _timed(batches, times: list[float], limit: int | None):
    """Pass ``(batch, weight)`` through; record the seconds each one spent in the step."""
    t = time.perf_counter()
    for k, item in enumerate(batches):
        if limit is not None and k >= limit:
            return
        yield item
        now = time.perf_counter()
        times.append(now - t)
        t = now


def _worker(rank: int, world: int, tmp: str, row: dict, cfg: dict) -> None:
    floor = _current_rss_mb()
    import torch
    import torch.distributed as dist

    torch.set_num_threads(cfg["threads"])
    after_import = _current_rss_mb()
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    dist.init_process_group("gloo", init_method=f"file://{tmp}/pg-{row['name']}", rank=rank,
                            world_size=world)
    from recmind_dist.models.partitioned_lightgcn import PartitionedLightGCN
    from recmind_dist.sampling import NegativeSampler
    from recmind_dist.specs import LightGCNSpec, TrainSpec
    from recmind_dist.train.loop import make_optimizer, seed_everything, shard_batches, train_epoch
    from recmind_dist.train.lr_rule import effective_lr

    with open(f"{tmp}/data.pkl", "rb") as f:
        data = pickle.load(f)
    with open(f"{tmp}/{row['partitioner']}-rank{rank}.pkl", "rb") as f:
        lg = pickle.load(f)
    ts = TrainSpec(batch_size=row["batch"], lr=cfg["lr"], lr_scaling=row["rule"],
                   lr_reference_batch=cfg["reference_batch"])
    seed_everything(cfg["seed"])
    model = PartitionedLightGCN(data.n_users, data.n_items, lg,
                                LightGCNSpec(dim=cfg["dim"], layers=cfg["layers"], reg=1e-4),
                                "cpu", None, cfg["seed"])
    del lg
    opt = make_optimizer(model, effective_lr(ts))
    sampler = NegativeSampler(data.n_items, data.train)
    rng = np.random.default_rng(cfg["seed"])
    evaluator = None
    if rank == 0 and row["eval"]:
        from dataclasses import replace

        from recmind_dist.eval.evaluator import SplitEvaluator
        from recmind_dist.specs import EvalSpec

        users = np.unique(data.valid[:, 0])
        users = np.random.default_rng(cfg["seed"]).choice(
            users, min(cfg["valid_users"], len(users)), replace=False)
        sample = replace(data, valid=data.valid[np.isin(data.valid[:, 0], users)],
                         test=data.test[:0])
        evaluator = SplitEvaluator(sample, EvalSpec(ks=[20], batch_users=64))
    epochs, step_times = [], []
    for epoch in range(1, row["epochs"] + 1):
        times: list[float] = []
        dist.barrier()
        t0 = time.perf_counter()
        batches = shard_batches(data, sampler, row["batch"], rng, torch.device("cpu"), rank,
                                world)
        sums, n = train_epoch(lambda b, w, ep=epoch: _scaled(model.training_loss(b, ep), w),
                              opt, _timed(batches, times, row["max_steps"]))
        dist.barrier()
        ep = {"epoch": epoch, "epoch_s": time.perf_counter() - t0, "steps": n,
              "load": _load(), "bpr": sums.get("bpr", 0.0) / max(n, 1)}
        step_times += times
        if row["eval"]:
            t1 = time.perf_counter()
            model.gather_for_eval()  # collective
            if rank == 0:
                valid = evaluator.evaluate(model, "valid", buckets=False)
                ep.update({"valid_recall_at_20": valid["recall_at_20"],
                           "valid_ndcg_at_20": valid["ndcg_at_20"]})
                model._full = None
            ep["eval_s"] = time.perf_counter() - t1
            dist.barrier()
        epochs.append(ep)
        if rank == 0:  # progress (and what survives an interrupted run)
            print(f"  [{row['name']}] epoch {epoch}: " + ", ".join(
                f"{k} {v:.4g}" for k, v in ep.items() if k != "epoch"), flush=True)
    out = {"rank": rank, **row, "lr": effective_lr(ts), "peak_rss_mb": _rss_mb(),
           "rss_before_torch_mb": floor, "rss_after_import_mb": after_import,
           "step_s_median": float(np.median(step_times[1:] if len(step_times) > 1
                                            else step_times)),
           "halo_mb_per_layer": model.adj.halo_bytes / max(len(step_times), 1)
           / cfg["layers"] / 2**20, "epochs_log": epochs}
    with open(f"{tmp}/res-{row['name']}-{rank}.json", "w") as f:
        json.dump(out, f)
    dist.barrier()
    dist.destroy_process_group()


def _scaled(loss_parts, weight: float):
    """The partitioned trainer's scaling: this worker's share of the global batch loss."""
    loss, parts = loss_parts
    return loss * weight, parts


# ------------------------------------------------------------------ kernel A/B


def _first_use_halo(sub, halo: np.ndarray, parts: np.ndarray, rank: int) -> np.ndarray:
    rows = np.repeat(np.arange(sub.shape[0]), np.diff(sub.indptr))
    remote = parts[sub.indices] != rank
    first = np.full(len(parts), np.iinfo(np.int64).max)
    np.minimum.at(first, sub.indices[remote], rows[remote])
    return halo[np.argsort(first[halo], kind="stable")]


def _local(an, own: np.ndarray, halo: np.ndarray):
    import scipy.sparse as sp

    local = np.full(an.shape[0], -1, np.int64)
    local[own] = np.arange(len(own))
    local[halo] = len(own) + np.arange(len(halo))
    s = an[own].tocsr()
    m = sp.csr_matrix((s.data.astype(np.float32), local[s.indices], s.indptr),
                      shape=(len(own), len(own) + len(halo)))
    m.sort_indices()
    return m


def kernel_ab(an, parts: np.ndarray, dim: int, reps: int) -> list[dict]:
    """Forward + backward product of the largest part's Â_r in several layouts (A/B
    interleaved, ``reps`` rounds; median seconds)."""
    import warnings

    import torch
    from scipy.sparse.csgraph import reverse_cuthill_mckee

    warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")

    deg = np.diff(an.indptr)
    rank = int(np.argmax(np.bincount(parts, weights=deg)))
    own = np.flatnonzero(parts == rank)
    cols = an[own].indices
    halo = np.unique(cols[parts[cols] != rank])
    halo = halo[np.argsort(parts[halo], kind="stable")]
    rcm = own[reverse_cuthill_mckee(an[own][:, own].tocsr(), symmetric_mode=True)]
    base = _local(an, own, halo)
    reordered = _local(an, rcm, _first_use_halo(an[rcm].tocsr(), halo, parts, rank))

    def tensors(m, dtype, layout):
        out = []
        for mm in (m, m.T.tocsr()):
            t = torch.sparse_csr_tensor(torch.from_numpy(mm.indptr.astype(np.int64)),
                                        torch.from_numpy(mm.indices.astype(np.int64)),
                                        torch.from_numpy(mm.data).to(dtype), size=mm.shape)
            out.append(t.to_sparse_coo() if layout == "coo" else t)
        return (*out, torch.randn(m.shape[1], dim).to(dtype),
                torch.randn(m.shape[0], dim).to(dtype))

    layouts = [("sorted ids, fp32 CSR (today)", base, torch.float32, "csr", 1),
               ("RCM order, fp32 CSR", reordered, torch.float32, "csr", 1),
               ("sorted ids, fp32 COO", base, torch.float32, "coo", 1),
               ("sorted ids, bf16 COO", base, torch.bfloat16, "coo", 1),
               ("sorted ids, fp32 CSR, 2 threads", base, torch.float32, "csr", 2)]
    built = [(name, tensors(m, dt, lay), th) for name, m, dt, lay, th in layouts]
    times: dict[str, list[float]] = {name: [] for name, *_ in layouts}
    for _ in range(reps):
        for name, (a, at, x, g), threads in built:
            torch.set_num_threads(threads)
            t0 = time.perf_counter()
            torch.sparse.mm(a, x)
            torch.sparse.mm(at, g)
            times[name].append(time.perf_counter() - t0)
    torch.set_num_threads(1)
    return [{"layout": name, "rank": rank, "nnz": int(base.nnz),
             "fwd_bwd_s": float(np.median(ts[1:] if len(ts) > 1 else ts)), "load": _load()}
            for name, ts in times.items()]


# ------------------------------------------------------------------ driver


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--users", type=int, default=300_000)
    p.add_argument("--items", type=int, default=700_000)
    p.add_argument("--edges", type=int, default=11_111_112,
                   help="interactions before the 0.9/0.05/0.05 split (default: 10M training)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--layers", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    p.add_argument("--lr", type=float, default=5e-3, help="Adam lr at --reference-batch")
    p.add_argument("--reference-batch", type=int, default=8192)
    p.add_argument("--ab", nargs="*", default=["metis:8192", "metis_nnz:8192",
                                               "metis_nnz:262144"],
                   help="partitioner:batch rows of the training A/B")
    p.add_argument("--ab-steps", type=int, default=3)
    p.add_argument("--kernel-reps", type=int, default=4)
    p.add_argument("--partitioner", default="metis_nnz")
    p.add_argument("--batch", type=int, default=262144)
    p.add_argument("--lr-scaling", default="sqrt")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--valid-users", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache", type=Path, default=Path("data/bench"))
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()

    import torch
    import torch.multiprocessing as mp

    from recmind_dist.data.schema import load_dataset
    from recmind_dist.data.split import make_split
    from recmind_dist.data.synthetic import generate_synthetic
    from recmind_dist.graph.adjacency import bipartite_adjacency, normalize_symmetric
    from recmind_dist.graph.partition import halo_stats, load_or_partition
    from recmind_dist.graph.partitioned import split_graph
    from recmind_dist.specs import SplitSpec
    from recmind_dist.train.loop import steps_per_epoch

    torch.set_num_threads(1)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    ds_dir = args.cache / f"synthetic-{args.users}-{args.items}-{args.edges}"
    if not (ds_dir / "meta.json").exists():
        generate_synthetic(ds_dir, args.users, args.items, args.edges, 16, 0)
    data = make_split(load_dataset(ds_dir), SplitSpec(threshold=None, kcore=0,
                                                      ratios=(0.9, 0.05, 0.05)), args.seed)
    timings["data_s"] = time.perf_counter() - t0
    tmp = tempfile.mkdtemp(prefix="scale-epoch-")
    with open(f"{tmp}/data.pkl", "wb") as f:
        pickle.dump(data, f, protocol=5)
    a = bipartite_adjacency(data.n_users, data.n_items, data.train)
    an = normalize_symmetric(a).tocsr()
    n_train = len(data.train)
    print(f"graph: {a.shape[0]:,} nodes, {n_train:,} training edges ({an.nnz:,} nnz of Â), "
          f"{len(data.valid):,} valid; {args.workers} workers x {args.threads} thread; "
          f"dim {args.dim}, {args.layers} layers", flush=True)

    ab_rows = [dict(zip(("partitioner", "batch"), r.split(":"), strict=True))
               for r in args.ab]
    partitioners = sorted({r["partitioner"] for r in ab_rows} | {args.partitioner})
    halo, parts_of = {}, {}
    for method in partitioners:
        t0 = time.perf_counter()
        parts = load_or_partition(a, args.workers, method, args.cache / "partitions")
        timings[f"partition_{method}_s"] = time.perf_counter() - t0
        parts_of[method] = parts
        halo[method] = halo_stats(a, parts, args.workers, args.dim)
        for lg in split_graph(an, parts, args.workers):
            with open(f"{tmp}/{method}-rank{lg.rank}.pkl", "wb") as f:
                pickle.dump(lg, f, protocol=5)
    print("\npartitions (per worker: own rows, non-zeros of Â_r, halo rows, halo MB/layer):")
    for method, stats in halo.items():
        for s in stats:
            print(f"  {method:<10} part {s['part']}: {s['own_rows']:>9,} rows "
                  f"{s['nnz']:>12,} nnz {s['halo_rows']:>9,} halo "
                  f"{s['halo_bytes_per_layer'] / 2**20:>7.1f} MB", flush=True)
    del a

    kernel = kernel_ab(an, parts_of[args.partitioner], args.dim, args.kernel_reps)
    print(f"\nkernel A/B: one layer fwd+bwd of the largest Â_r ({kernel[0]['nnz']:,} nnz, "
          f"{args.partitioner}), median of {args.kernel_reps - 1}; avx512_bf16: "
          f"{'yes' if 'avx512_bf16' in Path('/proc/cpuinfo').read_text() else 'no'}")
    for k in kernel:
        print(f"  {k['layout']:<34}{k['fwd_bwd_s']:>8.3f} s   (x{k['fwd_bwd_s'] / kernel[0]['fwd_bwd_s']:.2f})"
              f"   load {k['load']:.1f}", flush=True)
    del an

    cfg = {"dim": args.dim, "layers": args.layers, "threads": args.threads, "lr": args.lr,
           "reference_batch": args.reference_batch, "seed": args.seed,
           "valid_users": args.valid_users}
    rows = [{"name": f"ab-{r['partitioner']}-{r['batch']}", "partitioner": r["partitioner"],
             "batch": int(r["batch"]), "rule": args.lr_scaling, "epochs": 1,
             "max_steps": args.ab_steps, "eval": False} for r in ab_rows]
    if args.epochs:
        rows.append({"name": "full", "partitioner": args.partitioner, "batch": args.batch,
                     "rule": args.lr_scaling, "epochs": args.epochs, "max_steps": None,
                     "eval": True})
    results = []
    for row in rows:
        t0 = time.perf_counter()
        mp.start_processes(_worker, args=(args.workers, tmp, row, cfg), nprocs=args.workers,
                           start_method="spawn")
        timings[f"run_{row['name']}_s"] = time.perf_counter() - t0
        res = [json.loads(Path(f"{tmp}/res-{row['name']}-{r}.json").read_text())
               for r in range(args.workers)]
        results.append(res)
        r0 = res[0]
        spe = steps_per_epoch(n_train, row["batch"], args.workers)
        print(f"  {row['name']}: {r0['step_s_median']:.2f} s/step x {spe} steps, "
              f"load {r0['epochs_log'][-1]['load']:.1f}", flush=True)

    print(f"\ntraining A/B ({args.ab_steps} steps each; epoch s = s/step x steps/epoch "
          f"projected, 'full' measured):")
    print(f"{'row':<26}{'batch':>8}{'lr':>9}{'s/step':>8}{'steps/ep':>9}{'epoch s':>9}"
          f"{'peak RSS MB (per worker)':>26}{'halo MB/layer recv':>20}{'load':>6}")
    for res in results:
        r0 = res[0]
        spe = steps_per_epoch(n_train, r0["batch"], args.workers)
        ep_s = (r0["epochs_log"][0]["epoch_s"] if r0["max_steps"] is None
                else r0["step_s_median"] * spe)
        rss = " / ".join(f"{r['peak_rss_mb']:.0f}" for r in res)
        hb = " / ".join(f"{r['halo_mb_per_layer']:.1f}" for r in res)
        print(f"{r0['name']:<26}{r0['batch']:>8}{r0['lr']:>9.3g}{r0['step_s_median']:>8.2f}"
              f"{spe:>9}{ep_s:>9.0f}{rss:>26}{hb:>20}{r0['epochs_log'][0]['load']:>6.1f}")
    if args.epochs:
        print(f"\nfull epochs ({args.partitioner}, batch {args.batch}, lr rule "
              f"{args.lr_scaling}); validation on {args.valid_users} sampled users:")
        print(f"{'epoch':>6}{'epoch s':>9}{'steps':>7}{'BPR':>8}{'valid R@20':>12}"
              f"{'valid N@20':>12}{'eval s':>8}{'load':>6}")
        for e in results[-1][0]["epochs_log"]:
            print(f"{e['epoch']:>6}{e['epoch_s']:>9.0f}{e['steps']:>7}{e['bpr']:>8.4f}"
                  f"{e['valid_recall_at_20']:>12.4f}{e['valid_ndcg_at_20']:>12.4f}"
                  f"{e['eval_s']:>8.0f}{e['load']:>6.1f}")
    print("\ntimings: " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))
    if args.json:
        args.json.write_text(json.dumps({"halo": halo, "kernel": kernel, "runs": results,
                                         "timings": timings, "args": vars(args)},
                                        default=str))


if __name__ == "__main__":
    main()
