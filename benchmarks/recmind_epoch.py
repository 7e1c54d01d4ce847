"""Benchmark: training-epoch time of RecMind vs LightGCN on the same split, side by side.

Both models train on the same split (same protocol as ``configs/ml100k_recmind.yaml``) with
the trainer's own batching (:func:`recmind_dist.train.loop.iterate_batches`) and Adam; epochs
alternate LightGCN, RecMind, LightGCN, ... so a noisy shared machine slows both equally.
RecMind uses precomputed (cached) text vectors; the embedding job is not timed. Reported:
median seconds per epoch (forward + backward + step over every training edge), per phase for
RecMind (alignment-only warm-up and joint), and the ratio of the medians.

    python benchmarks/recmind_epoch.py                      # ml-100k, 5 epochs each, 1 thread
    python benchmarks/recmind_epoch.py --epochs 10 --threads 2 --json out.json
    python benchmarks/recmind_epoch.py --set model.text_pca=64 --set model.adapter_hidden=0
    python benchmarks/recmind_epoch.py --set model.encoder=lora --epochs 1   # end-to-end LoRA
    python benchmarks/recmind_epoch.py --device cuda --epochs 10            # on a GPU
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch

from recmind_dist.models.base import Recommender
from recmind_dist.models.inputs import ModelInputs
from recmind_dist.models.registry import build_model
from recmind_dist.pipeline import model_inputs, prepare
from recmind_dist.sampling import NegativeSampler
from recmind_dist.specs import load_spec
from recmind_dist.train.loop import (
    iterate_batches,
    make_optimizer,
    seed_everything,
    steps_per_epoch,
)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _epoch(model: Recommender, opt: torch.optim.Optimizer, data, sampler, rng, epoch: int,
           batch_size: int, device: torch.device) -> float:
    model.train()
    _sync(device)
    t0 = time.perf_counter()  # on_epoch_start is timed: end-to-end LoRA re-encodes there
    model.on_epoch_start(epoch, steps_per_epoch(len(data.train), batch_size))
    for batch in iterate_batches(data, sampler, batch_size, rng, device):
        loss, _ = model.training_loss(batch, epoch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    _sync(device)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/ml100k_recmind.yaml")
    ap.add_argument("--epochs", type=int, default=5, help="timed epochs per model and phase")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--device", default="cpu", help="cpu | cuda[:i] (CUDA time is synchronised)")
    ap.add_argument("--json", default=None, help="also write the results here")
    ap.add_argument("--set", action="append", default=[], dest="overrides",
                    help="job-spec override for RecMind, e.g. --set model.text_pca=64")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    spec = load_spec(args.config, args.overrides)
    seed_everything(spec.seed)
    dataset, data = prepare(spec)
    features = model_inputs(spec, dataset, data).features  # cached after the first run
    m = spec.model
    lgcn_spec = load_spec(args.config, [
        f"model={{name: lightgcn, dim: {m.dim}, layers: {m.layers}, reg: {m.reg:g}}}"]).model
    models = {"lightgcn": build_model(lgcn_spec, data, device=device),
              "recmind": build_model(spec.model, data, ModelInputs(features=features), device)}
    opts = {k: make_optimizer(m, spec.train.lr) for k, m in models.items()}  # the trainer's
    sampler = NegativeSampler(data.n_items, data.train)
    rngs = {k: np.random.default_rng(spec.seed) for k in models}
    warm = models["recmind"].spec.warmup_epochs
    # phases: (name, recmind epoch number) -- warm-up epochs exist only if T_w > 0
    phases = ([("warmup", 1)] if warm > 0 else []) + [("joint", warm + 1)]
    times: dict[str, list[float]] = {"lightgcn": []}
    for phase, ep in phases:
        times[f"recmind/{phase}"] = []
        for _ in range(args.epochs + 1):  # first round is a discarded warm-up of caches
            times["lightgcn"].append(_epoch(models["lightgcn"], opts["lightgcn"], data, sampler,
                                            rngs["lightgcn"], 1, spec.train.batch_size, device))
            times[f"recmind/{phase}"].append(_epoch(models["recmind"], opts["recmind"], data,
                                                    sampler, rngs["recmind"], ep,
                                                    spec.train.batch_size, device))
        times[f"recmind/{phase}"] = times[f"recmind/{phase}"][1:]
    times["lightgcn"] = [t for i, t in enumerate(times["lightgcn"]) if i % (args.epochs + 1)]
    med = {k: statistics.median(v) for k, v in times.items()}
    out = {
        "config": args.config, "overrides": args.overrides, "threads": args.threads, "device": str(device), "epochs_timed": args.epochs,
        "n_train_edges": len(data.train), "batch_size": spec.train.batch_size,
        "median_epoch_s": med,
        "ratio_joint": med["recmind/joint"] / med["lightgcn"],
        **({"ratio_warmup": med["recmind/warmup"] / med["lightgcn"]} if warm > 0 else {}),
        "all_epoch_s": times,
    }
    print(f"{'model':<18}{'median s/epoch':>16}{'x LightGCN':>12}")
    for k, v in med.items():
        print(f"{k:<18}{v:>16.3f}{v / med['lightgcn']:>12.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
    return out


if __name__ == "__main__":
    main()
