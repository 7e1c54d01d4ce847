"""Benchmark: synthetic dataset generation time and peak memory.

Each configuration runs in a fresh subprocess so that its peak RSS (``ru_maxrss``) is its own.

    python benchmarks/synthetic_generation.py                 # 1M nodes / 10M edges (+ small)
    python benchmarks/synthetic_generation.py --sizes small   # quick check
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SIZES: dict[str, tuple[int, int, int]] = {
    "small": (10_000, 20_000, 200_000),
    "medium": (100_000, 200_000, 2_000_000),
    "1M-nodes/10M-edges": (300_000, 700_000, 10_000_000),
}


def _child(out_dir: str, n_users: int, n_items: int, n_interactions: int) -> None:
    """Run one generation (and one validated load) and print a JSON line with the results."""
    from recmind_dist.data import generate_synthetic, load_dataset

    start = time.perf_counter()
    path = generate_synthetic(out_dir, n_users, n_items, n_interactions, seed=0)
    generate_s = time.perf_counter() - start
    peak_generate = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    dataset = load_dataset(path)
    load_s = time.perf_counter() - start
    size = sum(f.stat().st_size for f in Path(path).iterdir())
    print(
        json.dumps(
            {
                "generate_s": generate_s,
                "load_s": load_s,
                "peak_rss_generate_mib": peak_generate / 1024,
                "peak_rss_total_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "n_interactions": len(dataset.interactions),
                "disk_mib": size / 2**20,
            }
        )
    )


def _run(name: str, sizes: tuple[int, int, int], work: Path) -> dict[str, float | str]:
    out_dir = work / name.replace("/", "_")
    cmd = [sys.executable, __file__, "--child", str(out_dir), *map(str, sizes)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    shutil.rmtree(out_dir, ignore_errors=True)
    return {"config": name, "users": sizes[0], "items": sizes[1], **result}


def _print_table(rows: list[dict[str, float | str]]) -> None:
    header = (
        f"{'config':<20} {'users':>9} {'items':>9} {'edges':>11} {'gen s':>7} "
        f"{'load s':>7} {'peak RSS MiB':>13} {'disk MiB':>9}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['config']:<20} {r['users']:>9,} {r['items']:>9,} {r['n_interactions']:>11,} "
            f"{r['generate_s']:>7.1f} {r['load_s']:>7.1f} {r['peak_rss_generate_mib']:>13,.0f} "
            f"{r['disk_mib']:>9.1f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", nargs="+", default=["small", "1M-nodes/10M-edges"])
    parser.add_argument("--child", nargs=4, metavar=("OUT", "USERS", "ITEMS", "EDGES"))
    args = parser.parse_args()
    if args.child:
        out, *counts = args.child
        _child(out, *map(int, counts))
        return
    with tempfile.TemporaryDirectory(prefix="recmind-synth-bench-") as tmp:
        rows = [_run(name, SIZES[name], Path(tmp)) for name in args.sizes]
    _print_table(rows)


if __name__ == "__main__":
    main()
