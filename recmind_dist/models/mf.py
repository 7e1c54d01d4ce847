"""Matrix factorisation with BPR (Rendle et al., 2009).

score(u, i) = e_uᵀ e_i;  L = −mean log σ(s_ui − s_uj) + λ/2 (‖e_u‖² + ‖e_i‖² + ‖e_j‖²)/B.
"""

from __future__ import annotations

import torch
from torch import nn

from recmind_dist.losses import bpr_loss, l2_batch
from recmind_dist.models.base import Batch, Recommender
from recmind_dist.specs import MFSpec


class MF(Recommender):
    """``spec`` gives d (``dim``) and λ (``reg``)."""

    def __init__(self, n_users: int, n_items: int, spec: MFSpec) -> None:
        super().__init__()
        self.spec = spec
        self.n_users, self.n_items, self.reg = n_users, n_items, spec.reg
        self.user_emb = nn.Embedding(n_users, spec.dim)
        self.item_emb = nn.Embedding(n_items, spec.dim)
        nn.init.xavier_uniform_(self.user_emb.weight)
        nn.init.xavier_uniform_(self.item_emb.weight)

    def representations(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.user_emb.weight, self.item_emb.weight

    def training_loss(self, batch: Batch, epoch: int) -> tuple[torch.Tensor, dict[str, float]]:
        u = self.user_emb(batch.users)
        i = self.item_emb(batch.pos)
        j = self.item_emb(batch.neg)
        bpr = bpr_loss((u * i).sum(-1), (u * j).sum(-1))
        reg = self.reg * l2_batch(u, i, j)
        return bpr + reg, {"bpr": float(bpr.detach()), "reg": float(reg.detach())}
