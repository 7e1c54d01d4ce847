"""Evaluation spread over the workers of a ``torch.distributed`` process group.

Worker r of W scores the r-th contiguous block of the users (``np.array_split``), and the
per-group metric sums and user counts are summed over workers (float64 ``all_reduce``), so
every worker ends with the metrics of the single-process evaluation (up to the order of
the float64 additions). Without an initialised process group there is one worker.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.distributed as dist


def eval_world() -> tuple[int, int]:
    """(rank, world size) of the default process group; (0, 1) without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def worker_share(users: np.ndarray, rank: int, world: int) -> np.ndarray:
    """This worker's contiguous block of ``users`` (sizes differ by at most one)."""
    return np.array_split(users, world)[rank]


def sum_over_workers(values: np.ndarray, world: int) -> np.ndarray:
    """Element-wise sum of ``values`` (float64) over the ``world`` workers."""
    if world == 1:
        return values
    t = torch.from_numpy(np.ascontiguousarray(values, dtype=np.float64))
    if dist.get_backend() == "nccl":  # NCCL reduces device tensors only
        t = t.to(torch.device("cuda", torch.cuda.current_device()))
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.cpu().numpy()
