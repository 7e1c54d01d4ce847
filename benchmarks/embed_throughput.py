"""Embedding throughput: Ray Data job vs one sentence-transformers process, same model/texts.

    python benchmarks/embed_throughput.py [--dataset data/ml-100k] [--n-synthetic 100000]
    python benchmarks/embed_throughput.py --model minilm --model smollm2-135m --layouts \
        --n-synthetic 0 --dtypes float32 bfloat16 --threads 1

``--model`` (repeatable; default the bundled MiniLM) adds, per model, one row per compute dtype
for :class:`TextEncoder` itself in this process (``--threads`` torch threads): model load apart,
``encode`` timed, min cosine to the same model's fp32 vectors. The sentence-transformers rows
(MiniLM's baseline) are measured for MiniLM only; the Ray rows use the ``--model``.

For each text set -- ml-100k item + user texts (2,625; synthetic look-alikes if the dataset is
unavailable), then ``--n-synthetic`` short synthetic item texts -- one table row each for:

* plain ``SentenceTransformer(path).encode(texts, batch_size=64)`` in fp32 (the baseline) and
  under bf16 autocast (what the same trick gives the baseline);
* :func:`run_embedding_job` on a local Ray (already started, as under ``ray job submit``; its
  start-up is printed apart) for every actor layout (``--layouts auto 1x2 2x1``) and compute dtype
  (``--dtypes float32 auto``): whole-job wall time incl. actor start, model load and Parquet.

Columns: texts/s, texts per CPU-second of this process (TextEncoder rows; on a loaded box
wall time counts other jobs, CPU time much less so), ratio to ST encode-only and to ST
load+encode, min cosine to fp32 (ST fp32 for MiniLM's ST and Ray rows, the model's own fp32
TextEncoder vectors for the TextEncoder rows).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recmind_dist.embed.encoder import (
    TextEncoder,
    cpu_flags,
    cpu_has_bf16_matmul,
    default_model_path,
)
from recmind_dist.embed.job import read_embeddings, run_embedding_job
from recmind_dist.embed.ray_runtime import ensure_ray, shutdown_ray
from recmind_dist.specs import EmbedSpec

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


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def st_encode(model, texts: list[str], batch_size: int, bf16: bool) -> tuple[np.ndarray, float]:
    import torch

    t0 = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        vecs = model.encode(texts, batch_size=batch_size, normalize_embeddings=True,
                            convert_to_numpy=True, show_progress_bar=False)
    return np.asarray(vecs, np.float32), time.perf_counter() - t0


def cosine_min(a: np.ndarray, b: np.ndarray) -> float:
    return float(((a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
                                     + 1e-12)).min())


def parse_layout(text: str) -> tuple[int, int]:
    """``"2x1"`` -> (2 replicas, 1 thread each)."""
    r, t = text.lower().split("x")
    return int(r), int(t)


def encoder_rows(name: str, flat: list[str], model: str | None, args: argparse.Namespace
                 ) -> list[dict]:
    """:class:`TextEncoder` in this process, one row per dtype (fp32 first: the reference)."""
    rows: list[dict] = []
    ref = None
    for dtype in ["float32", *(d for d in args.dtypes if d != "float32")]:
        t0 = time.perf_counter()
        enc = TextEncoder(model, dtype=dtype, device="cpu", max_length=args.max_length)
        load = time.perf_counter() - t0
        enc.encode(flat[:args.batch_size], batch_size=args.batch_size)  # warm-up
        t0, c0 = time.perf_counter(), time.process_time()
        vecs = enc.encode(flat, batch_size=args.batch_size)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        ref = vecs if ref is None else ref
        rows.append({"set": name, "method": f"TextEncoder {model or 'MiniLM'} ({enc.dim}-d, "
                     f"{enc.pooling} pooling), 1 process", "dtype": enc.dtype, "wall": wall,
                     "load": load, "tps": len(flat) / wall, "cpu": cpu,
                     "cos": cosine_min(vecs, ref)})
        del enc
    return rows


def bench_set(name: str, texts: dict[str, pd.DataFrame], args: argparse.Namespace,
              work: Path) -> list[dict]:
    """One text set: ST (fp32, bf16; MiniLM only), TextEncoder per --model and dtype, then
    every Ray layout x dtype; rows for the table."""
    from sentence_transformers import SentenceTransformer

    order = [(k, i) for k in texts for i in texts[k]["id"].tolist()]
    flat = [t for k in texts for t in texts[k]["text"].tolist()]
    n = len(flat)
    if args.model != [None]:  # other towers: the encoder's own rows (+ Ray rows), no ST
        rows = [r for m in args.model for r in encoder_rows(name, flat, m, args)]
        rows += ray_rows(name, texts, order, args, work, args.model[-1], None)
        for r in rows:
            r["n"], r["vs_st"], r["vs_st_load"] = n, r["tps"] / rows[0]["tps"], float("nan")
        return rows
    t0 = time.perf_counter()
    st = SentenceTransformer(default_model_path(), device="cpu")
    st_load = time.perf_counter() - t0
    st.encode(flat[:64], batch_size=args.batch_size)  # warm-up (lazy inits, thread pools)
    ref, st_fp32 = st_encode(st, flat, args.batch_size, bf16=False)
    rows = [{"set": name, "method": "sentence-transformers fp32, 1 process",
             "dtype": "float32", "wall": st_fp32, "load": st_load, "tps": n / st_fp32,
             "cos": 1.0}]
    if "auto" in args.dtypes or "bfloat16" in args.dtypes:
        vb, st_bf = st_encode(st, flat, args.batch_size, bf16=True)
        rows.append({"set": name, "method": "sentence-transformers bf16 autocast, 1 process",
                     "dtype": "bfloat16", "wall": st_bf, "load": st_load, "tps": n / st_bf,
                     "cos": cosine_min(vb, ref)})
    del st
    rows += encoder_rows(name, flat, None, args)
    rows += ray_rows(name, texts, order, args, work, None, ref)
    for r in rows:
        r["n"] = n
        r["vs_st"] = r["tps"] / rows[0]["tps"]
        # over ST's load + encode; an ST row counts its own load too
        r["vs_st_load"] = (rows[0]["wall"] + st_load) / (r["wall"] + r["load"])
    return rows


def ray_rows(name: str, texts: dict[str, pd.DataFrame], order: list, args: argparse.Namespace,
             work: Path, model: str | None, ref: np.ndarray | None) -> list[dict]:
    """The Ray Data job for every layout x dtype (cosine vs ``ref``; NaN without one)."""
    rows: list[dict] = []
    for layout in args.layouts:
        for dtype in args.dtypes:
            if layout == "auto":  # the job's own choice (EmbedSpec defaults)
                spec = EmbedSpec(model=model, batch_size=args.batch_size, dtype=dtype,
                                 block_rows=args.block_rows, shard_rows=args.shard_rows,
                                 max_length=args.max_length)
            else:
                reps, threads = parse_layout(layout)
                # half a CPU per thread: Ray Data read tasks need a free CPU beside the actors
                spec = EmbedSpec(model=model, max_length=args.max_length, num_replicas=reps,
                                 cpus_per_replica=args.num_cpus / (2 * reps),
                                 torch_threads=threads, batch_size=args.batch_size, dtype=dtype,
                                 block_rows=args.block_rows, shard_rows=args.shard_rows)
            out = work / f"{name}-{layout}-{dtype}"
            res = run_embedding_job(texts, spec, out, progress=False)
            got = {}
            for kind in texts:
                ids, vecs, _ = read_embeddings(res.paths[kind])
                got.update({(kind, int(i)): v for i, v in zip(ids, vecs, strict=True)})
            vecs = np.stack([got[key] for key in order])
            manifest = json.loads((out / "embeddings" / "manifest.json").read_text())
            lay = manifest["last_run"]["layout"]
            rows.append({"set": name,
                         "method": f"Ray Data job ({layout}: {lay['replicas']} actor(s) x "
                                   f"{lay['threads']} thread(s)), whole job",
                         "dtype": manifest["compute_dtype"], "wall": res.wall_s, "load": 0.0,
                         "tps": res.texts_per_s,
                         "cos": float("nan") if ref is None else cosine_min(vecs, ref)})
            shutil.rmtree(out, ignore_errors=True)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", type=Path, default=Path("data/ml-100k"))
    ap.add_argument("--n-synthetic", type=int, default=100_000,
                    help="second text set: this many synthetic item texts (0 = skip)")
    ap.add_argument("--model", action="append", default=None,
                    help="tower(s) to time with TextEncoder (local dir, hub id, a packaged "
                    "name such as smollm2-135m, or minilm = the bundled MiniLM); default: "
                    "MiniLM with the sentence-transformers rows")
    ap.add_argument("--threads", type=int, default=None, help="torch threads in this process")
    ap.add_argument("--max-length", type=int, default=128, help="token budget per text")
    ap.add_argument("--layouts", nargs="*", default=["auto"],
                    help="Ray actor layouts: auto (the job's choice) or REPLICASxTHREADS "
                    "(CPUs split evenly), e.g. --layouts auto 1x2 2x1")
    ap.add_argument("--dtypes", nargs="+", default=["float32", "auto"],
                    choices=["float32", "auto", "bfloat16"])
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--block-rows", type=int, default=None)
    ap.add_argument("--shard-rows", type=int, default=2048)
    ap.add_argument("--num-cpus", type=int, default=2, help="local Ray CPUs")
    args = ap.parse_args()
    args.model = [None if m in (None, "minilm") else m for m in (args.model or [None])]
    logging.basicConfig(level=logging.WARNING)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    texts, source = ml100k_texts(args.dataset)
    print(f"ml-100k texts: {sum(len(t) for t in texts.values())} from {source}; "
          f"torch threads (this process) = {torch.get_num_threads()}; batch size "
          f"{args.batch_size}; max_length {args.max_length}")
    flags = cpu_flags()
    print(f"CPU: {cpu_model()}; amx_bf16: {'amx_bf16' in flags}; avx512_bf16: "
          f"{'avx512_bf16' in flags}; dtype auto -> bfloat16: {cpu_has_bf16_matmul()}")
    t0 = time.perf_counter()
    if args.layouts:
        ensure_ray(num_cpus=args.num_cpus)
    print(f"(Ray start-up {time.perf_counter() - t0:.1f} s, outside every job time: under "
          "`ray job submit` the cluster is already up)")
    work = Path(tempfile.mkdtemp(prefix="embed_bench_"))
    rows = []
    try:
        rows += bench_set("ml-100k", texts, args, work)
        if args.n_synthetic:
            rows += bench_set(f"synthetic {args.n_synthetic // 1000}k",
                              {"items": synthetic_texts(args.n_synthetic)}, args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if args.layouts:
            shutdown_ray()
    print("\n| texts | method | compute dtype | texts/s | wall s | texts per CPU-s | x ST encode "
          "| x ST load+encode | min cosine vs fp32 |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        per_cpu = f"{r['n'] / r['cpu']:.1f}" if r.get("cpu") else "-"
        print(f"| {r['set']} ({r['n']}) | {r['method']} | {r['dtype']} | {r['tps']:.1f} | "
              f"{r['wall']:.2f} | {per_cpu} | {r['vs_st']:.2f} | {r['vs_st_load']:.2f} | "
              f"{r['cos']:.7f} |")
    print("\nx ST encode = texts/s over sentence-transformers fp32 encode() alone (model already "
          "loaded); x ST load+encode = over ST's model load + encode (what a script that embeds "
          "once pays). Ray rows are whole jobs: actor start, model load, Parquet in/out.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
