"""Shared bits of the Ray job entrypoints (jobs/train.py, jobs/evaluate.py, jobs/pipeline.py)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout


def add_spec_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", required=True, type=Path,
                   help="job spec YAML (e.g. configs/ml100k_lightgcn.yaml)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a spec key, repeatable (e.g. --set train.workers=2 "
                   "--set train.epochs=20 --set tracking.uri=http://127.0.0.1:5001)")
    p.add_argument("--workers", type=int, default=None,
                   help="shortcut for --set train.workers=N (Ray Train workers; 1 = in-process)")
    p.add_argument("--json", action="store_true", help="print the result as one JSON line")
    p.add_argument("-v", "--verbose", action="store_true")


def load(args: argparse.Namespace):
    from recmind_dist.specs import load_spec

    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    overrides = list(args.overrides)
    if args.workers is not None:
        overrides.append(f"train.workers={args.workers}")
    return load_spec(args.config, overrides)


def emit(obj: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(obj, default=float, sort_keys=True))
        return
    for k, v in obj.items():
        if isinstance(v, dict):
            print(f"{k}:")
            for kk, vv in sorted(v.items()):
                print(f"  {kk}: {vv:.4f}" if isinstance(vv, float) else f"  {kk}: {vv}")
        else:
            print(f"{k}: {v}")


def main_guard(fn) -> int:
    from recmind_dist.errors import InputError

    try:
        return fn() or 0
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def headline(metrics: dict[str, float], ks: list[int]) -> dict[str, float]:
    keep = {}
    for split in ("valid", "test"):
        for m in ("recall", "ndcg"):
            for k in ks:
                key = f"{split}/{m}_at_{k}"
                if key in metrics:
                    keep[key] = float(metrics[key])
    return keep
