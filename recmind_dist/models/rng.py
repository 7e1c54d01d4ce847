"""A model's own random source: a ``torch.Generator`` seeded from the run seed.

Draws made inside ``training_loss`` (SimGCL's noise, the softmax loss's extra negatives) come
from this generator rather than torch's global one, so they depend on the run seed alone and
not on what else drew from the global RNG. The generator lives on the device of its first
use (one generator per device type would draw different streams), and its state is part of
the model's ``state_dict`` (``_extra_state``), so a run resumed from a checkpoint draws what
the uninterrupted run would have drawn.
"""

from __future__ import annotations

import torch
from torch import nn


class SeededGenerator(nn.Module):
    """``torch.Generator`` seeded with ``seed``, created on the device of its first use."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        self.seed = int(seed)
        self._generator: torch.Generator | None = None
        self._pending: torch.Tensor | None = None  # state loaded before the first draw

    def on(self, device: torch.device) -> torch.Generator:
        """The generator, created (and seeded, or given a loaded state) on first use."""
        if self._generator is None:
            self._generator = torch.Generator(device=device).manual_seed(self.seed)
            if self._pending is not None:
                self._generator.set_state(self._pending)
                self._pending = None
        return self._generator

    def get_extra_state(self) -> torch.Tensor:
        if self._generator is not None:
            return self._generator.get_state()
        if self._pending is not None:
            return self._pending.clone()
        return torch.empty(0, dtype=torch.uint8)  # nothing drawn yet: the seed decides

    def set_extra_state(self, state: torch.Tensor) -> None:
        if state.numel() == 0:
            self._generator, self._pending = None, None
        elif self._generator is not None:
            self._generator.set_state(state)
        else:
            self._pending = state.clone()
