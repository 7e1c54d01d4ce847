"""Candidate items for the LLMRec augmentor: each user's top-N under a base model.

Given the base model's final representations (LightGCN, MF, ...: how the model is obtained
is :mod:`recmind_dist.pipeline.augmentation`'s business), a user's candidates are

    C_u = top-N_i { h_uᵀh_i : (u, i) ∉ E_train },

best first: the user's TRAINING positives are masked to −inf (so a candidate is never an item
the LM would see in the history); the top-N is one ``torch.topk`` per block of users
(vectorised, O(block × I) memory).

Only training edges are masked: validation/test items may appear among the candidates (the
base model has never seen them), exactly as in the paper, where the augmentor samples from
the base recommender's ranking of unobserved items.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from recmind_dist.eval.ranking import interaction_matrix
from recmind_dist.eval.topk import rank_topk

__all__ = ["Candidates", "topn_candidates"]


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
    user_repr: torch.Tensor, item_repr: torch.Tensor, train: np.ndarray, n: int,
    batch_users: int = 1024, source: dict[str, Any] | None = None,
) -> Candidates:
    """Top-``n`` items per user by ``h_uᵀh_i`` over ``user_repr`` [U, d] and ``item_repr``
    [I, d], each user's items in ``train`` ([E, 2] local (user, item) edges) excluded."""
    user_repr, item_repr = user_repr.float().cpu(), item_repr.float().cpu()
    n_users, n_items = len(user_repr), len(item_repr)
    exclude = interaction_matrix(n_users, n_items, train)
    k = min(int(n), n_items)
    items = np.full((n_users, k), -1, dtype=np.int64)
    scores = np.full((n_users, k), -np.inf, dtype=np.float32)
    for start in range(0, n_users, batch_users):
        users = np.arange(start, min(start + batch_users, n_users))
        s, i = rank_topk(user_repr, item_repr, users, exclude, k)
        s, i = s.numpy(), i.numpy()
        ok = np.isfinite(s)  # −inf: fewer than k non-positive items for this user
        items[users] = np.where(ok, i, -1)
        scores[users] = np.where(ok, s, -np.inf)
    return Candidates(items, scores, dict(source or {}, n=k))
