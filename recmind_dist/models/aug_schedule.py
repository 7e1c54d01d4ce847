"""LLMRec's augmented sub-batches: every kept augmented triple once per epoch, in step with the
trainer's global batches and sharded like them over replicated workers.

At the start of an epoch the M kept, shuffled triples T are cut into S = ``steps_per_epoch``
(the trainer's number of GLOBAL batches) contiguous chunks of c = ⌈M/S⌉ triples, the last
ones shorter or empty:

    C_k = T[k·c : (k+1)·c],   k = 0 .. S−1.

Worker r of W (replicated data parallel) takes the r-th contiguous share of every chunk, as
:func:`recmind_dist.train.loop.shard_batches` shares a global batch of edges:

    C_k^r = C_k[⌊m_k·r/W⌋ : ⌊m_k·(r+1)/W⌋],   m_k = |C_k|,

so the W workers together visit every kept triple exactly once per epoch (W = 1: C_k^0 = C_k).
The loss weight that makes the averaged gradient the single-process one is LLMRec's
(:mod:`recmind_dist.models.llmrec`).
"""

from __future__ import annotations

import torch


class AugSchedule:
    """The epoch's chunks of augmented triples and this worker's share of each."""

    def __init__(self) -> None:
        self.rank, self.world = 0, 1
        self.triples: torch.Tensor | None = None  # the epoch's kept triples, in visit order
        self.chunk = 0  # c
        self.step = 0  # k of the next chunk

    def set_shard(self, rank: int, world: int) -> None:
        if world < 1 or not 0 <= rank < world:
            raise ValueError(f"need 0 <= rank < world, got rank {rank} of {world}")
        self.rank, self.world = int(rank), int(world)

    def start_epoch(self, triples: torch.Tensor, steps_per_epoch: int) -> None:
        """Cut ``triples`` [M, 3] into ``steps_per_epoch`` chunks (at least one)."""
        self.triples = triples
        self.chunk = -(-len(triples) // max(1, int(steps_per_epoch)))  # ⌈M/S⌉
        self.step = 0

    def next_share(self) -> torch.Tensor:
        """This worker's share C_k^r of the next chunk (empty once the chunks are used up)."""
        if self.triples is None:
            raise RuntimeError("no epoch started: call on_epoch_start(epoch, steps_per_epoch)")
        start = self.step * self.chunk
        chunk = self.triples[start : start + self.chunk]
        self.step += 1
        m = len(chunk)
        return chunk[(m * self.rank) // self.world : (m * (self.rank + 1)) // self.world]
