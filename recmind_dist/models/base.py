"""The model contract: what the trainer, the evaluator and the pipeline rely on.

A :class:`Recommender` scores (user, item) by the dot product of its final representations
and returns its training loss for a BPR batch. Everything else a trainer may call is one of the
optional hooks declared here with a no-op default, so the trainer never asks which model it
holds (no ``isinstance``/``hasattr``):

* :meth:`Recommender.on_epoch_start` ``(epoch, steps_per_epoch)`` -- phase switches (RecMind's
  warm-up), per-epoch schedules (LLMRec's augmented chunks); ``steps_per_epoch`` counts the
  epoch's *global* batches.
* :meth:`Recommender.set_shard` ``(rank, world)`` -- replicated data parallel: this worker
  trains on slice ``rank`` of ``world`` of every global batch.
* :meth:`Recommender.set_gather` ``(fn)`` -- a differentiable all-gather for cross-worker
  contrastive negatives (None = single process).
* :meth:`Recommender.epoch_metrics` -- numbers worth logging after each epoch.
* :meth:`Recommender.probes` -- named per-node tensors for diagnostics (RecMind's gate γ).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

#: A differentiable all-gather over workers: [n, ...] per worker -> [world * n, ...].
GatherFn = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class Batch:
    """A BPR batch of local ids: users, their positives and sampled negatives."""

    users: torch.Tensor
    pos: torch.Tensor
    neg: torch.Tensor


class Recommender(nn.Module, ABC):
    """A model scores (user, item) by the dot product of final representations."""

    n_users: int
    n_items: int

    @abstractmethod
    def representations(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Final (user [U, d], item [I, d]) representations used for scoring."""

    @abstractmethod
    def training_loss(self, batch: Batch, epoch: int) -> tuple[torch.Tensor, dict[str, float]]:
        """Total loss for one batch and its named parts (for logging)."""

    @property
    def trainable(self) -> bool:
        return any(p.requires_grad for p in self.parameters())

    # ------------------------------------------------------------------ optional hooks
    def on_epoch_start(self, epoch: int, steps_per_epoch: int) -> None:
        """Called before the epoch's first batch; ``steps_per_epoch`` global batches follow."""

    def set_shard(self, rank: int, world: int) -> None:
        """Replicated data parallel: this worker sees slice ``rank`` of ``world`` of each
        global batch (single process: ``(0, 1)``)."""

    def set_gather(self, fn: GatherFn | None) -> None:
        """Cross-worker negatives: the all-gather a contrastive loss should use (None: local)."""

    def epoch_metrics(self) -> dict[str, float]:
        """Per-epoch diagnostics to log (e.g. LLMRec's pruning statistics)."""
        return {}

    def probes(self) -> dict[str, torch.Tensor]:
        """Named per-node diagnostics ([N, ...], users then items), e.g. RecMind's gate γ."""
        return {}
