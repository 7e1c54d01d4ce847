"""GPU check: the CUDA paths of recmind-dist, checked against fp32/CPU references and timed.

One script for a GPU machine that may have no Ray, MLflow or DeepSpeed (and no network):
every section is independent, prints its own table and lands in ``--out`` as JSON, and a
failing section is recorded with its traceback instead of stopping the others.

1. ``encode``: :class:`TextEncoder` on CUDA in float32 / bfloat16 / float16 at several batch
   sizes, on ml-100k's 2,625 item + user texts and on ``--n-synthetic`` synthetic item texts
   (best of ``--repeats`` passes);
   texts/s, tokens/s and the minimum cosine to the CUDA fp32 vectors and (ml-100k) to a CPU
   fp32 encode. Side by side: ``SentenceTransformer.encode`` on the same GPU, fp32 and fp16.
   Then the embedding job's in-process backend (``run_embedding_job(backend="local")``: the
   code a GPU Ray actor runs per block, plus Parquet) with ``dtype: auto``.
2. ``epoch``: ``benchmarks/recmind_epoch.py --device cuda`` (LightGCN vs RecMind epoch time).
3. ``nccl``: a one-rank NCCL process group: the differentiable all-gather of the contrastive
   loss and the metric all-reduce on CUDA tensors, and a DDP-wrapped RecMind step whose
   gradients must equal the plain step's.
4. ``train``: LightGCN and RecMind trained on CUDA by the trainer's own loop (time-capped),
   test metrics next to the CPU numbers in docs/benchmarks.md.
5. ``lora``: one warm-up and one joint epoch of end-to-end LoRA RecMind on CUDA.
6. ``models``: MF, GAT + LLM, LLMRec and RecMind (cold-item split) trained on CUDA
   (time-capped), to catch tensors left on the CPU.

    python benchmarks/gpu_check.py --model /path/to/minilm --cache-dir data --out gpu.json
    python benchmarks/gpu_check.py --device cpu --n-synthetic 2000 --sections encode   # dry run
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

CONFIG = str(ROOT / "configs" / "ml100k_recmind.yaml")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _min_cos(a: np.ndarray, b: np.ndarray) -> float:
    na = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    nb = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    keep = (np.linalg.norm(a, axis=1) > 0) & (np.linalg.norm(b, axis=1) > 0)
    return float((na[keep] * nb[keep]).sum(1).min())


def _overrides(args: argparse.Namespace) -> list[str]:
    gpus = 1 if args.device.startswith("cuda") else 0
    return [f"data.cache_dir={args.cache_dir}", f"embed.model={args.model}",
            f"embed.gpus_per_replica={gpus}"]


def _texts(args: argparse.Namespace) -> dict[str, list[str]]:
    from embed_throughput import synthetic_texts

    from recmind_dist.embed.job import dataset_texts
    from recmind_dist.pipeline import prepare
    from recmind_dist.specs import load_spec

    spec = load_spec(CONFIG, _overrides(args))
    dataset, _ = prepare(spec)
    tables, _ = dataset_texts(dataset.path, spec.text, split_spec=spec.split, seed=spec.seed)
    ml = [t for k in ("items", "users") for t in tables[k]["text"].fillna("").tolist()]
    sets = {"ml-100k": ml}
    if args.n_synthetic > 0:
        sets[f"synthetic {args.n_synthetic}"] = synthetic_texts(args.n_synthetic)["text"].tolist()
    return sets


def section_encode(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    from recmind_dist.embed.encoder import TextEncoder

    sets = _texts(args)
    rows: list[dict[str, Any]] = []
    ref_cpu = None
    if args.cpu_reference:
        cpu = TextEncoder(args.model, dtype="float32", device="cpu")
        ref_cpu = cpu.encode(sets["ml-100k"], batch_size=64)
    for name, texts in sets.items():
        ref = None
        for dtype in ("float32", "bfloat16", "float16"):
            if device.type == "cpu" and dtype == "float16":
                continue
            enc = TextEncoder(args.model, dtype=dtype, device=str(device))
            enc.encode(texts[:256], batch_size=64)  # warm-up (CUDA context, kernels)
            for bs in args.batch_sizes:
                dt = float("inf")
                for _ in range(args.repeats):  # best of: first-seen shapes cost on a GPU
                    enc.n_tokens = 0
                    _sync(device)
                    t0 = time.perf_counter()
                    vec = enc.encode(texts, batch_size=bs)
                    _sync(device)
                    dt = min(dt, time.perf_counter() - t0)
                if ref is None:
                    ref = vec
                row = {"texts": name, "method": "TextEncoder", "dtype": dtype, "batch": bs,
                       "texts_per_s": len(texts) / dt, "tokens_per_s": enc.n_tokens / dt,
                       "min_cos_vs_fp32": _min_cos(vec, ref)}
                if ref_cpu is not None and name == "ml-100k":
                    row["min_cos_vs_cpu_fp32"] = _min_cos(vec, ref_cpu)
                rows.append(row)
            del enc
        rows.extend(_st_rows(args, device, name, texts, ref))
    rows.extend(_job_rows(args, device, sets))
    print(f"\n{'texts':<18}{'method':<26}{'dtype':<10}{'batch':>6}{'texts/s':>11}"
          f"{'tokens/s':>12}{'cos fp32':>10}{'cos cpu':>10}")
    for r in rows:
        print(f"{r['texts']:<18}{r['method']:<26}{r['dtype']:<10}{r.get('batch', ''):>6}"
              f"{r['texts_per_s']:>11.0f}{r.get('tokens_per_s', float('nan')):>12.0f}"
              f"{r.get('min_cos_vs_fp32', float('nan')):>10.6f}"
              f"{r.get('min_cos_vs_cpu_fp32', float('nan')):>10.6f}")
    return {"rows": rows}


def _st_rows(args: argparse.Namespace, device: torch.device, name: str, texts: list[str],
             ref: np.ndarray) -> list[dict[str, Any]]:
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        return []
    rows = []
    for dtype in ("float32", "float16"):
        if device.type == "cpu" and dtype == "float16":
            continue
        st = SentenceTransformer(args.model, device=str(device),
                                 model_kwargs={"dtype": getattr(torch, dtype)})
        st.encode(texts[:256], batch_size=64)
        bs = max(args.batch_sizes)
        dt = float("inf")
        for _ in range(args.repeats):
            _sync(device)
            t0 = time.perf_counter()
            vec = st.encode(texts, batch_size=bs, normalize_embeddings=True,
                            convert_to_numpy=True, show_progress_bar=False)
            _sync(device)
            dt = min(dt, time.perf_counter() - t0)
        rows.append({"texts": name, "method": "sentence-transformers", "dtype": dtype,
                     "batch": bs, "texts_per_s": len(texts) / dt,
                     "min_cos_vs_fp32": _min_cos(vec, ref)})
        del st
    return rows


def _job_rows(args: argparse.Namespace, device: torch.device,
              sets: dict[str, list[str]]) -> list[dict[str, Any]]:
    import pandas as pd

    from recmind_dist.embed.encoder import resolve_dtype
    from recmind_dist.embed.job import run_embedding_job
    from recmind_dist.specs import EmbedSpec

    rows = []
    for name, texts in sets.items():
        df = pd.DataFrame({"id": np.arange(len(texts), dtype=np.int64), "text": texts,
                           "has_text": True})
        spec = EmbedSpec(model=args.model, dtype="auto", batch_size=max(args.batch_sizes),
                         gpus_per_replica=1 if device.type == "cuda" else 0)
        with tempfile.TemporaryDirectory() as d:
            t0 = time.perf_counter()
            run_embedding_job({"items": df}, spec, d, progress=False, backend="local")
            dt = time.perf_counter() - t0
        rows.append({"texts": name, "method": "embed job (local backend)",
                     "dtype": resolve_dtype("auto", device),
                     "batch": spec.batch_size, "texts_per_s": len(texts) / dt,
                     "note": "whole job: model load + encode + Parquet"})
    return rows


def section_epoch(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    from recmind_epoch import main as epoch_main

    return epoch_main(["--config", CONFIG, "--device", str(device), "--epochs",
                       str(args.epochs), "--threads", str(args.threads)]
                      + [a for o in _overrides(args) for a in ("--set", o)])


def section_nccl(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from recmind_dist.models.inputs import ModelInputs
    from recmind_dist.models.registry import build_model
    from recmind_dist.pipeline import model_inputs, prepare
    from recmind_dist.sampling import NegativeSampler
    from recmind_dist.specs import load_spec
    from recmind_dist.train.collectives import all_gather_autograd, all_reduce_sum
    from recmind_dist.train.distributed import LossModule
    from recmind_dist.train.loop import iterate_batches, seed_everything

    backend = "nccl" if device.type == "cuda" else "gloo"
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29517")
    dist.init_process_group(backend, rank=0, world_size=1, device_id=device
                            if device.type == "cuda" else None)
    try:
        out: dict[str, Any] = {"backend": dist.get_backend()}
        x = torch.randn(5, 3, device=device, requires_grad=True)
        g = all_gather_autograd(x)
        g.square().sum().backward()
        out["all_gather_identity"] = bool(torch.equal(g.detach(), x.detach()))
        out["all_gather_grad_ok"] = bool(torch.allclose(x.grad, 2 * x.detach()))
        out["all_reduce_sum"] = all_reduce_sum([1.5, 2.0], device)
        # one RecMind step, plain vs DDP-wrapped (world 1: the gradients must be equal)
        spec = load_spec(CONFIG, _overrides(args))
        seed_everything(spec.seed)
        dataset, data = prepare(spec)
        feats = model_inputs(spec, dataset, data).features
        sampler = NegativeSampler(data.n_items, data.train)
        batch = next(iter(iterate_batches(data, sampler, 2048, np.random.default_rng(0),
                                          device)))
        grads = []
        for wrap in (False, True):
            seed_everything(spec.seed)
            model = build_model(spec.model, data, ModelInputs(features=feats), device)
            epoch = model.spec.warmup_epochs + 1
            torch.manual_seed(0)
            if wrap:
                net = DistributedDataParallel(LossModule(model), find_unused_parameters=True,
                                              device_ids=[device.index or 0]
                                              if device.type == "cuda" else None)
                loss = net(batch, epoch)[0]
            else:
                loss = model.training_loss(batch, epoch)[0]
            loss.backward()
            grads.append({n: p.grad.detach().clone() for n, p in model.named_parameters()
                          if p.grad is not None})
        diffs = [float((grads[0][n] - grads[1][n]).abs().max()) for n in grads[0]]
        out["ddp_max_grad_diff"] = max(diffs)
        out["ddp_params_with_grad"] = len(diffs)
        print(f"\nnccl: {out}")
        return out
    finally:
        dist.destroy_process_group()


def _train_one(args: argparse.Namespace, device: torch.device, config: str,
               extra: list[str]) -> dict[str, Any]:
    """Train ``config`` on ``device`` with the trainer's own loop (time-capped), test metrics."""
    from recmind_dist.eval.evaluator import SplitEvaluator
    from recmind_dist.models.registry import build_model
    from recmind_dist.pipeline import model_inputs, prepare
    from recmind_dist.specs import load_spec
    from recmind_dist.train.loop import seed_everything, train_model

    if config.startswith("ml100k_llmrec"):  # offline LM = the given encoder; a fresh cache
        extra = [*extra, f"model.lm.model={args.model}",
                 f"model.augment_cache={Path(args.cache_dir) / 'augment_gpu_check'}"]
    spec = load_spec(str(ROOT / "configs" / config), _overrides(args) + extra + [
        f"train.device={device}", f"train.max_seconds={args.train_seconds}"])
    seed_everything(spec.seed)
    t0 = time.perf_counter()
    dataset, data = prepare(spec)
    if spec.model.name == "llmrec":  # base LightGCN, LM augmentation, artefact
        from recmind_dist.pipeline.augmentation import ensure_augmentation

        ensure_augmentation(spec, dataset, data)
    model = build_model(spec.model, data, model_inputs(spec, dataset, data), device)
    setup_s = time.perf_counter() - t0
    res = train_model(model, data, spec.train, SplitEvaluator(data, spec.eval), spec.seed,
                      progress=False)
    return {"setup_s": setup_s, "wall_s": time.perf_counter() - t0, "epochs": res.epochs_run,
            "best_epoch": res.best_epoch, "stop": res.stop_reason,
            "train_s_per_epoch": res.train_seconds / max(res.epochs_run, 1),
            **{k: v for k, v in res.test.items() if k.endswith(("recall_at_20", "ndcg_at_20"))
               and k.count("/") <= 1}}


def section_train(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, config, extra in (
            ("lightgcn", "ml100k_recmind.yaml",
             ["model={name: lightgcn, dim: 64, layers: 3, reg: 1.0e-4}"]),
            ("recmind", "ml100k_recmind.yaml", [])):
        out[name] = _train_one(args, device, config, extra)
        print(f"\ntrain {name}: {out[name]}", flush=True)
    return out


MODEL_CONFIGS = {"mf": "ml100k_mf.yaml", "gat_llm": "ml100k_gat_llm.yaml",
                 "llmrec": "ml100k_llmrec.yaml", "recmind_cold": "ml100k_recmind_cold.yaml"}


def section_models(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """The other models' CUDA paths: MF, GAT + LLM (PyG GATConv), LLMRec (augmentation by the
    offline LM backend, pruning, MAE), RecMind on the cold-item split."""
    out: dict[str, Any] = {}
    for name, config in MODEL_CONFIGS.items():
        if args.models and name not in args.models:
            continue
        try:
            out[name] = _train_one(args, device, config, [])
        except Exception as e:  # noqa: BLE001 - report each model's failure, go on
            out[name] = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}
            traceback.print_exc()
        print(f"\nmodels {name}: {out[name].get('error') or out[name]}", flush=True)
    return out


def section_lora(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    from recmind_epoch import main as epoch_main

    return epoch_main(["--config", CONFIG, "--device", str(device), "--epochs", "1",
                       "--set", "model.encoder=lora"]
                      + [a for o in _overrides(args) for a in ("--set", o)])


SECTIONS: dict[str, Callable[[argparse.Namespace, torch.device], dict[str, Any]]] = {
    "encode": section_encode, "epoch": section_epoch, "nccl": section_nccl,
    "train": section_train, "lora": section_lora, "models": section_models}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="local model directory (MiniLM)")
    ap.add_argument("--cache-dir", default="data", help="data.cache_dir holding ml-100k/")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=list(SECTIONS))
    ap.add_argument("--n-synthetic", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=1, help="encode timings: best of N")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 512])
    ap.add_argument("--no-cpu-reference", dest="cpu_reference", action="store_false")
    ap.add_argument("--epochs", type=int, default=5, help="timed epochs (epoch section)")
    ap.add_argument("--threads", type=int, default=4, help="torch CPU threads")
    ap.add_argument("--train-seconds", type=float, default=40.0,
                    help="time cap per model in the train section")
    ap.add_argument("--models", nargs="+", choices=list(MODEL_CONFIGS), default=None,
                    help="models section: only these (default: all)")
    ap.add_argument("--out", default=None, help="write all results here (JSON)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and device.index is None:  # NCCL wants an indexed device
        device = torch.device("cuda", torch.cuda.current_device())
    results: dict[str, Any] = {"torch": torch.__version__, "device": str(device)}
    if device.type == "cuda":
        results["gpu"] = torch.cuda.get_device_name(device)
        results["bf16_supported"] = torch.cuda.is_bf16_supported()
    print(results, flush=True)
    for name in args.sections:
        t0 = time.perf_counter()
        try:
            results[name] = SECTIONS[name](args, device)
        except Exception as e:  # noqa: BLE001 - one broken path must not hide the others
            traceback.print_exc()
            results[name] = {"error": f"{type(e).__name__}: {e}",
                             "traceback": traceback.format_exc()}
        results[name + "_wall_s"] = time.perf_counter() - t0
        print(f"[{name}] {results[name + '_wall_s']:.1f} s", flush=True)
        if args.out:
            Path(args.out).write_text(json.dumps(results, indent=2, default=str))
    return 0 if not any(isinstance(v, dict) and "error" in v for v in results.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
