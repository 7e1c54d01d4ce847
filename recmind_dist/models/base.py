"""The interface the trainer and the evaluator rely on."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from torch import nn


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

    def on_epoch_start(self, epoch: int) -> None:
        """Hook for phase switches (e.g. RecMind's warm-up)."""
