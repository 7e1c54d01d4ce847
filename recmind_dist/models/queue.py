"""MoCo-style negatives: a FIFO queue of past keys and the momentum (EMA) key encoder update.

* :class:`KeyQueue` keeps the last ``size`` keys in a ring buffer. ``enqueue(k)`` writes the
  rows of ``k`` (detached) in order, overwriting the oldest; ``keys()`` returns the filled
  rows (a constant for the loss), ``contents()`` the same rows oldest-first. With
  ``groups = G`` it is G rings that always move together (keys ``[G, n, dim]``), e.g. the
  user and the item queue of one view, fed to a batched loss.
* :func:`momentum_update`: ``θ_k ← m·θ_k + (1 − m)·θ_q`` for every (key, query) parameter
  pair, so keys drift slowly and the queue's keys stay consistent with each other
  (He et al., MoCo, CVPR 2020).
"""

from __future__ import annotations

import torch
from torch import nn


class KeyQueue(nn.Module):
    """FIFO ring buffer of ``size`` keys of dimension ``dim`` (a buffer: saved, not trained);
    ``groups``: that many rings side by side, buffer ``[groups, size, dim]``."""

    def __init__(self, dim: int, size: int, groups: int | None = None) -> None:
        super().__init__()
        if size < 0:
            raise ValueError("queue size must be >= 0")
        self.size = int(size)
        shape = (self.size, dim) if groups is None else (groups, self.size, dim)
        self.register_buffer("buf", torch.zeros(shape))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))
        self._ptr = self._count = 0  # the two buffers' values, kept in Python between saves

    def _save_to_state_dict(self, *args, **kwargs) -> None:
        self.ptr.fill_(self._ptr)  # the buffers follow the Python copies only when saved
        self.count.fill_(self._count)
        super()._save_to_state_dict(*args, **kwargs)

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._ptr, self._count = int(self.ptr), int(self.count)

    def __len__(self) -> int:
        return self._count

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        """Append ``keys`` [n, dim] ([groups, n, dim]; oldest rows are overwritten when full)."""
        if self.size == 0 or keys.numel() == 0:
            return
        if keys.shape[-2] > self.size:  # only the newest `size` rows can survive
            keys = keys[..., -self.size :, :]
        n, p = keys.shape[-2], self._ptr
        first = min(n, self.size - p)  # up to the end of the ring, the rest from its start
        self.buf[..., p : p + first, :] = keys[..., :first, :]  # (no_grad: copies, casts)
        if first < n:
            self.buf[..., : n - first, :] = keys[..., first:, :]
        self._ptr, self._count = (p + n) % self.size, min(self.size, self._count + n)

    def keys(self) -> torch.Tensor:
        """The filled rows (unordered use: negatives for a contrastive loss)."""
        return self.buf[..., : self._count, :] if self._count < self.size else self.buf

    def contents(self) -> torch.Tensor:
        """The filled rows, oldest first."""
        c, p = self._count, self._ptr
        if c < self.size:
            return self.buf[..., :c, :]
        return torch.cat([self.buf[..., p:, :], self.buf[..., :p, :]], -2)

    @torch.no_grad()
    def reset(self) -> None:
        self.buf.zero_()
        self.ptr.zero_()
        self.count.zero_()
        self._ptr = self._count = 0


def upgrade_per_type_queues(state_dict: dict, prefix: str, types: tuple[str, ...],
                            views: tuple[str, ...]) -> None:
    """Rewrite, in place, a state dict written before the grouped queues -- one ring per
    (type, view) under ``{prefix}{type}_{view}.`` -- to one grouped queue per view under
    ``{prefix}{view}.`` (runs logged to MLflow before then still load). The rings had moved
    together unless the types aligned different counts; then the smaller fill and the first
    type's position are kept (a queue only holds negatives)."""
    for view in views:
        old = [f"{prefix}{t}_{view}." for t in types]
        if old[0] + "buf" not in state_dict:
            continue
        parts = {k: [state_dict.pop(o + k) for o in old] for k in ("buf", "ptr", "count")}
        state_dict[f"{prefix}{view}.buf"] = torch.stack(parts["buf"])
        state_dict[f"{prefix}{view}.ptr"] = parts["ptr"][0]
        state_dict[f"{prefix}{view}.count"] = torch.stack(parts["count"]).min()


@torch.no_grad()
def momentum_update(key_module: nn.Module, query_module: nn.Module, m: float) -> None:
    """θ_k ← m·θ_k + (1 − m)·θ_q over matching parameters (``m = 0`` copies the query)."""
    keys, queries = list(key_module.parameters()), list(query_module.parameters())
    if len(keys) != len(queries):
        raise ValueError("key and query modules must have matching parameters")
    torch._foreach_lerp_(keys, queries, 1.0 - m)  # θ_k + (1−m)(θ_q − θ_k)
