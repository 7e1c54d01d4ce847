"""Validation and test metrics inside a Ray Train worker group, ranked by all the workers.

With ``EvalSpec.over_workers`` and more than one worker, every worker ranks its share of
the users over all items and the metric sums are all-reduced
(:func:`recmind_dist.eval.ranking.evaluate_ranking` with ``over_workers``), so every worker
gets the single-process metrics in about 1/W of the time. Each worker needs the full
representation tables for that: replicated workers compute them from their own copy of
the model; a partitioned model assembles them on rank 0 (``gather_for_eval``, called by the
trainer first) and rank 0 broadcasts them. Otherwise rank 0 alone ranks every user and
the other workers get None.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from recmind_dist.data.split import SplitData
from recmind_dist.eval.evaluator import SplitEvaluator
from recmind_dist.models.base import Recommender
from recmind_dist.specs import EvalSpec


class WorkerEvaluation:
    """``evaluation(model, split, buckets)``: a collective when spread over the workers."""

    def __init__(self, data: SplitData, spec: EvalSpec, rank: int, world: int,
                 partitioned: bool, device: torch.device) -> None:
        self.rank, self.partitioned, self.device = rank, partitioned, device
        self.n_users, self.n_items = data.n_users, data.n_items
        self.spread = world > 1 and spec.over_workers
        self.evaluator = SplitEvaluator(data, spec) if rank == 0 or self.spread else None

    def _broadcast_tables(self, model: Recommender) -> tuple[torch.Tensor, torch.Tensor]:
        """Rank 0's full (user, item) representations on every worker (one broadcast)."""
        box: list = [None]
        if self.rank == 0:
            user_repr, item_repr = model.representations()
            table = torch.cat([user_repr, item_repr]).detach().float().to(self.device)
            box = [table.shape[1]]
        dist.broadcast_object_list(box, src=0)
        if self.rank != 0:
            table = torch.empty((self.n_users + self.n_items, box[0]), device=self.device)
        dist.broadcast(table, src=0)
        return table[: self.n_users], table[self.n_users :]

    @torch.no_grad()
    def __call__(self, model: Recommender, split: str, buckets: bool = True) -> dict | None:
        if not self.spread:
            return self.evaluator.evaluate(model, split, buckets) if self.rank == 0 else None
        if not self.partitioned:
            return self.evaluator.evaluate(model, split, buckets, over_workers=True)
        user_repr, item_repr = self._broadcast_tables(model)
        return self.evaluator.evaluate_tables(user_repr, item_repr, split, buckets,
                                              over_workers=True)
