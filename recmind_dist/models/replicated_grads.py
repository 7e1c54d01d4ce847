"""Gradients of a partitioned model's replicated parameters, summed over workers.

A partitioned model (:mod:`recmind_dist.graph.partitioned`) has two kinds of trainable
parameters: *sharded* ones (each worker holds its rows, e.g. the ID table E⁰; the halo and
fetch collectives already deliver every row's gradient to its owner) and *replicated* ones
(every worker holds the same copy, e.g. RecMind's projection, fallback MLP and gate). With
worker r's objective J_r, the single-process gradient of a replicated θ is

    ∂J/∂θ = Σ_r ∂J_r/∂θ

(J = Σ_r J_r: each worker differentiates only what it computed itself), so the replicated
gradients are all-reduced (summed) once per backward -- what DDP does for a replicated model,
done here without DDP, whose bucketed hooks would interleave with the model's own collectives.

:meth:`ReplicatedGrads.token` returns a zero scalar to add to the loss; its backward queues
:meth:`ReplicatedGrads.sum_over_workers` to run when the whole backward pass has finished
(``queue_callback``, as DDP's reducer does), after every other collective of the pass and
after every gradient is accumulated, in the same place on every worker. There it:

1. agrees on which parameters have a gradient anywhere (a parameter without one on every
   worker stays ``None``, as in a single process, e.g. the gate during RecMind's warm-up; one
   with a gradient on some worker gets zeros elsewhere, so Adam's per-tensor step count stays
   the single-process one on every worker and for every shard);
2. all-reduces the replicated parameters' gradients as one flat vector.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["ReplicatedGrads"]


class _AtBackwardEnd(torch.autograd.Function):
    """A zero scalar; its backward queues ``callback`` for the end of the backward pass."""

    @staticmethod
    def forward(ctx, anchor: torch.Tensor, callback: Callable[[], None]) -> torch.Tensor:
        ctx.callback = callback
        return anchor.new_zeros(())

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[None, None]:
        torch.autograd.Variable._execution_engine.queue_callback(ctx.callback)
        return None, None


class ReplicatedGrads:
    """Sums the gradients of ``replicated`` over workers after each backward (module
    docstring); ``sharded`` parameters only take part in the agreement on which parameters
    have a gradient. Both lists in the same order on every worker."""

    def __init__(self, replicated: list[nn.Parameter], sharded: list[nn.Parameter],
                 group: Any = None) -> None:
        self.replicated, self.sharded, self.group = replicated, sharded, group

    def token(self) -> torch.Tensor:
        """A zero scalar to add to the loss (every worker, every step): its backward
        schedules :meth:`sum_over_workers`."""
        return _AtBackwardEnd.apply(self.replicated[0], self.sum_over_workers)

    @torch.no_grad()
    def sum_over_workers(self) -> None:
        params = [*self.replicated, *self.sharded]
        anchor = params[0]
        present = torch.tensor([p.grad is not None for p in params], dtype=torch.float32,
                               device=anchor.device)
        dist.all_reduce(present, group=self.group)
        for p, n in zip(params, present.tolist(), strict=True):
            if n > 0 and p.grad is None:
                p.grad = torch.zeros_like(p)
        grads = [p.grad for p in self.replicated if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat, group=self.group)
        offset = 0
        for g in grads:
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()
