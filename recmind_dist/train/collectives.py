"""Differentiable collectives for cross-worker losses.

:func:`all_gather_autograd` concatenates every worker's tensor along dim 0 *with gradients*:
``torch.distributed.nn.functional.all_gather`` all-reduces the incoming gradient in its
backward, so worker ``r`` receives ``Σ_w ∂L_w/∂x_r``. Used as the ``gather`` hook of
``recmind_dist.losses.symmetric_infonce``: negatives then come from all workers' batches.
Every worker then computes the same global loss over all rows; DDP's gradient mean gives
the single-process gradient over the concatenated batch. Row counts may differ per worker.

Without an initialised process group (or with one worker) it is the identity.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

__all__ = ["all_gather_autograd", "all_reduce_sum", "world_info"]


def world_info() -> tuple[int, int]:
    """(rank, world size); (0, 1) without a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def all_gather_autograd(x: torch.Tensor) -> torch.Tensor:
    """``cat([x_0, ..., x_{W-1}], 0)`` over workers, differentiable.

    The first dimension may differ between workers (e.g. the distinct nodes of each
    worker's batch): sizes are exchanged first, rows padded to the largest and cut again.
    """
    _, world = world_info()
    if world == 1:
        return x
    import warnings

    from torch.distributed.nn.functional import all_gather

    n = torch.tensor([x.shape[0]], dtype=torch.int64, device=x.device)
    sizes = [torch.zeros_like(n) for _ in range(world)]
    dist.all_gather(sizes, n)
    sizes_l = [int(s) for s in sizes]
    m = max(sizes_l)
    x = x.contiguous()
    if x.shape[0] < m:
        x = torch.cat([x, x.new_zeros((m - x.shape[0], *x.shape[1:]))], 0)
    with warnings.catch_warnings():  # deprecated in favour of the functional collectives
        warnings.simplefilter("ignore", FutureWarning)
        parts = all_gather(x)
    if all(s == m for s in sizes_l):
        return torch.cat(parts, 0)
    return torch.cat([p[:s] for p, s in zip(parts, sizes_l, strict=True)], 0)


def all_reduce_sum(values: list[float], device: torch.device | str = "cpu") -> list[float]:
    """Sum a few floats over workers (float64); the identity without a process group."""
    _, world = world_info()
    if world == 1:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def all_reduce_max(values: list[float], device: torch.device | str = "cpu") -> list[float]:
    """Element-wise maximum of a few floats over workers; the identity without a group."""
    _, world = world_info()
    if world == 1:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t.tolist()
