"""LightGCN over a partitioned graph: each worker owns its rows of Â and of the ID table.

Worker r holds E⁰_own (its rows) and Â_r; a layer is ``E^{l+1}_own = Â_r [E^l_own; halo(E^l)]``
with the halo rows exchanged by a differentiable all-to-all
(:class:`recmind_dist.graph.partitioned.PartitionedAdjacency`), so h, the BPR loss and every
gradient equal single-process LightGCN's up to float round-off (tests: 2 and 3 workers).
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from recmind_dist.graph.partitioned import (
    LocalGraph,
    PartitionedAdjacency,
    fetch_rows,
    gather_full,
    owner_maps,
)
from recmind_dist.losses import bpr_loss, l2_batch
from recmind_dist.models.base import Batch
from recmind_dist.models.lightgcn import LightGCN, LightGCNSettings


class PartitionedLightGCN(LightGCN):
    """LightGCN whose table holds only this worker's rows and whose Â is partitioned.

    Representations, loss and gradients equal the single-process LightGCN's (the layer mean
    is :meth:`LightGCN.layer_mean`, unchanged). ``training_loss`` returns this worker's part
    of the batch loss; the trainer scales it by the worker's share, and the backward
    collectives deliver every row's gradient to its owner. Evaluation is centralised:
    :meth:`gather_for_eval` (a collective) assembles the full representations on rank 0.
    """

    def __init__(self, n_users: int, n_items: int, lg: LocalGraph, spec: LightGCNSettings,
                 device: torch.device | str, init_rows: torch.Tensor | None,
                 seed: int) -> None:
        nn.Module.__init__(self)
        self.spec = spec
        self.n_users, self.n_items = n_users, n_items
        self.n_layers, self.reg = spec.layers, spec.reg
        self.lg, self.rank, self.world = lg, lg.rank, lg.world
        with warnings.catch_warnings():  # sparse CSR tensors are a beta API
            warnings.simplefilter("ignore", UserWarning)
            self.adj = PartitionedAdjacency(lg, device)
        self.embedding = nn.Embedding(lg.n_own, spec.dim)
        with torch.no_grad():
            if init_rows is not None:
                self.embedding.weight.copy_(init_rows)
            else:
                g = torch.Generator().manual_seed(seed * 1000 + lg.rank)
                self.embedding.weight.copy_(torch.randn(lg.n_own, spec.dim, generator=g) * 0.1)
        self._parts, self._pos = owner_maps(lg, device)
        self._full: tuple[torch.Tensor, torch.Tensor] | None = None
        self.to(device)

    def fetch(self, x_own: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        return fetch_rows(x_own, ids, self._parts, self._pos, self.world)

    def training_loss(self, batch: Batch, epoch: int) -> tuple[torch.Tensor, dict[str, float]]:
        e0 = self.embedding.weight
        h = self.layer_mean(e0)  # own rows; halo exchanges inside
        nu = self.n_users
        ids = torch.cat([batch.users, nu + batch.pos, nu + batch.neg])
        rows = self.fetch(torch.cat([h, e0], 1), ids)
        d = e0.shape[1]
        hb, eb = rows[:, :d], rows[:, d:]
        u, i, j = hb.chunk(3)
        bpr = bpr_loss((u * i).sum(-1), (u * j).sum(-1))
        reg = self.reg * l2_batch(*eb.chunk(3))
        return bpr + reg, {"bpr": float(bpr.detach()), "reg": float(reg.detach())}

    @torch.no_grad()
    def gather_for_eval(self, full_state: bool = False) -> dict[str, torch.Tensor] | None:
        """Collective: rank 0 caches the full representations for evaluation; with
        ``full_state`` also returns the single-process LightGCN state dict (rank 0)."""
        h = self.layer_mean(self.embedding.weight)
        full_h = gather_full(h, self.lg)
        full_e = gather_full(self.embedding.weight, self.lg) if full_state else None
        if self.rank == 0:
            self._full = (full_h[: self.n_users], full_h[self.n_users :])
            if full_state:
                return {"embedding.weight": full_e.cpu()}
        return None

    def representations(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._full is None:
            raise RuntimeError("call gather_for_eval() on every rank first (rank 0 only)")
        return self._full
