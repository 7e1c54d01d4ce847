"""Evaluation of a model on a split: valid masks train items; test masks train + valid items.
Validation ranks every user with validation items, or a fixed sample of them
(``EvalSpec.valid_users``); test ranks every user with test items.

Ranking is chunked over users and items (:func:`recmind_dist.eval.ranking.evaluate_ranking`).
Buckets by training item degree (cold/tail/head) and, for a cold-item split, the held-out
``unseen`` items, are reported as ``{bucket}/{metric}_at_{k}``: the user's held-out items of
that bucket found in the top-K over the whole catalogue. On test, each bucket of
``EvalSpec.rank_within`` is also ranked among its own items only
(``within_{bucket}/{metric}_at_{k}``): for user u with held-out items T_u^b in bucket b,

    top_K^b(u) = argtop-K over i ∈ b, i ∉ (train ∪ valid)(u), of  s(u, i),
    Recall@K^b(u) = |top_K^b(u) ∩ T_u^b| / |T_u^b|   (NDCG and the rest likewise)

(the cold-start protocol: how the model orders the cold items among themselves).
"""

from __future__ import annotations

import numpy as np
import torch

from recmind_dist.data.split import SplitData
from recmind_dist.eval.ranking import degree_buckets, evaluate_ranking, interaction_matrix
from recmind_dist.models.base import Recommender
from recmind_dist.specs import EvalSpec


def user_sample(pairs: np.ndarray, n_users: int | None, seed: int = 0) -> np.ndarray:
    """The (user, item) rows of ``n_users`` users drawn uniformly without replacement from
    the users in ``pairs`` (a fixed ``seed``: the same users every time); all rows when
    ``n_users`` is None or not below the number of users present."""
    users = np.unique(pairs[:, 0])
    if n_users is None or n_users >= len(users):
        return pairs
    keep = np.random.default_rng(seed).choice(users, n_users, replace=False)
    return pairs[np.isin(pairs[:, 0], keep)]


class SplitEvaluator:
    def __init__(self, data: SplitData, spec: EvalSpec) -> None:
        self.data, self.spec = data, spec
        nu, ni = data.n_users, data.n_items
        self.train_mat = interaction_matrix(nu, ni, data.train)
        self.valid_mat = interaction_matrix(nu, ni, user_sample(data.valid, spec.valid_users))
        self.test_mat = interaction_matrix(nu, ni, data.test)
        self.test_exclude = interaction_matrix(nu, ni, data.train, data.valid)
        self.buckets = degree_buckets(data.item_degree, spec.cold_degree, spec.head_fraction)
        if len(data.cold_items):
            unseen = np.zeros(ni, dtype=bool)
            unseen[data.cold_items] = True
            self.buckets["unseen"] = unseen

    def exclude_for(self, split: str):
        return self.train_mat if split == "valid" else self.test_exclude

    @torch.no_grad()
    def evaluate(self, model: Recommender, split: str = "valid", buckets: bool = True,
                 progress: bool = False, over_workers: bool = False) -> dict:
        """Metrics of ``model`` on ``split`` (see :meth:`evaluate_tables`)."""
        was_training = model.training
        model.eval()
        user_repr, item_repr = model.representations()
        model.train(was_training)
        return self.evaluate_tables(user_repr, item_repr, split, buckets, progress, over_workers)

    @torch.no_grad()
    def evaluate_tables(self, user_repr: torch.Tensor, item_repr: torch.Tensor,
                        split: str = "valid", buckets: bool = True, progress: bool = False,
                        over_workers: bool = False) -> dict:
        """Metrics of the full representation tables on ``split``: chunked full ranking,
        ``EvalSpec.batch_users`` x ``EvalSpec.chunk_items`` scores at a time.
        ``over_workers``: called by every worker of a process group with the same tables,
        each ranks its share of the users; all get every user's metrics."""
        truth = self.valid_mat if split == "valid" else self.test_mat
        result = evaluate_ranking(
            user_repr,
            item_repr,
            truth,
            self.exclude_for(split),
            self.spec.ks,
            self.buckets if buckets else None,
            self.spec.batch_users,
            progress,
            self.spec.chunk_items,
            over_workers,
        )
        if split == "test" and buckets:
            result.update(self.rank_within(user_repr, item_repr, split, over_workers))
        return result

    @torch.no_grad()
    def rank_within(self, user_repr: torch.Tensor, item_repr: torch.Tensor,
                    split: str = "test", over_workers: bool = False) -> dict[str, float]:
        """``within_{bucket}/{metric}_at_{k}`` for each bucket of ``EvalSpec.rank_within``:
        the bucket's items ranked among themselves (the module's equation); a bucket with
        fewer items than the largest K is skipped. A collective with ``over_workers``."""
        truth = self.valid_mat if split == "valid" else self.test_mat
        exclude = self.exclude_for(split)
        out: dict[str, float] = {}
        for name in self.spec.rank_within:
            mask = self.buckets.get(name)
            if mask is None or int(mask.sum()) < max(self.spec.ks):
                continue
            cols = np.flatnonzero(mask)
            sub = evaluate_ranking(user_repr, item_repr[torch.as_tensor(cols, device=item_repr.device)],
                                   truth[:, cols].tocsr(), exclude[:, cols].tocsr(),
                                   self.spec.ks, None, self.spec.batch_users, False,
                                   self.spec.chunk_items, over_workers)
            out.update({f"within_{name}/{key}": v for key, v in sub.items()})
        return out
