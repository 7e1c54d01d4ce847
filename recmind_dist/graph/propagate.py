"""Sparse propagation ``Y = Â X`` for a symmetric Â, differentiable in X.

Because Â = Âᵀ, the gradient ∂L/∂X = Âᵀ ∂L/∂Y = Â ∂L/∂Y reuses the same CSR matrix: no
transpose is built in the backward pass (torch's generic sparse backward would build one).
"""

from __future__ import annotations

import torch


class _SymmetricSpMM(torch.autograd.Function):
    @staticmethod
    def forward(ctx, adj: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        ctx.adj = adj
        return torch.sparse.mm(adj, x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[None, torch.Tensor]:
        return None, torch.sparse.mm(ctx.adj, grad.contiguous())


def propagate(adj: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """One propagation step ``Â X`` (Â symmetric sparse CSR, X dense).

    ``adj`` may also be a partitioned Â (:class:`recmind_dist.graph.partitioned.
    PartitionedAdjacency`): then ``x`` is this worker's rows and the halo is exchanged.
    """
    if not isinstance(adj, torch.Tensor):
        return adj.propagate(x)
    return _SymmetricSpMM.apply(adj, x)


def lightgcn_layers(adj: torch.Tensor, x0: torch.Tensor, n_layers: int) -> list[torch.Tensor]:
    """[E^0, Â E^0, Â² E^0, ...] (n_layers + 1 tensors)."""
    out = [x0]
    for _ in range(n_layers):
        out.append(propagate(adj, out[-1]))
    return out
