"""RecMind's alignment of the language view with the graph view (MoCo-style InfoNCE).

For the same number k of the batch's distinct users and distinct positive items
(:func:`recmind_dist.models.batch_nodes.distinct_batch_nodes`, k = ``align_nodes`` or fewer),
with x̂ = x/‖x‖, z the language view and g the graph view (the caller's rows):

    L_align = ½ [ InfoNCE(ẑ, ĝ) over users + InfoNCE(ẑ, ĝ) over items ]

:func:`recmind_dist.losses.symmetric_infonce` at temperature τ (``tau``), both types in one
batched call ([2, k, d] views), with in-batch negatives plus FIFO queues (``queue_size`` keys
per type, :class:`recmind_dist.models.queue.KeyQueue`): ``queues["z"]`` holds keys ẑ_k from a
momentum copy of the language projection,

    θ_k ← m θ_k + (1 − m) θ       (m = ``momentum``; :meth:`Alignment.momentum_step`, before
                                   each step's keys; no-text nodes key with their detached z)

and ``queues["g"]`` holds detached past graph views. ``align_grad = language`` computes ĝ
without gradient (a target: z learns to predict the collaborative embedding); ``both`` trains
both sides. The gather hook (:meth:`Alignment.set_gather`; None = identity) is a differentiable
all-gather a distributed trainer installs, so negatives (and queued keys) span all workers.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from recmind_dist.losses import gather_rows, symmetric_infonce
from recmind_dist.models.base import GatherFn
from recmind_dist.models.language_view import LanguageView, TextProjector
from recmind_dist.models.queue import KeyQueue, momentum_update, upgrade_per_type_queues
from recmind_dist.specs import RecMindSpec

__all__ = ["Alignment"]

#: A differentiable all-gather over workers: [n, ...] per worker -> [world · n, ...].


class Alignment(nn.Module):
    """Symmetric InfoNCE between ẑ and ĝ with grouped momentum queues (module docstring).

    ``key_proj``: the momentum copy of ``proj`` (frozen, updated by :meth:`momentum_step`);
    ``queues``: one :class:`KeyQueue` per view (``z``, ``g``), each a user and an item ring
    that move together (both types align the same number of nodes a step)."""

    def __init__(self, proj: TextProjector, spec: RecMindSpec) -> None:
        super().__init__()
        self.spec = spec
        self.key_proj = copy.deepcopy(proj)
        for p in self.key_proj.parameters():
            p.requires_grad_(False)
        self.queues = nn.ModuleDict({view: KeyQueue(spec.dim, spec.queue_size, groups=2)
                                     for view in ("z", "g")})
        self.gather: GatherFn | None = None

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        # runs before the queues load: state dicts with one queue per node type still load
        upgrade_per_type_queues(state_dict, prefix + "queues.", ("user", "item"), ("z", "g"))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def set_gather(self, fn: GatherFn | None) -> None:
        """Install the cross-worker all-gather (None: this process's rows only)."""
        self.gather = fn

    def momentum_step(self, proj: TextProjector) -> None:
        """θ_k ← m θ_k + (1 − m) θ for the key projection (before the step's keys)."""
        momentum_update(self.key_proj, proj, self.spec.momentum)

    @torch.no_grad()
    def keys(self, language: LanguageView, nodes: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Momentum-encoder keys ẑ_k for ``nodes`` (no-text nodes: the detached fallback z)."""
        k = self.key_proj(language.text_vec.index_select(0, nodes))
        if len(language.fallback_idx):
            k = torch.where(language.has_text[nodes, None], k, z[nodes].detach())
        return F.normalize(k, dim=1)

    def forward(self, z: torch.Tensor, graph_rows: Callable[[torch.Tensor], torch.Tensor],
                nodes: torch.Tensor, language: LanguageView) -> torch.Tensor:
        """L_align for ``nodes`` (k users then k items); ``graph_rows(nodes)`` gives their
        graph view. Enqueues this step's keys and graph views afterwards."""
        a, b = self.pair_rows(z, graph_rows, nodes)
        shape = (2, -1, z.shape[1])
        return self.contrast(a.view(shape), b.view(shape),
                             self.keys(language, nodes, z).view(shape), self.gather)

    def pair_rows(self, z: torch.Tensor, graph_rows: Callable[[torch.Tensor], torch.Tensor],
                  nodes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(ẑ, ĝ) of ``nodes`` as ``[n, d]`` each: the language view with gradient, the graph
        view with gradient only for ``align_grad = both``."""
        a = F.normalize(z.index_select(0, nodes), dim=1)
        # language-side alignment: the graph view is a target, not trained here
        with torch.set_grad_enabled(self.spec.align_grad == "both" and torch.is_grad_enabled()):
            b = F.normalize(graph_rows(nodes), dim=1)
        return a, b

    def contrast(self, a: torch.Tensor, b: torch.Tensor, keys: torch.Tensor,
                 gather: GatherFn | None) -> torch.Tensor:
        """The symmetric InfoNCE of ẑ ``a`` and ĝ ``b`` (``[2, k, d]``: users, items) against
        the queues, then ``keys`` (the momentum keys of the same nodes) and ĝ enqueued --
        every row after ``gather`` (None: as given)."""
        qz, qg = self.queues["z"], self.queues["g"]
        loss = symmetric_infonce(a, b, self.spec.tau, qz.keys(), qg.keys(), gather)
        with torch.no_grad():
            qz.enqueue(gather_rows(keys, gather))
            qg.enqueue(gather_rows(b.detach(), gather))
        return loss
