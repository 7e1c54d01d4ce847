"""Embedding throughput: Ray Data job vs one sentence-transformers process, same model/texts.

    python benchmarks/embed_throughput.py [--dataset data/ml-100k] [--n-synthetic 100000]

1. ml-100k item + user texts (2,625; synthetic look-alikes if the dataset is unavailable):
   plain ``SentenceTransformer(path).encode(texts, batch_size=64)`` vs
   :func:`run_embedding_job` on a local 2-CPU Ray (Ray already started, as under
   ``ray job submit``; Ray start-up is reported separately), side-by-side table + ratio, and
   the cosine between the two sets of vectors.
2. texts/s of the Ray job on ``--n-synthetic`` short synthetic item texts, and of
   sentence-transformers on the same texts (the ratio once start-up is amortised).
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recmind_dist.embed.encoder import default_model_path
from recmind_dist.embed.job import read_embeddings, run_embedding_job
from recmind_dist.embed.ray_runtime import ensure_ray, shutdown_ray
from recmind_dist.embed.spec import EmbedSpec

WORDS = ["night", "star", "river", "dark", "love", "war", "city", "last", "lost", "return", "king", "game", "story", "blue", "road", "secret", "heart", "fire", "winter", "house", "man", "woman", "dream", "ghost", "sky"]
GENRES = ["Action", "Adventure", "Animation", "Comedy", "Crime", "Drama", "Fantasy", "Horror",
          "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western"]


def synthetic_texts(n: int, seed: int = 0) -> pd.DataFrame:
    """``n`` MovieLens-like item texts ("Title Words (1987). Genres: A, B.")."""
    rng = np.random.default_rng(seed)
    n_words = rng.integers(1, 5, n)
    years = rng.integers(1930, 2024, n)
    texts = []
    for i in range(n):
        title = " ".join(WORDS[j] for j in rng.integers(0, len(WORDS), n_words[i])).title()
        gen = ", ".join(sorted({GENRES[j] for j in rng.integers(0, len(GENRES),
                                                                  rng.integers(1, 4))}))
        texts.append(f"{title} ({years[i]}). Genres: {gen}.")
    return pd.DataFrame({"id": np.arange(n, dtype=np.int64), "text": texts, "has_text": True})


def ml100k_texts(dataset: Path | None) -> tuple[dict[str, pd.DataFrame], str]:
    try:
        from recmind_dist.embed.job import dataset_texts

        if dataset is None or not dataset.exists():
            from recmind_dist.data.sources import fetch_dataset

            dataset = fetch_dataset("ml-100k", Path("data"))
        texts, source = dataset_texts(dataset)
        return texts, f"ml-100k ({dataset}; user history: {source})"
    except Exception as e:  # noqa: BLE001 - benchmark falls back to synthetic texts
        logging.getLogger("embed_throughput").warning("ml-100k unavailable (%s): using 2,625 synthetic texts", e)
        syn = synthetic_texts(2625, seed=1)
        return {"items": syn.iloc[:1682].reset_index(drop=True),
                "users": syn.iloc[1682:].reset_index(drop=True)}, "synthetic (ml-100k missing)"


def st_baseline(texts: list[str], batch_size: int) -> tuple[np.ndarray, float, float]:
    from sentence_transformers import SentenceTransformer

    t0 = time.perf_counter()
    model = SentenceTransformer(default_model_path(), device="cpu")
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    vecs = model.encode(texts, batch_size=batch_size, normalize_embeddings=True,
                        convert_to_numpy=True, show_progress_bar=False)
    return vecs, load_s, time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", type=Path, default=Path("data/ml-100k"))
    ap.add_argument("--n-synthetic", type=int, default=100_000)
    ap.add_argument("--replicas", type=int, default=2)
    ap.add_argument("--cpus-per-replica", type=float, default=0.5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--block-rows", type=int, default=None)
    ap.add_argument("--shard-rows", type=int, default=2048)
    ap.add_argument("--num-cpus", type=int, default=2, help="local Ray CPUs")
    ap.add_argument("--st-threads", type=int, default=None,
                    help="torch threads for the sentence-transformers baseline (default: "
                    "torch's default, all cores)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    import torch

    if args.st_threads:
        torch.set_num_threads(args.st_threads)
    texts, source = ml100k_texts(args.dataset)
    order = [(k, i) for k in ("items", "users") for i in texts[k]["id"].tolist()]
    all_texts = [t for k in ("items", "users") for t in texts[k]["text"].tolist()]
    print(f"texts: {len(all_texts)} from {source}; torch threads (ST) = "
          f"{torch.get_num_threads()}")

    st_vecs, st_load, st_enc = st_baseline(all_texts, args.batch_size)

    spec = EmbedSpec(num_replicas=args.replicas, cpus_per_replica=args.cpus_per_replica,
                     torch_threads=args.threads, batch_size=args.batch_size,
                     block_rows=args.block_rows, shard_rows=args.shard_rows)
    t0 = time.perf_counter()
    ensure_ray(num_cpus=args.num_cpus)
    ray_start = time.perf_counter() - t0
    work = Path(tempfile.mkdtemp(prefix="embed_bench_"))
    try:
        res = run_embedding_job(texts, spec, work / "ml", progress=False)
        got = {}
        for kind in ("items", "users"):
            ids, vecs, _ = read_embeddings(res.paths[kind])
            got.update({(kind, int(i)): v for i, v in zip(ids, vecs, strict=True)})
        ray_vecs = np.stack([got[key] for key in order])
        cos = (ray_vecs * st_vecs).sum(1) / (np.linalg.norm(ray_vecs, axis=1)
                                           * np.linalg.norm(st_vecs, axis=1))
        n = len(all_texts)
        rows = [
            ("sentence-transformers, 1 process (encode only)", n / st_enc, st_enc),
            ("sentence-transformers, 1 process (load + encode)", n / (st_load + st_enc),
             st_load + st_enc),
            ((f"Ray Data job, {args.replicas} actors x {args.threads} thread "
             f"(whole job: actors, model load, Parquet)"), res.texts_per_s, res.wall_s),
        ]
        print(f"\n{'method':<78} {'texts/s':>9} {'wall s':>8}")
        for name, tps, wall in rows:
            print(f"{name:<78} {tps:9.1f} {wall:8.2f}")
        print(f"ratio Ray job / ST encode-only      = {res.texts_per_s / (n / st_enc):.2f}x")
        print(f"ratio Ray job / ST load+encode      = "
              f"{res.texts_per_s / (n / (st_load + st_enc)):.2f}x")
        print(f"(Ray start-up, not in the job time: {ray_start:.1f} s; ST model load "
              f"{st_load:.1f} s; job tokens/s {res.tokens_per_s:.0f})")
        print(f"cosine(Ray job, ST) over {n} texts: min {cos.min():.7f}, mean {cos.mean():.7f}")

        if args.n_synthetic:
            syn = synthetic_texts(args.n_synthetic)
            big = run_embedding_job({"items": syn}, spec, work / "syn", progress=True)
            print(f"\nsynthetic {args.n_synthetic} item texts: {big.texts_per_s:.1f} texts/s, "
                  f"{big.tokens_per_s:.0f} tokens/s, wall {big.wall_s:.1f} s, "
                  f"{big.shards_total} shards")
            _, syn_load, syn_enc = st_baseline(syn["text"].tolist(), args.batch_size)
            st_rate = args.n_synthetic / syn_enc
            print(f"sentence-transformers on the same {args.n_synthetic} texts: {st_rate:.1f} "
                  f"texts/s (encode only, {syn_enc:.1f} s); ratio Ray job / ST = "
                  f"{big.texts_per_s / st_rate:.2f}x")
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutdown_ray()
    return 0


if __name__ == "__main__":
    sys.exit(main())
