"""Candidate items for the LLMRec augmentor: each user's top-N of a trained base model.

The base model (LightGCN or MF) is either loaded from a finished MLflow run
(:func:`recmind_dist.pipeline.load_run`, the run's best checkpoint) or trained in-process
from a job spec. Scores are ``h_uᵀh_i`` over the whole catalogue, with the user's TRAINING
positives masked to −inf (so a candidate is never an item the LM would see in the history);
the top-N is one ``torch.topk`` per block of users (vectorised, O(block × I) memory).

Only training edges are masked: validation/test items may appear among the candidates (the
base model has never seen them), exactly as in the paper, where the augmentor samples from
the base recommender's ranking of unobserved items.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from recmind_dist.data.split import SplitData
from recmind_dist.eval.ranking import interaction_matrix, rank_topk
from recmind_dist.models.base import Recommender

log = logging.getLogger(__name__)

__all__ = ["Candidates", "candidates_from_run", "candidates_in_process", "topn_candidates"]


@dataclass
class Candidates:
    """``items[u]``: user ``u``'s top-N LOCAL item ids, best first; −1 pads users that have
    fewer than N non-positive items. ``source`` says which base model made them."""

    items: np.ndarray  # [U, N] int64
    scores: np.ndarray  # [U, N] float32 (−inf at padding)
    source: dict[str, Any] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return int(self.items.shape[1])

    def for_user(self, u: int) -> np.ndarray:
        row = self.items[u]
        return row[row >= 0]


@torch.no_grad()
def topn_candidates(
    model: Recommender, data: SplitData, n: int, batch_users: int = 1024,
    source: dict[str, Any] | None = None,
) -> Candidates:
    """Top-``n`` items per local user of ``data`` under ``model``, training positives excluded."""
    was_training = model.training
    model.eval()
    user_repr, item_repr = model.representations()
    model.train(was_training)
    user_repr, item_repr = user_repr.float().cpu(), item_repr.float().cpu()
    exclude = interaction_matrix(data.n_users, data.n_items, data.train)
    k = min(int(n), data.n_items)
    items = np.full((data.n_users, k), -1, dtype=np.int64)
    scores = np.full((data.n_users, k), -np.inf, dtype=np.float32)
    for start in range(0, data.n_users, batch_users):
        users = np.arange(start, min(start + batch_users, data.n_users))
        s, i = rank_topk(user_repr, item_repr, users, exclude, k)
        s, i = s.numpy(), i.numpy()
        ok = np.isfinite(s)  # −inf: fewer than k non-positive items for this user
        items[users] = np.where(ok, i, -1)
        scores[users] = np.where(ok, s, -np.inf)
    return Candidates(items, scores, dict(source or {}, n=k))


def candidates_from_run(
    run_id: str, n: int, expect_split_key: str | None = None, tracking_uri: str | None = None
) -> tuple[Candidates, SplitData]:
    """Candidates from the best checkpoint of a finished MLflow run (LightGCN / MF / ...).

    ``expect_split_key``: the split of the job being augmented; a base run trained on another
    split (dataset, protocol or seed) is refused, since its local ids would not line up.
    """
    from recmind_dist.errors import InputError
    from recmind_dist.pipeline import load_run

    spec, _, data, model = load_run(run_id, tracking_uri)
    if expect_split_key is not None and data.key != expect_split_key:
        raise InputError("job spec", "model.base_run",
                         f"run {run_id} was trained on split {data.key}, not {expect_split_key} "
                         "(same dataset, split spec and seed needed)")
    src = {"kind": "mlflow_run", "run_id": run_id, "model": spec.model.name,
           "split_key": data.key}
    return topn_candidates(model, data, n, source=src), data


def candidates_in_process(base_spec: Any, n: int, progress: bool = False
                          ) -> tuple[Candidates, SplitData]:
    """Train ``base_spec`` (a :class:`recmind_dist.specs.JobSpec` with a LightGCN/MF model)
    in this process, without MLflow, and return its candidates."""
    from recmind_dist.eval.evaluator import SplitEvaluator
    from recmind_dist.models.factory import build_model
    from recmind_dist.pipeline import prepare
    from recmind_dist.train.loop import seed_everything, train_model

    seed_everything(base_spec.seed)
    _, data = prepare(base_spec)
    model = build_model(base_spec.model, data, base_spec.train.device)
    res = train_model(model, data, base_spec.train, SplitEvaluator(data, base_spec.eval),
                      base_spec.seed, progress=progress)
    src = {"kind": "in_process", "model": base_spec.model.name,
           "spec_fingerprint": base_spec.fingerprint(), "best_epoch": res.best_epoch,
           "split_key": data.key}
    log.info("base %s trained in-process: best epoch %d", base_spec.model.name, res.best_epoch)
    return topn_candidates(model, data, n, source=src), data
