"""Large batch + lr rule vs the exact small-batch method: converged quality against wall time.

    python benchmarks/large_batch_quality.py                      # 30k users + 70k items, 1M edges
    python benchmarks/large_batch_quality.py --arms exact:8192:none fast:65536:sqrt

Synthetic data (recmind_dist.data.synthetic; cached under --cache), a per-user random
0.8/0.1/0.1 split, single-process LightGCN (dim 64, 3 layers, reg 1e-4, BPR) trained by the
project's trainer (:func:`recmind_dist.train.loop.train_model`) until validation NDCG@20 stops
improving (``--patience`` validations) or ``--max-seconds`` of training. Validation during
training ranks a fixed random sample of ``--valid-users`` users (the same for every arm;
full-catalogue ranking, train items masked) to keep evaluation cheap on 2 cores; the final
validation and test metrics rank every user. Each arm is
``name:batch:rule`` with ``train.lr_scaling = rule`` and ``train.lr_reference_batch =
--reference-batch`` (so the arm trains at ``lr · (batch / reference)^p``,
:mod:`recmind_dist.train.lr_rule`). Arms run one after another in this process.

Prints each arm's test Recall@20 / NDCG@20 (best-validation parameters), the relative
difference to the first arm, epochs, steps and training seconds; writes the validation
curves (NDCG@20 vs training seconds, evaluation time excluded) to --plot and the numbers to
--json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch


class SampledValidation:
    """The trainer's evaluator with validation on a fixed user sample (test: every user)."""

    def __init__(self, data, spec, n_users: int, seed: int) -> None:
        from dataclasses import replace

        from recmind_dist.eval.evaluator import SplitEvaluator

        self.full = SplitEvaluator(data, spec)
        users = np.unique(data.valid[:, 0])
        if n_users < len(users):
            users = np.random.default_rng(seed).choice(users, n_users, replace=False)
            self.sample = SplitEvaluator(
                replace(data, valid=data.valid[np.isin(data.valid[:, 0], users)]), spec)
        else:
            self.sample = self.full

    def evaluate(self, model, split: str = "valid", buckets: bool = True, progress: bool = False):
        ev = self.sample if split == "valid" and buckets is False else self.full
        return ev.evaluate(model, split, buckets, progress)


def run_arm(data, name: str, batch: int, rule: str, args) -> dict:
    from recmind_dist.models.registry import build_model
    from recmind_dist.specs import EvalSpec, LightGCNSpec, TrainSpec
    from recmind_dist.train.loop import seed_everything, steps_per_epoch, train_model
    from recmind_dist.train.lr_rule import effective_lr

    ts = TrainSpec(epochs=args.max_epochs, batch_size=batch, lr=args.lr, lr_scaling=rule,
                   lr_reference_batch=args.reference_batch, eval_every=args.eval_every,
                   patience=args.patience, max_seconds=args.max_seconds,
                   num_threads=args.threads)
    seed_everything(args.seed)
    model = build_model(LightGCNSpec(dim=64, layers=3, reg=1e-4), data)
    ev = SampledValidation(data, EvalSpec(ks=[20]), args.valid_users, args.seed)
    t0 = time.perf_counter()
    def show(epoch: int, row: dict, _model) -> None:  # the curve survives an interrupted run
        if "valid/ndcg_at_20" in row:
            print(f"  [{name}] epoch {epoch} train_s {row['train_seconds']:.1f} valid NDCG@20 "
                  f"{row['valid/ndcg_at_20']:.4f} Recall@20 {row['valid/recall_at_20']:.4f} "
                  f"load {os.getloadavg()[0]:.1f}", flush=True)

    res = train_model(model, data, ts, ev, args.seed, on_epoch=show, progress=False)
    wall = time.perf_counter() - t0
    curve = [(r["train_seconds"], r["epoch"], r["valid/ndcg_at_20"], r["valid/recall_at_20"])
             for r in res.history if "valid/ndcg_at_20" in r]
    out = {"arm": name, "batch": batch, "rule": rule, "lr": effective_lr(ts),
           "steps_per_epoch": steps_per_epoch(len(data.train), batch),
           "best_epoch": res.best_epoch, "epochs_run": res.epochs_run,
           "stop_reason": res.stop_reason, "train_seconds": res.train_seconds, "wall_s": wall,
           "test_recall_at_20": res.test["recall_at_20"], "test_ndcg_at_20": res.test["ndcg_at_20"],
           "valid_ndcg_at_20": res.best_valid["ndcg_at_20"], "curve": curve,
           "load_avg": os.getloadavg()}
    print(json.dumps({k: v for k, v in out.items() if k != "curve"}), flush=True)
    return out


def plot(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for r in rows:
        xs = [c[0] for c in r["curve"]]
        ys = [c[2] for c in r["curve"]]
        ax.plot(xs, ys, marker=".", label=f"{r['arm']}: batch {r['batch']:,}, lr {r['lr']:.2g} "
                f"({r['steps_per_epoch']} steps/epoch); test NDCG@20 {r['test_ndcg_at_20']:.4f}")
    ax.set_xlabel("training seconds (evaluation excluded)")
    ax.set_ylabel("validation NDCG@20")
    ax.set_title(textwrap.fill(title, 90), fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--users", type=int, default=30_000)
    p.add_argument("--items", type=int, default=70_000)
    p.add_argument("--edges", type=int, default=1_000_000)
    p.add_argument("--arms", nargs="+", default=["exact:8192:none", "fast:65536:sqrt"])
    p.add_argument("--lr", type=float, default=5e-3, help="lr at --reference-batch")
    p.add_argument("--reference-batch", type=int, default=8192)
    p.add_argument("--eval-every", type=int, default=2)
    p.add_argument("--patience", type=int, default=5)
    p.add_argument("--max-epochs", type=int, default=1000)
    p.add_argument("--max-seconds", type=float, default=1800.0)
    p.add_argument("--valid-users", type=int, default=3000,
                   help="users in the validation sample used for early stopping")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache", type=Path, default=Path("data/bench"))
    p.add_argument("--plot", type=Path, default=Path("docs/img/large_batch_quality.png"))
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    from recmind_dist.data.schema import load_dataset
    from recmind_dist.data.split import make_split
    from recmind_dist.data.synthetic import generate_synthetic
    from recmind_dist.specs import SplitSpec

    ds_dir = args.cache / f"synthetic-{args.users}-{args.items}-{args.edges}"
    if not (ds_dir / "meta.json").exists():
        generate_synthetic(ds_dir, args.users, args.items, args.edges, 16, 0)
    data = make_split(load_dataset(ds_dir), SplitSpec(threshold=None, kcore=0), args.seed)
    print(f"data: {data.summary()}", flush=True)
    rows = []
    for arm in args.arms:
        name, batch, rule = arm.split(":")
        rows.append(run_arm(data, name, int(batch), rule, args))
    ref = rows[0]
    print(f"\n{'arm':<8}{'batch':>8}{'lr':>9}{'steps/ep':>9}{'epochs':>7}{'best':>5}"
          f"{'train s':>9}{'Recall@20':>11}{'NDCG@20':>9}{'ΔR %':>7}{'ΔN %':>7}")
    for r in rows:
        dr = 100 * (r["test_recall_at_20"] / ref["test_recall_at_20"] - 1)
        dn = 100 * (r["test_ndcg_at_20"] / ref["test_ndcg_at_20"] - 1)
        print(f"{r['arm']:<8}{r['batch']:>8}{r['lr']:>9.2g}{r['steps_per_epoch']:>9}"
              f"{r['epochs_run']:>7}{r['best_epoch']:>5}{r['train_seconds']:>9.0f}"
              f"{r['test_recall_at_20']:>11.4f}{r['test_ndcg_at_20']:>9.4f}{dr:>7.2f}{dn:>7.2f}")
    plot(rows, args.plot, f"LightGCN, synthetic {data.n_users:,} users + {data.n_items:,} items, "
         f"{len(data.train):,} training edges; early stop on validation NDCG@20")
    print(f"plot: {args.plot}")
    if args.json:
        args.json.write_text(json.dumps(rows, default=float))


if __name__ == "__main__":
    main()
