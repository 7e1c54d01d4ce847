"""Frozen-tower embedding throughput: TextEncoder per model and compute dtype, same texts.

    python benchmarks/tower_throughput.py --dataset data/ml-100k \
        --model minilm --model smollm2-135m --dtypes float32 bfloat16 --threads 1

The ml-100k item + user texts (2,625, as the embedding job builds them) are embedded in this
process by :class:`recmind_dist.embed.encoder.TextEncoder` (``encode``, batch 64, max_length
128), once per model and dtype after a warm-up batch. Columns: texts/s (wall), texts per
CPU-second of this process (on a box shared with other jobs, wall time counts their load,
CPU time much less so), model load seconds, and the minimum cosine to the same model's fp32
vectors. ``--repeat N`` times every (model, dtype) N times in alternation and reports the
median. The CPU's model and bf16 flags are printed: ``dtype: auto`` decides from them.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recmind_dist.embed.encoder import TextEncoder, cpu_flags, cpu_has_bf16_matmul


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def ml100k_texts(dataset: Path) -> list[str]:
    from recmind_dist.embed.job import dataset_texts

    texts, _ = dataset_texts(dataset)
    return [t for kind in texts for t in texts[kind]["text"].tolist()]


def cosine_min(a: np.ndarray, b: np.ndarray) -> float:
    keep = (np.linalg.norm(a, axis=1) > 0) & (np.linalg.norm(b, axis=1) > 0)
    a, b = a[keep], b[keep]
    return float(((a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))).min())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", type=Path, default=Path("data/ml-100k"))
    ap.add_argument("--model", action="append", default=None,
                    help="tower: local dir, hub id, packaged name (smollm2-135m) or minilm "
                    "(the bundled MiniLM); repeatable")
    ap.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"],
                    choices=["float32", "bfloat16", "auto"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    flat = ml100k_texts(args.dataset)
    flags = cpu_flags()
    print(f"{len(flat)} ml-100k texts; torch threads {args.threads}; batch {args.batch_size}; "
          f"max_length {args.max_length}\nCPU: {cpu_model()}; amx_bf16: {'amx_bf16' in flags}; "
          f"avx512_bf16: {'avx512_bf16' in flags}; dtype auto -> bfloat16: "
          f"{cpu_has_bf16_matmul()}")
    print("\n| tower | compute dtype | texts/s | texts per CPU-s | load s | min cosine vs fp32 |")
    print("|---|---|---:|---:|---:|---:|")
    for name in args.model or ["minilm"]:
        model = None if name == "minilm" else name
        encoders, loads = {}, {}
        for dtype in args.dtypes:
            t0 = time.perf_counter()
            encoders[dtype] = TextEncoder(model, dtype=dtype, device="cpu",
                                          max_length=args.max_length)
            loads[dtype] = time.perf_counter() - t0
            encoders[dtype].encode(flat[:args.batch_size], batch_size=args.batch_size)  # warm-up
        walls, cpus, vecs = ({d: [] for d in args.dtypes} for _ in range(3))
        for _ in range(args.repeat):
            for dtype, enc in encoders.items():
                t0, c0 = time.perf_counter(), time.process_time()
                vecs[dtype] = enc.encode(flat, batch_size=args.batch_size)
                walls[dtype].append(time.perf_counter() - t0)
                cpus[dtype].append(time.process_time() - c0)
        ref = vecs.get("float32")
        for dtype, enc in encoders.items():
            cos = f"{cosine_min(vecs[dtype], ref):.5f}" if ref is not None else "-"
            print(f"| {name} ({enc.dim}-d, {enc.pooling} pooling) | {enc.dtype} | "
                  f"{len(flat) / statistics.median(walls[dtype]):.1f} | "
                  f"{len(flat) / statistics.median(cpus[dtype]):.1f} | {loads[dtype]:.1f} | "
                  f"{cos} |", flush=True)
        del encoders
    return 0


if __name__ == "__main__":
    sys.exit(main())
