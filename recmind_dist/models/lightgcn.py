"""LightGCN (He et al., SIGIR 2020).

Propagation over the normalised bipartite adjacency Â = D^{-1/2} A D^{-1/2}:

    E^{l+1} = Â E^l,   h = 1/(L+1) Σ_{l=0..L} E^l,   score(u, i) = h_uᵀ h_i.

Loss (spec ``loss``, :mod:`recmind_dist.models.ranking_loss`): BPR on h plus L2 on the
batch's layer-0 embeddings (the paper's regulariser),

    L = −mean log σ(h_uᵀh_i − h_uᵀh_j) + λ/2 (‖e_u⁰‖² + ‖e_i⁰‖² + ‖e_j⁰‖²)/B,

or the sampled softmax on cosines over N negatives (``loss: softmax``) with the same L2; then
score(u, i) = cos(h_u, h_i), what that loss ranks by.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import nn

from recmind_dist.graph.propagate import layer_mean, lightgcn_layers
from recmind_dist.models.base import Batch, Recommender
from recmind_dist.models.ranking_loss import RankingLoss, bpr_terms, layer0_l2
from recmind_dist.models.rng import SeededGenerator

__all__ = ["LightGCN", "LightGCNSettings", "layer0_l2"]


class LightGCNSettings(Protocol):
    """What LightGCN reads from its spec (LightGCNSpec and the specs built on it)."""

    dim: int
    layers: int
    reg: float
    loss: str  # "bpr" | "softmax"
    n_negatives: int
    softmax_tau: float


class LightGCN(Recommender):
    """``spec`` gives d (``dim``), L (``layers``), λ (``reg``) and the ranking loss
    (``loss``, ``n_negatives``, ``softmax_tau``); ``adj`` is Â ([N, N] CSR, users first) or
    a partitioned Â; ``seed`` (the run seed) seeds the model's own random draws
    (:class:`~recmind_dist.models.rng.SeededGenerator`), made only by the objectives that
    need them."""

    def __init__(
        self, n_users: int, n_items: int, adj: torch.Tensor, spec: LightGCNSettings, seed: int
    ) -> None:
        super().__init__()
        self.spec = spec
        self.n_users, self.n_items = n_users, n_items
        self.n_layers, self.reg = spec.layers, spec.reg
        self.adj = adj
        self.embedding = nn.Embedding(n_users + n_items, spec.dim)
        nn.init.normal_(self.embedding.weight, std=0.1)
        # a submodule only where something is drawn: plain LightGCN's state dict is unchanged
        self.rng = SeededGenerator(seed) if self.draws_random(spec) else None
        self.ranking = RankingLoss(n_users, n_items, spec, self.rng)

    @classmethod
    def draws_random(cls, spec: LightGCNSettings) -> bool:
        """Whether the model draws random numbers in ``training_loss`` (then it owns a
        :class:`SeededGenerator`)."""
        return RankingLoss.needs_generator(spec)

    def layer_mean(self, x0: torch.Tensor) -> torch.Tensor:
        """h = mean over [E^0 .. E^L] for the stacked user+item table ``x0``."""
        return layer_mean(lightgcn_layers(self.adj, x0, self.n_layers))

    def representations(self) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.ranking.scored(self.layer_mean(self.embedding.weight))
        return h[: self.n_users], h[self.n_users :]

    def bpr_terms(self, h_user: torch.Tensor, h_item: torch.Tensor, batch: Batch) -> dict:
        """BPR + layer-0 L2 on a batch, given final representations."""
        return bpr_terms(h_user, h_item, self.embedding.weight, self.n_users, batch, self.reg)

    def ranking_terms(self, h_user: torch.Tensor, h_item: torch.Tensor, batch: Batch) -> dict:
        """The spec's ranking loss (BPR or sampled softmax) + layer-0 L2 on a batch."""
        return self.ranking(h_user, h_item, self.embedding.weight, batch)

    def training_loss(self, batch: Batch, epoch: int) -> tuple[torch.Tensor, dict[str, float]]:
        h_user, h_item = self.representations()
        parts = self.ranking_terms(h_user, h_item, batch)
        return sum(parts.values()), {k: float(v.detach()) for k, v in parts.items()}

