"""The ranking objective of the LightGCN family (LightGCN, SimGCL, XSimGCL), chosen by the
spec's ``loss``, on final representations h and the layer-0 ID table E⁰ (users first).

* ``bpr``: ``L = −mean_b log σ(h_uᵀh_i − h_uᵀh_j) + λ·l2``, j the trainer's negative.
* ``softmax`` (sampled softmax on cosines, "SSM"): with c(x, y) = xᵀy / (‖x‖‖y‖),

      L = −1/B Σ_b log  exp(c(h_u, h_i)/τ) / (exp(c(h_u, h_i)/τ) + Σ_{k=1..N} exp(c(h_u, h_k)/τ))
          + λ·l2,

  where the N negatives of row b are the trainer's own negative j_b (uniform, never a
  training positive of u) and N − 1 items drawn **uniformly over all items** (with
  replacement, so a draw may be one of u's positives) once per batch and shared by all its
  rows. The shared draws come from the model's :class:`~recmind_dist.models.rng.
  SeededGenerator` (seeded from the run seed), so the trainer stays model-agnostic: it still
  hands every model one negative per edge. Every data-parallel worker draws the same shared
  negatives, so the workers' sub-batch losses average to the global batch's loss.

Both add ``λ·l2`` = λ/2 (‖e_u⁰‖² + ‖e_i⁰‖² + ‖e_j⁰‖²)/B on the batch's own rows (the shared
negatives are not regularised). A model trained with ``softmax`` scores with normalised rows
(:meth:`RankingLoss.scored`): score(u, i) = c(h_u, h_i), the quantity the loss ranks by.
"""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F

from recmind_dist.losses import bpr_loss, l2_batch, softmax_loss
from recmind_dist.models.base import Batch
from recmind_dist.models.rng import SeededGenerator


class RankingLossSettings(Protocol):
    """What the ranking objective reads from a LightGCN-family spec."""

    reg: float
    loss: str  # "bpr" | "softmax"
    n_negatives: int
    softmax_tau: float


def layer0_l2(e0: torch.Tensor, n_users: int, batch: Batch) -> torch.Tensor:
    """(‖e_u⁰‖² + ‖e_i⁰‖² + ‖e_j⁰‖²)/(2B) over the batch's rows of the ID table (users first).

    Three gathers, not one of 3B rows: on a CPU each [B, d] block stays in the core's cache
    (one [3B, d] block does not, and its ops ran ~10x slower per row on the 2-core box)."""
    return l2_batch(e0.index_select(0, batch.users), e0.index_select(0, n_users + batch.pos),
                    e0.index_select(0, n_users + batch.neg))


def batch_rows(h_user: torch.Tensor, h_item: torch.Tensor, batch: Batch
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(h_u, h_i, h_j) rows of the batch. ``index_select``, not ``x[idx]``: its backward is an
    index_add (~3x faster on CPU than the accumulating index_put of advanced indexing)."""
    return (h_user.index_select(0, batch.users), h_item.index_select(0, batch.pos),
            h_item.index_select(0, batch.neg))


def bpr_terms(h_user: torch.Tensor, h_item: torch.Tensor, e0: torch.Tensor, n_users: int,
              batch: Batch, reg: float) -> dict[str, torch.Tensor]:
    """``{"bpr": BPR on h, "reg": λ·l2 on E⁰}`` for one batch."""
    u, i, j = batch_rows(h_user, h_item, batch)
    return {"bpr": bpr_loss((u * i).sum(-1), (u * j).sum(-1)),
            "reg": reg * layer0_l2(e0, n_users, batch)}


class RankingLoss:
    """The spec's objective as a callable ``(h_user, h_item, e0, batch) -> parts``; the
    parts (``bpr`` or ``softmax``, and ``reg``) sum to the loss."""

    def __init__(self, n_users: int, n_items: int, spec: RankingLossSettings,
                 generator: SeededGenerator | None) -> None:
        if spec.loss not in ("bpr", "softmax"):
            raise ValueError(f"unknown ranking loss {spec.loss!r}; expected bpr or softmax")
        self.n_users, self.n_items = n_users, n_items
        self.kind, self.reg = spec.loss, spec.reg
        self.n_shared = spec.n_negatives - 1 if spec.loss == "softmax" else 0
        self.tau = spec.softmax_tau
        if self.n_shared > 0 and generator is None:
            raise ValueError("the softmax loss with n_negatives > 1 draws extra negatives: "
                             "it needs the model's SeededGenerator")
        self.generator = generator

    @staticmethod
    def needs_generator(spec: RankingLossSettings) -> bool:
        """True when the objective draws random numbers (softmax with shared negatives)."""
        return spec.loss == "softmax" and spec.n_negatives > 1

    def scored(self, h: torch.Tensor) -> torch.Tensor:
        """The representation the model ranks with: h (bpr), or h/‖h‖ row-wise (softmax: the
        loss ranks by cosine, so scoring with the dot product of normalised rows ranks the
        way training did; the raw dot product would also rank by the untrained norms)."""
        return h if self.kind == "bpr" else F.normalize(h, dim=-1)

    def shared_negatives(self, device: torch.device) -> torch.Tensor:
        """N − 1 item ids drawn uniformly over all items (with replacement)."""
        return torch.randint(0, self.n_items, (self.n_shared,), device=device,
                             generator=self.generator.on(device))

    def __call__(self, h_user: torch.Tensor, h_item: torch.Tensor, e0: torch.Tensor,
                 batch: Batch) -> dict[str, torch.Tensor]:
        if self.kind == "bpr":
            return bpr_terms(h_user, h_item, e0, self.n_users, batch, self.reg)
        u, i, j = (F.normalize(x, dim=-1) for x in batch_rows(h_user, h_item, batch))
        neg = (u * j).sum(-1, keepdim=True)  # [B, 1]: the row's own negative
        if self.n_shared:
            shared = F.normalize(h_item.index_select(0, self.shared_negatives(u.device)), dim=-1)
            neg = torch.cat([neg, u @ shared.transpose(0, 1)], -1)  # [B, N]
        return {"softmax": softmax_loss((u * i).sum(-1), neg, self.tau),
                "reg": self.reg * layer0_l2(e0, self.n_users, batch)}
