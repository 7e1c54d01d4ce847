"""End-to-end language view for RecMind: node texts through a LoRA-adapted frozen LM.

For node v with text tokens x_v, the LM with LoRA adapters (W x + (α/r) B A x on the attention
projections, B zero-initialised; base weights frozen) gives the pooled vector

    e_v = pool(LM_LoRA(x_v)) − μ_{type(v)}

with μ the mean pooled vector over the nodes of v's type (users or items) that have text,
fixed at construction from the frozen LM (the same centring the precomputed path applies).
RecMind's projection and gate then use e exactly as they use precomputed vectors.

Propagation needs z for *every* node at every step, and an LM forward + backward over all
N texts per step is out of reach on CPU. So (as in cached-feature GNN training):

* :meth:`NodeTextTower.refresh` re-encodes all N texts without gradient into a table
  (RecMind calls it at the start of every epoch): the current adapters, slightly stale
  within an epoch;
* :meth:`NodeTextTower.forward` re-encodes a handful of nodes *with* gradient (RecMind: up to
  ``lora_nodes`` of the batch's users and positive items each step) and RecMind substitutes
  those rows, so BPR and the alignment loss reach the LoRA weights through them.

Only the LoRA matrices (and RecMind's own projection) train; the base LM stays bit-identical.
Nodes without text keep a zero row (RecMind's fallback MLP replaces it).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from recmind_dist.embed.encoder import LoraTextTower, load_hf, resolve_pooling

__all__ = ["REFRESH_BATCH", "NodeTextTower"]

#: Texts per LM call when all nodes are re-encoded (bounds the activation memory).
REFRESH_BATCH = 128


class NodeTextTower(nn.Module):
    """Pre-tokenized node texts + a LoRA text tower; rows follow RecMind's node order
    (users, then items).

    Args:
        texts: one string per node (``""`` or None = no text).
        n_users: the first ``n_users`` texts are users (for the per-type centring).
        model: local LM directory or hub id (None = the bundled MiniLM).
        pooling: ``auto`` | ``mean`` | ``last``.
        max_length: token budget per text.
        r, alpha: LoRA rank and scale.

    :meth:`refresh` encodes :data:`REFRESH_BATCH` texts per LM call.
    """

    def __init__(self, texts: Sequence[str | None], n_users: int, model: str | Path | None,
                 pooling: str, max_length: int, r: int, alpha: int) -> None:
        super().__init__()
        tok, lm = load_hf(model, "float32", field="embed.model")
        pooling = resolve_pooling(lm.config, pooling)
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token or tok.unk_token
        tok.padding_side = "right"
        self.tower = LoraTextTower(lm, pooling=pooling, r=r, alpha=alpha)
        clean = ["" if t is None else str(t) for t in texts]
        has = np.array([bool(t.strip()) for t in clean])
        enc = tok([t if h else "" for t, h in zip(clean, has, strict=True)], padding="longest",
                  truncation=True, max_length=max_length, return_tensors="pt")
        self.register_buffer("input_ids", enc["input_ids"], persistent=False)
        self.register_buffer("attention_mask", enc["attention_mask"], persistent=False)
        self.register_buffer("has_text", torch.from_numpy(has), persistent=False)
        self.register_buffer("is_user", torch.arange(len(clean)) < n_users, persistent=False)
        self.dim = int(lm.config.hidden_size)
        self.register_buffer("offset", torch.zeros(len(clean), self.dim), persistent=False)
        with torch.no_grad():  # μ per node type from the frozen LM (LoRA's B = 0 here)
            raw = self._encode_all()
            for mask in (self.is_user, ~self.is_user):
                sel = mask & self.has_text
                if bool(sel.any()):
                    self.offset[mask] = raw[sel].mean(0)
        # the first refresh() is this encode: kept until then instead of encoding twice
        self._first: torch.Tensor | None = self._centred(raw)

    def _pooled(self, nodes: torch.Tensor) -> torch.Tensor:
        mask = self.attention_mask[nodes]
        width = max(1, int(mask.sum(1).max()))  # trim the padding this chunk does not need
        return self.tower(self.input_ids[nodes, :width], mask[:, :width])

    def _encode_all(self) -> torch.Tensor:
        n = len(self.input_ids)
        out = torch.zeros(n, self.dim, device=self.input_ids.device)
        idx = torch.nonzero(self.has_text).squeeze(1)
        lengths = self.attention_mask[idx].sum(1)
        idx = idx[torch.argsort(lengths, descending=True)]  # similar lengths per chunk
        for s in range(0, len(idx), REFRESH_BATCH):
            chunk = idx[s: s + REFRESH_BATCH]
            out[chunk] = self._pooled(chunk)
        return out

    def _centred(self, e: torch.Tensor) -> torch.Tensor:
        return torch.where(self.has_text[:, None], e - self.offset, torch.zeros_like(e))

    @torch.no_grad()
    def refresh(self) -> torch.Tensor:
        """``e`` for every node [N, dim] with the current adapters (no gradient)."""
        if self._first is not None:  # adapters unchanged since construction
            e, self._first = self._first, None
            return e
        was = self.tower.training
        self.tower.eval()
        e = self._encode_all()
        self.tower.train(was)
        return self._centred(e)

    def forward(self, nodes: torch.Tensor) -> torch.Tensor:
        """``e`` for ``nodes`` [n, dim], differentiable in the LoRA weights (no-text: 0)."""
        self._first = None  # adapters may change from here on
        nodes = nodes[self.has_text[nodes]]
        if len(nodes) == 0:
            return torch.zeros(0, self.dim, device=self.input_ids.device)
        return self._pooled(nodes) - self.offset[nodes]

    def text_nodes(self, nodes: torch.Tensor) -> torch.Tensor:
        """The subset of ``nodes`` that has text (the rows :meth:`forward` returns)."""
        return nodes[self.has_text[nodes]]
