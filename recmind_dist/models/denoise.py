"""LLMRec's two denoising mechanisms.

Noisy-pair pruning
    Every epoch, each augmented triple (u, i+, i−) gets its BPR loss under the current model,
    ``ℓ = −log σ(h_uᵀh_{i+} − h_uᵀh_{i−})``; the ``⌊rate·M⌋`` triples with the LARGEST loss
    (the ones the model disagrees with most: likely LM mistakes) are dropped for that epoch.
    :func:`prune_keep_mask` is exact: ties are broken by index, so exactly ``⌊rate·M⌋`` go.

MAE feature refinement
    For side features ``f ∈ R^{n×D}`` (text vectors of enriched attributes / profiles), a
    random ``⌊ratio·D⌉`` of the D dimensions of every row is masked (set to 0), the masked
    row is encoded by the model's feature projection ``P`` and decoded by a linear decoder
    ``Q``; the loss is the scaled cosine error (GraphMAE's SCE, γ = 1) on the masked
    dimensions only:

        L_mae = mean_rows (1 − cos(Q(P(f ⊙ (1 − m)))[m], f[m])).

    The projection that feeds the ID embeddings is thereby trained to keep what is needed to
    restore hidden feature dimensions (robust to noisy/missing attribute dimensions), not only
    what BPR rewards. The loss is bounded in [0, 2] whatever the feature scale.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["FeatureMAE", "mask_dims", "n_pruned", "prune_keep_mask", "triple_bpr_losses"]


def n_pruned(n: int, rate: float) -> int:
    """How many of ``n`` augmented triples an epoch drops at ``rate`` (``⌊rate·n⌋``)."""
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"prune rate must be in [0, 1), got {rate}")
    return math.floor(rate * n + 1e-9)


def prune_keep_mask(losses: torch.Tensor, rate: float) -> torch.Tensor:
    """Boolean keep-mask over ``losses`` dropping exactly the ``⌊rate·n⌋`` largest."""
    n = int(losses.numel())
    k = n_pruned(n, rate)
    keep = torch.ones(n, dtype=torch.bool, device=losses.device)
    if k:
        # stable descending order: equal losses are dropped lowest index first
        order = torch.sort(losses.detach().flatten(), descending=True, stable=True).indices
        keep[order[:k]] = False
    return keep


def triple_bpr_losses(h_user: torch.Tensor, h_item: torch.Tensor, triples: torch.Tensor
                      ) -> torch.Tensor:
    """Per-triple BPR loss ``softplus(−(h_uᵀh_i − h_uᵀh_j))`` for ``triples`` [M, 3]."""
    u, i, j = h_user[triples[:, 0]], h_item[triples[:, 1]], h_item[triples[:, 2]]
    return nn.functional.softplus(-((u * i).sum(-1) - (u * j).sum(-1)))


def mask_dims(n_rows: int, dim: int, ratio: float, generator: torch.Generator | None = None,
              device: torch.device | str = "cpu") -> torch.Tensor:
    """Indices [n_rows, k] of the masked dimensions, ``k = round(ratio·dim)`` distinct per row
    (at least 1 when ratio > 0).

    Row r masks the cyclic window ``π[(o_r + 0..k−1) mod D]`` of one random permutation π of
    the dimensions, at a random offset o_r: every dimension is masked with probability k/D,
    rows differ, and the cost is O(n·k) (a per-row top-k of random keys costs O(n·D log k)
    and dominated the training step).
    """
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"mask ratio must be in [0, 1), got {ratio}")
    k = max(1, round(ratio * dim)) if ratio > 0 else 0
    if k == 0:
        return torch.zeros(n_rows, 0, dtype=torch.long, device=device)
    perm = torch.randperm(dim, generator=generator).to(device)
    offset = torch.randint(0, dim, (n_rows, 1), generator=generator).to(device)
    return perm[(offset + torch.arange(k, device=device)) % dim]


class FeatureMAE(nn.Module):
    """Masked-dimension autoencoder over side features through an external projection ``P``.

    ``forward(f, project)`` returns ``(loss, mask_idx)``; ``project`` is the model's own
    feature projection (shared, so refining it refines the side features the model uses).
    Rows that are all zero (nodes without text) are ignored.
    """

    def __init__(self, in_dim: int, hidden: int, ratio: float, max_rows: int | None = None
                 ) -> None:
        super().__init__()
        self.ratio = float(ratio)
        self.max_rows = max_rows
        self.decoder = nn.Linear(hidden, in_dim)

    def forward(self, f: torch.Tensor, project: nn.Module,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``max_rows``: reconstruct a random subset of at most that many rows per call (an
        unbiased estimate of the full loss at a fraction of the cost)."""
        rows = torch.nonzero(f.abs().sum(1) > 0).flatten()
        if self.max_rows is not None and len(rows) > self.max_rows:
            pick = torch.randperm(len(rows), generator=generator)[: self.max_rows]
            rows = rows[pick.to(rows.device)]
        f = f[rows]
        idx = mask_dims(len(f), f.shape[1], self.ratio, generator, f.device)
        if len(f) == 0 or idx.shape[1] == 0:
            return f.sum() * 0.0, idx
        keep = torch.ones_like(f).scatter_(1, idx, 0.0)
        rec = self.decoder(project(f * keep))
        cos = nn.functional.cosine_similarity(rec.gather(1, idx), f.gather(1, idx), dim=1,
                                              eps=1e-8)
        return (1.0 - cos).mean(), idx
