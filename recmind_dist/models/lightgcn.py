"""LightGCN (He et al., SIGIR 2020).

Propagation over the normalised bipartite adjacency Â = D^{-1/2} A D^{-1/2}:

    E^{l+1} = Â E^l,   h = 1/(L+1) Σ_{l=0..L} E^l,   score(u, i) = h_uᵀ h_i.

Loss: BPR on h plus L2 on the batch's layer-0 embeddings (the paper's regulariser):

    L = −mean log σ(h_uᵀh_i − h_uᵀh_j) + λ/2 (‖e_u⁰‖² + ‖e_i⁰‖² + ‖e_j⁰‖²)/B.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import nn

from recmind_dist.graph.propagate import layer_mean, lightgcn_layers
from recmind_dist.losses import bpr_loss, l2_batch
from recmind_dist.models.base import Batch, Recommender


class LightGCNSettings(Protocol):
    """What LightGCN reads from its spec (LightGCNSpec, and the backbone part of RecMind's and
    LLMRec's specs)."""

    dim: int
    layers: int
    reg: float


def layer0_l2(e0: torch.Tensor, n_users: int, batch: Batch) -> torch.Tensor:
    """(‖e_u⁰‖² + ‖e_i⁰‖² + ‖e_j⁰‖²)/(2B) over the batch's rows of the ID table (users first).

    Three gathers, not one of 3B rows: on a CPU each [B, d] block stays in the core's cache
    (one [3B, d] block does not, and its ops ran ~10x slower per row on the 2-core box)."""
    return l2_batch(e0.index_select(0, batch.users), e0.index_select(0, n_users + batch.pos),
                    e0.index_select(0, n_users + batch.neg))


class LightGCN(Recommender):
    """``spec`` gives d (``dim``), L (``layers``) and λ (``reg``); ``adj`` is Â ([N, N] CSR,
    users first) or a partitioned Â."""

    def __init__(
        self, n_users: int, n_items: int, adj: torch.Tensor, spec: LightGCNSettings
    ) -> None:
        super().__init__()
        self.spec = spec
        self.n_users, self.n_items = n_users, n_items
        self.n_layers, self.reg = spec.layers, spec.reg
        self.adj = adj
        self.embedding = nn.Embedding(n_users + n_items, spec.dim)
        nn.init.normal_(self.embedding.weight, std=0.1)

    def layer_mean(self, x0: torch.Tensor) -> torch.Tensor:
        """h = mean over [E^0 .. E^L] for the stacked user+item table ``x0``."""
        return layer_mean(lightgcn_layers(self.adj, x0, self.n_layers))

    def representations(self) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.layer_mean(self.embedding.weight)
        return h[: self.n_users], h[self.n_users :]

    def bpr_terms(self, h_user: torch.Tensor, h_item: torch.Tensor, batch: Batch) -> dict:
        """BPR + layer-0 L2 on a batch, given final representations."""
        # index_select, not x[idx]: its backward is an index_add (~3x faster on CPU than the
        # accumulating index_put of advanced indexing)
        u = h_user.index_select(0, batch.users)
        i, j = h_item.index_select(0, batch.pos), h_item.index_select(0, batch.neg)
        bpr = bpr_loss((u * i).sum(-1), (u * j).sum(-1))
        return {"bpr": bpr, "reg": self.reg * layer0_l2(self.embedding.weight, self.n_users, batch)}

    def training_loss(self, batch: Batch, epoch: int) -> tuple[torch.Tensor, dict[str, float]]:
        h_user, h_item = self.representations()
        parts = self.bpr_terms(h_user, h_item, batch)
        return parts["bpr"] + parts["reg"], {k: float(v.detach()) for k, v in parts.items()}
