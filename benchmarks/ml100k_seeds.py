"""Train job specs over several seeds; print test metrics mean ± std and the time to quality.

Runs use the CLI's own prepare/build/train functions (no MLflow, so timing stays clean). For
time to quality, the test Recall@20 is evaluated after every epoch outside the timed training
loop and the training wall time at which it first reaches ``--target`` is reported.

    python benchmarks/ml100k_seeds.py --config configs/ml100k_lightgcn.yaml \
        --config configs/ml100k_mf.yaml --seeds 2020 2021 2022 --target 0.3494
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from recmind_dist.eval.evaluator import SplitEvaluator
from recmind_dist.models.registry import build_model
from recmind_dist.pipeline import model_inputs, prepare
from recmind_dist.specs import load_spec
from recmind_dist.train.loop import seed_everything, train_model

KEYS = ("recall_at_20", "ndcg_at_20", "recall_at_40", "ndcg_at_40")


def run(config: Path, seed: int, target: float | None, overrides: list[str]) -> dict:
    spec = load_spec(config, [f"seed={seed}", *overrides])
    seed_everything(spec.seed)
    dataset, data = prepare(spec)
    model = build_model(spec.model, data, model_inputs(spec, dataset, data))
    ev = SplitEvaluator(data, spec.eval)
    reached: dict[str, float] = {}

    def on_epoch(epoch: int, row: dict, m) -> None:
        if target is not None and "t" not in reached:
            r20 = ev.evaluate(m, "test", buckets=False)["recall_at_20"]
            if r20 >= target:
                reached.update(t=row["train_seconds"], epoch=epoch)

    res = train_model(model, data, spec.train, ev, spec.seed, on_epoch, progress=False)
    buckets = {k: v for k, v in res.test.items() if "/" in k and k.endswith(("_at_20", "_at_40"))}
    return {**{k: res.test[k] for k in KEYS}, **buckets,
            "valid": res.best_valid[spec.train.stop_metric], "best_epoch": res.best_epoch,
            "train_s": res.train_seconds, "t_target": reached.get("t"),
            "epoch_target": reached.get("epoch")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--config", type=Path, action="append", required=True)
    ap.add_argument("--seeds", type=int, nargs="+", default=[2020, 2021, 2022])
    ap.add_argument("--target", type=float, default=None, help="test Recall@20 to time")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--jsonl", type=Path, default=None,
                    help="also append one JSON line per (config, seed) run to this file")
    args = ap.parse_args()
    for config in args.config:
        rows = []
        for s in args.seeds:
            rows.append(run(config, s, args.target, args.overrides))
            if args.jsonl is not None:
                with args.jsonl.open("a") as f:
                    f.write(json.dumps({"config": str(config), "seed": s,
                                        "overrides": args.overrides, **rows[-1]}) + "\n")
        print(f"\n{config} seeds {args.seeds}")
        print("| seed | " + " | ".join(KEYS) + " | valid stop metric | best epoch | train s | "
              "s to target |")
        print("|---" * (len(KEYS) + 5) + "|")
        for s, r in zip(args.seeds, rows, strict=True):
            tt = "-" if r["t_target"] is None else f"{r['t_target']:.1f} (ep {r['epoch_target']})"
            print(f"| {s} | " + " | ".join(f"{r[k]:.4f}" for k in KEYS)
                  + f" | {r['valid']:.4f} | {r['best_epoch']} | {r['train_s']:.1f} | {tt} |")
        mean_std = [
            f"{statistics.mean(r[k] for r in rows):.4f} ± {statistics.pstdev(r[k] for r in rows):.4f}"
            for k in KEYS
        ]
        valid = f"{statistics.mean(r['valid'] for r in rows):.4f}"
        print("| mean ± std | " + " | ".join(mean_std) + f" | {valid} | | | |", flush=True)


if __name__ == "__main__":
    main()
