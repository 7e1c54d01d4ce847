"""Differentiable collectives for cross-worker losses.

:func:`all_gather_autograd` concatenates every worker's tensor along dim 0 *with gradients*:
``torch.distributed.nn.functional.all_gather`` all-reduces the incoming gradient in its
backward, so worker ``r`` receives ``Σ_w ∂L_w/∂x_r``. Used as the ``gather`` hook of
``recmind_dist.losses.symmetric_infonce``: negatives then come from all workers' batches.
With each worker's loss being its share of a global loss (what DDP averages), the gradient
equals the single-process gradient over the concatenated batch.

Without an initialised process group (or with one worker) it is the identity.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

__all__ = ["all_gather_autograd", "world_info", "all_reduce_sum"]


def world_info() -> tuple[int, int]:
    """(rank, world size); (0, 1) without a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def all_gather_autograd(x: torch.Tensor) -> torch.Tensor:
    """``cat([x_0, ..., x_{W-1}], 0)`` over workers, differentiable; equal shapes required."""
    _, world = world_info()
    if world == 1:
        return x
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x.contiguous()), dim=0)


def all_reduce_sum(values: list[float], device: torch.device | str = "cpu") -> list[float]:
    """Sum a few floats over workers (float64); the identity without a process group."""
    _, world = world_info()
    if world == 1:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()
