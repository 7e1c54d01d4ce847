"""Popularity baseline: score(u, i) = training degree of i (the same list for every user).

Written as a rank-1 factorisation so the shared evaluator can score it: h_u = 1, h_i = deg_i.
"""

from __future__ import annotations

import numpy as np
import torch

from recmind_dist.models.base import Batch, Recommender


class Popularity(Recommender):
    def __init__(self, n_users: int, n_items: int, train_pairs: np.ndarray) -> None:
        super().__init__()
        self.n_users, self.n_items = n_users, n_items
        deg = np.bincount(train_pairs[:, 1], minlength=n_items).astype(np.float32)
        self.register_buffer("item_score", torch.from_numpy(deg).unsqueeze(1))
        self.register_buffer("user_one", torch.ones(n_users, 1))

    def representations(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.user_one, self.item_score

    def training_loss(self, batch: Batch, epoch: int) -> tuple[torch.Tensor, dict[str, float]]:
        raise RuntimeError("the popularity baseline has nothing to train")
