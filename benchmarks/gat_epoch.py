"""Seconds per training epoch on ml-100k: LightGCN vs GAT-LLM (text / id features).

    .venv/bin/python benchmarks/gat_epoch.py [--threads 2] [--epochs 2] [--forward-every 1]

One epoch = every training edge once in batches of 2048 (the trainer's loop), each batch
running the full-graph GAT forward (or one per ``--forward-every`` batches). Features come
from the cached embedding job (computed once if absent).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from recmind_dist.models.registry import build_model
from recmind_dist.pipeline import model_inputs, prepare
from recmind_dist.sampling import NegativeSampler
from recmind_dist.specs import load_spec
from recmind_dist.train.loop import iterate_batches, steps_per_epoch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--forward-every", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    rows = []
    for cfg, sets in [("configs/ml100k_lightgcn.yaml", []),
                      ("configs/ml100k_gat_llm.yaml", [f"model.forward_every={a.forward_every}"]),
                      ("configs/ml100k_gat_id.yaml", [f"model.forward_every={a.forward_every}"])]:
        spec = load_spec(cfg, sets)
        ds, data = prepare(spec)
        model = build_model(spec.model, data, model_inputs(spec, ds, data))
        opt = torch.optim.Adam(model.parameters(), lr=spec.train.lr)
        sampler = NegativeSampler(data.n_items, data.train)
        rng = np.random.default_rng(0)
        times = []
        steps = steps_per_epoch(len(data.train), spec.train.batch_size)
        for ep in range(1, a.epochs + 1):
            model.on_epoch_start(ep, steps)
            t0 = time.perf_counter()
            for b in iterate_batches(data, sampler, spec.train.batch_size, rng,
                                     torch.device("cpu")):
                loss, _ = model.training_loss(b, ep)
                opt.zero_grad()
                loss.backward()
                opt.step()
            times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        with torch.no_grad():
            model.eval()
            model.representations()
        fwd = time.perf_counter() - t0
        rows.append((spec.name, np.mean(times), fwd, len(data.train)))
    print(f"{'model':28s} {'s/epoch':>8s} {'eval fwd s':>10s}  train edges")
    for name, t, f, n in rows:
        print(f"{name:28s} {t:8.2f} {f:10.3f}  {n}")


if __name__ == "__main__":
    main()
