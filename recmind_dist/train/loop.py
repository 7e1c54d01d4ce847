"""Single-process BPR training with early stopping on a validation metric.

Each epoch visits every training edge once in a seeded random order, with one uniform
negative per edge. Validation runs every ``eval_every`` epochs; the parameters of the best
validation epoch are kept, and test metrics always come from them. Training stops after
``patience`` validations without improvement (never before ``min_epochs``), at ``epochs``,
or when ``max_seconds`` of training time are spent.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from recmind_dist.config import TrainSpec
from recmind_dist.data.split import SplitData
from recmind_dist.eval.evaluator import SplitEvaluator
from recmind_dist.models.base import Batch, Recommender
from recmind_dist.sampling import NegativeSampler

log = logging.getLogger(__name__)

EpochCallback = Callable[[int, dict[str, float], Recommender], None]


@dataclass
class TrainResult:
    best_epoch: int
    best_valid: dict[str, float]
    test: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)
    train_seconds: float = 0.0
    epochs_run: int = 0
    stop_reason: str = ""


def seed_everything(seed: int) -> None:
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def iterate_batches(
    data: SplitData, sampler: NegativeSampler, batch_size: int, rng: np.random.Generator,
    device: torch.device,
):  # noqa: ANN201 (generator of Batch)
    """Shuffled training edges in batches, each with one sampled negative."""
    order = rng.permutation(len(data.train))
    users_all = data.train[order, 0]
    pos_all = data.train[order, 1]
    neg_all = sampler.sample(users_all, rng)
    for start in range(0, len(order), batch_size):
        sl = slice(start, start + batch_size)
        yield Batch(
            torch.from_numpy(users_all[sl]).to(device),
            torch.from_numpy(pos_all[sl]).to(device),
            torch.from_numpy(neg_all[sl]).to(device),
        )


def train_model(
    model: Recommender,
    data: SplitData,
    spec: TrainSpec,
    evaluator: SplitEvaluator,
    seed: int,
    on_epoch: EpochCallback | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train ``model`` on ``data.train``; return best-validation and test metrics."""
    device = torch.device(spec.device)
    if spec.num_threads:
        torch.set_num_threads(spec.num_threads)
    rng = np.random.default_rng(seed)
    history: list[dict[str, float]] = []
    best_score, best_epoch, best_valid = -np.inf, -1, {}
    best_state = copy.deepcopy(model.state_dict())
    train_seconds, bad_rounds, stop_reason, epoch = 0.0, 0, "epochs", 0

    if not model.trainable or spec.epochs == 0:
        best_valid = evaluator.evaluate(model, "valid")
        best_epoch, stop_reason = 0, "nothing to train"
    else:
        sampler = NegativeSampler(data.n_items, data.train)
        opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=spec.lr)
        bar = tqdm(range(1, spec.epochs + 1), desc="train", disable=not progress, unit="ep")
        for epoch in bar:
            model.train()
            model.on_epoch_start(epoch)
            t0 = time.perf_counter()
            sums: dict[str, float] = {}
            n_batches = 0
            for batch in iterate_batches(data, sampler, spec.batch_size, rng, device):
                loss, parts = model.training_loss(batch, epoch)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                for k, v in parts.items():
                    sums[k] = sums.get(k, 0.0) + v
                n_batches += 1
            train_seconds += time.perf_counter() - t0
            row: dict[str, float] = {
                "epoch": epoch,
                "train_seconds": train_seconds,
                **{f"train/{k}": v / max(n_batches, 1) for k, v in sums.items()},
            }
            if epoch % spec.eval_every == 0 or epoch == spec.epochs:
                valid = evaluator.evaluate(model, "valid", buckets=False)
                row.update({f"valid/{k}": v for k, v in valid.items()})
                score = valid[spec.stop_metric]
                if score > best_score:
                    best_score, best_epoch, best_valid = score, epoch, valid
                    best_state = copy.deepcopy(model.state_dict())
                    bad_rounds = 0
                else:
                    bad_rounds += 1
                bar.set_postfix({spec.stop_metric: f"{score:.4f}", "best": best_epoch})
            history.append(row)
            if on_epoch is not None:
                on_epoch(epoch, row, model)
            if bad_rounds >= spec.patience and epoch >= spec.min_epochs:
                stop_reason = f"no {spec.stop_metric} improvement for {spec.patience} validations"
                break
            if spec.max_seconds is not None and train_seconds >= spec.max_seconds:
                stop_reason = f"time budget {spec.max_seconds}s"
                break
        bar.close()
        model.load_state_dict(best_state)
        best_valid = evaluator.evaluate(model, "valid")
    test = evaluator.evaluate(model, "test")
    log.info("stopped: %s; best epoch %d", stop_reason, best_epoch)
    return TrainResult(
        best_epoch=best_epoch,
        best_valid=best_valid,
        test=test,
        history=history,
        train_seconds=train_seconds,
        epochs_run=epoch,
        stop_reason=stop_reason,
    )


def state_for_checkpoint(model: Recommender) -> dict[str, Any]:
    """A state dict safe to ``torch.save`` (sparse adjacency buffers are not parameters)."""
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}
