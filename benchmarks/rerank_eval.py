"""Test metrics of a run's top-K before/after LM re-ranking, and sample lists.

    .venv/bin/python benchmarks/rerank_eval.py --run RUN_ID [--k 20] [--weights 0.1 0.3]
        [--backend offline] [--sample 5] [--max-users N]

For every test user: the model's top-K (train+valid items excluded, as in the evaluator's test
split) -> re-ranked by the generator -> Recall/NDCG/MRR@10,20 of both lists. Recall@K of the
full list cannot change (same K items); the order-sensitive metrics can.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from recmind_dist.eval.evaluator import SplitEvaluator
from recmind_dist.generation import Generator
from recmind_dist.pipeline import load_run
from recmind_dist.rerank import Reranker, evaluate_rerank
from recmind_dist.specs import GenerateSpec

KEYS = ("recall_at_10", "ndcg_at_10", "ndcg_at_20", "mrr_at_20", "recall_at_20")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", required=True)
    ap.add_argument("--tracking-uri", default="sqlite:///mlflow.db")
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--weights", type=float, nargs="+", default=[0.3])
    ap.add_argument("--backend", default="offline")
    ap.add_argument("--cache-dir", default="data/generations")
    ap.add_argument("--sample", type=int, default=5)
    ap.add_argument("--max-users", type=int, default=None)
    a = ap.parse_args()
    spec, ds, data, model = load_run(a.run, a.tracking_uri)
    ev = SplitEvaluator(data, spec.eval)
    users = np.unique(data.test[:, 0])[: a.max_users]
    encoder = None
    print(f"run {a.run} ({spec.model.name}, seed {spec.seed}); {len(users)} test users; K={a.k}")
    print("| list | " + " | ".join(KEYS) + " | s |")
    print("|---" * (len(KEYS) + 2) + "|")
    res = None
    for w in a.weights:
        gen = Generator(GenerateSpec(backend=a.backend, cache_dir=a.cache_dir,
                                     offline_rerank_weight=w), encoder=encoder)
        encoder = getattr(gen.backend, "_encoder", None)
        rr = Reranker(gen, ds, data, spec.text)
        t0 = time.perf_counter()
        res = evaluate_rerank(model, data, ev, rr, k=a.k, ks=(10, 20), users=users)
        dt = time.perf_counter() - t0
        if w == a.weights[0]:
            print("| model order | " + " | ".join(f"{res['before'][k]:.4f}" for k in KEYS)
                  + " | |")
        print(f"| re-ranked ({a.backend}, w={w}) | "
              + " | ".join(f"{res['after'][k]:.4f}" for k in KEYS) + f" | {dt:.0f} |")
        print(f"  stats {res['stats']} generator {res['generator']}")
    held = {}
    for u, i in data.test:
        held.setdefault(int(u), set()).add(int(i))
    rng = np.random.default_rng(0)
    for r in rng.choice(res["lists"], size=min(a.sample, len(res["lists"])), replace=False):
        raw = ds.user_raw_ids[data.user_ids[r.user]]
        print(f"\nuser {raw}: {rr.profile.get(int(data.user_ids[r.user]), '')}")
        print(f"  ({r.backend}:{r.model}; model order of these items: "
              f"{[r.before.index(i) + 1 for i in r.items[:10]]})")
        for rank, (i, why) in enumerate(zip(r.items[:10], r.justifications[:10], strict=True), 1):
            hit = " [held-out hit]" if i in held.get(r.user, ()) else ""
            print(f"  {rank:2d}. {why}{hit}")


if __name__ == "__main__":
    main()
