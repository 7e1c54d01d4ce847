"""Shared helpers of the distributed tests: a tiny job spec and a single-process reference."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from recmind_dist.specs import JobSpec


def tiny_spec(dataset_dir: Path, **train) -> JobSpec:
    t = {"epochs": 4, "batch_size": 128, "lr": 0.01, "patience": 10, "eval_every": 1}
    t.update(train)
    return JobSpec.model_validate({
        "name": "dist-test", "seed": 7,
        "data": {"path": str(dataset_dir), "source": None},
        "split": {"threshold": None},
        "model": {"name": "lightgcn", "dim": 16, "layers": 2},
        "train": t,
        "eval": {"ks": [10, 20]},
    })


def write_tiny(root: Path, n_users: int = 80, n_items: int = 100, per_user: int = 20) -> Path:
    from conftest import random_interactions

    from recmind_dist.data.schema import write_dataset

    inter = random_interactions(n_users, n_items, per_user, seed=3)
    return write_dataset(
        root / "tinyd", inter, None, None,
        np.array([f"u{i}" for i in range(n_users)], dtype=object),
        np.array([f"i{i}" for i in range(n_items)], dtype=object), source="test",
    )


def single_process(spec: JobSpec):
    """(data, initial model, TrainResult, trained model) of the single-process trainer."""
    from recmind_dist.eval.evaluator import SplitEvaluator
    from recmind_dist.models.registry import build_model
    from recmind_dist.pipeline import prepare
    from recmind_dist.train.loop import seed_everything, train_model

    seed_everything(spec.seed)
    _, data = prepare(spec)
    model = build_model(spec.model, data)
    init = pickle.loads(pickle.dumps(model))  # deepcopy cannot copy sparse CSR tensors
    result = train_model(model, data, spec.train, SplitEvaluator(data, spec.eval), spec.seed,
                         progress=False)
    return data, init, result, model


def end_worker() -> None:
    """Leave a spawned gloo worker: barrier, destroy the group, then ``os._exit(0)``.

    Skipping interpreter teardown avoids an intermittent ``terminate called without an active
    exception`` (SIGABRT) from gloo's threads at exit, seen under load; the worker's results
    are already on disk when this is called."""
    import os
    import sys

    import torch.distributed as dist

    dist.barrier()
    dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
