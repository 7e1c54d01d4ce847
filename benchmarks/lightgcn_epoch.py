"""LightGCN epoch time: ours (torch.sparse CSR, symmetric backward) vs PyG's ``LightGCN``.

Same data (ml-100k, rating >= 4, per-user random 0.8/0.1/0.1, seed 2020), dim 64, 3 layers,
batch 2048, Adam lr 5e-3, the same negatives; both run side by side in this one process.
Prints the median epoch time of each, the ratio, full-ranking evaluation time, and the test
Recall@20/NDCG@20 each reaches after the same number of epochs (equal-quality check).

    python benchmarks/lightgcn_epoch.py [--epochs 40] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from recmind_dist.data.fetch import fetch_dataset
from recmind_dist.data.schema import load_dataset
from recmind_dist.data.split import make_split
from recmind_dist.eval.evaluator import SplitEvaluator
from recmind_dist.eval.ranking import evaluate_ranking
from recmind_dist.models.registry import build_model
from recmind_dist.sampling import NegativeSampler
from recmind_dist.specs import EvalSpec, LightGCNSpec, SplitSpec
from recmind_dist.train.loop import iterate_batches, seed_everything


def ours(data, epochs: int, lr: float, ev: SplitEvaluator) -> tuple[list[float], dict]:
    seed_everything(0)
    model = build_model(LightGCNSpec(dim=64, layers=3, reg=1e-4), data)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sampler, rng, times = NegativeSampler(data.n_items, data.train), np.random.default_rng(0), []
    for epoch in range(1, epochs + 1):
        t0 = time.perf_counter()
        for batch in iterate_batches(data, sampler, 2048, rng, torch.device("cpu")):
            loss, _ = model.training_loss(batch, epoch)
            opt.zero_grad()
            loss.backward()
            opt.step()
        times.append(time.perf_counter() - t0)
    return times, ev.evaluate(model, "test", buckets=False)


def pyg(data, epochs: int, lr: float, ev: SplitEvaluator) -> tuple[list[float], dict]:
    from torch_geometric.nn.models import LightGCN as PygLightGCN

    seed_everything(0)
    nu, ni = data.n_users, data.n_items
    u = torch.from_numpy(data.train[:, 0])
    i = torch.from_numpy(data.train[:, 1]) + nu
    edge_index = torch.stack([torch.cat([u, i]), torch.cat([i, u])])
    model = PygLightGCN(nu + ni, embedding_dim=64, num_layers=3)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sampler, rng, times = NegativeSampler(ni, data.train), np.random.default_rng(0), []
    for _ in range(epochs):
        t0 = time.perf_counter()
        for batch in iterate_batches(data, sampler, 2048, rng, torch.device("cpu")):
            users = batch.users
            pos = torch.stack([users, batch.pos + nu])
            neg = torch.stack([users, batch.neg + nu])
            label_index = torch.cat([pos, neg], dim=1)
            pos_rank, neg_rank = model(edge_index, label_index).chunk(2)
            loss = model.recommendation_loss(
                pos_rank, neg_rank, node_id=label_index.unique(), lambda_reg=1e-4
            )
            opt.zero_grad()
            loss.backward()
            opt.step()
        times.append(time.perf_counter() - t0)
    with torch.no_grad():
        emb = model.get_embedding(edge_index)
    test = evaluate_ranking(emb[:nu], emb[nu:], ev.test_mat, ev.test_exclude, [20, 40])
    return times, test


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--lr", type=float, default=5e-3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cache-dir", type=Path, default=Path("data"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    ds = load_dataset(fetch_dataset("ml-100k", args.cache_dir))
    data = make_split(ds, SplitSpec(), seed=2020)
    ev = SplitEvaluator(data, EvalSpec(ks=[20, 40]))

    ours_t, ours_q = ours(data, args.epochs, args.lr, ev)
    pyg_t, pyg_q = pyg(data, args.epochs, args.lr, ev)

    seed_everything(0)
    model = build_model(LightGCNSpec(), data)
    eval_t = []
    for _ in range(5):
        t0 = time.perf_counter()
        ev.evaluate(model, "test")
        eval_t.append(time.perf_counter() - t0)

    med_o, med_p = statistics.median(ours_t), statistics.median(pyg_t)
    print(f"\nml-100k LightGCN (dim 64, 3 layers, batch 2048, {args.epochs} epochs, "
          f"{torch.get_num_threads()} threads; {len(data.train)} training edges)")
    print("| implementation | median epoch (s) | test Recall@20 | test NDCG@20 | Recall@40 |")
    print("|---|---|---|---|---|")
    for name, med, q in (("recmind-dist", med_o, ours_q), ("PyG LightGCN", med_p, pyg_q)):
        print(f"| {name} | {med:.3f} | {q['recall_at_20']:.4f} | {q['ndcg_at_20']:.4f} "
              f"| {q['recall_at_40']:.4f} |")
    print(f"\nratio ours / PyG = {med_o / med_p:.3f}  (goal <= 0.3)")
    print(f"full-ranking test evaluation (942 users x 1447 items, all metrics + buckets): "
          f"median {statistics.median(eval_t) * 1000:.1f} ms")


if __name__ == "__main__":
    main()
