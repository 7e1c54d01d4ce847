"""GAT over LM-written profiles (after arXiv 2508.01514), in the framework's Recommender API.

Node features. Each user/item has a profile (LM-written, or the offline templated profile:
metadata + a summary of the user's TRAINING history, :mod:`recmind_dist.text.templates`),
embedded by the frozen encoder into ``t_v`` (:func:`recmind_dist.pipeline.features.
node_text_features`, cached). The initial GAT features are

    features='text':    x_v = W_p t_v + b_p                (learnable projection of frozen t_v)
    features='text_id': x_v = W_p t_v + b_p + e_v          (projection + ID embedding)
    features='id':      x_v = e_v                          (ablation: ID embeddings only)

Nodes without text get ``t_v = 0`` (so x_v = b_p [+ e_v]).

Propagation. L layers of multi-head attention (PyG ``GATConv``, ``heads`` heads of size
dim/heads concatenated, self-loops) over the undirected bipartite training graph
(2·|E_train| directed edges, both directions), with identity activation and layer-mean
readout as in LightGCN (non-linearities hurt collaborative filtering):

    H^{l+1} = GAT_l(H^l),  h = mean_{l=0..L} H^l,  score(u, i) = h_u · h_i.

Loss, per batch of (u, i⁺, j):

    L = BPR(h_u·h_i⁺, h_u·h_j) + α · mean(1 − cos(h_u, h_i⁺)) + λ/2 ‖x_u, x_i⁺, x_j‖² / B

(α = 0 is the "no cosine term" ablation). Negatives are robust: the trainer's uniform
negative j (never a training positive) is replaced, for a fraction ``hard_negative_ratio`` of
the batch, by a hard negative drawn uniformly from the current model's ranks
[``hard_negative_skip``, ``hard_negative_skip + hard_negative_pool``) of that user with the
user's training positives masked out. The top ranks are skipped because they are the likeliest
false negatives (unobserved positives: exactly the validation/test items). The rank table is
recomputed (one full-graph forward, one U×I score matrix, one ``topk``: vectorised) every
``hard_negative_refresh`` epochs, starting at epoch ``hard_negative_start``.

Cost. Every batch runs the full-graph forward (ml-100k: ~2.6k nodes, ~88k directed edges;
see ``benchmarks/gat_epoch.py``); ``forward_every = k`` reuses one forward's output for k
batches (the graph part's gradient then flows only on the first of the k — a stale-feature
approximation in the spirit of historical embeddings), documented for larger graphs.
"""

from __future__ import annotations

import logging
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from recmind_dist.losses import bpr_loss, l2_batch
from recmind_dist.models.base import Batch, Recommender
from recmind_dist.specs import GATLLMSpec

log = logging.getLogger(__name__)

Features = Literal["text", "id", "text_id"]


def bipartite_edge_index(n_users: int, train: np.ndarray) -> torch.Tensor:
    """[2, 2|E|] edge index over the stacked (users, items) node set, both directions."""
    u = torch.as_tensor(train[:, 0], dtype=torch.long)
    i = torch.as_tensor(train[:, 1], dtype=torch.long) + n_users
    return torch.stack([torch.cat([u, i]), torch.cat([i, u])], 0)


class GATLLM(Recommender):
    """``spec`` (GATLLMSpec) gives every setting; ``text`` is [U+I, d_text] frozen profile
    vectors (users first), None only with ``spec.features == "id"``."""

    def __init__(
        self, n_users: int, n_items: int, train: np.ndarray, text: np.ndarray | None,
        spec: GATLLMSpec,
    ) -> None:
        super().__init__()
        from torch_geometric.nn import GATConv, GATv2Conv

        features, dim, heads = spec.features, spec.dim, spec.heads
        if features != "id" and text is None:
            raise ValueError(f"features={features!r} needs profile vectors")
        self.spec = spec
        self.n_users, self.n_items = n_users, n_items
        self.features, self.alpha, self.reg = features, spec.alpha, spec.reg
        self.hn_ratio, self.hn_pool = spec.hard_negative_ratio, spec.hard_negative_pool
        self.hn_skip = spec.hard_negative_skip
        self.hn_refresh, self.hn_start = spec.hard_negative_refresh, spec.hard_negative_start
        self.forward_every = spec.forward_every
        n = n_users + n_items
        self.register_buffer("edge_index", bipartite_edge_index(n_users, train), persistent=False)
        self.register_buffer("train_pairs", torch.as_tensor(train, dtype=torch.long),
                             persistent=False)
        if features in ("text", "text_id"):
            self.register_buffer("text", torch.as_tensor(text, dtype=torch.float32),
                                 persistent=False)
            self.proj = nn.Linear(self.text.shape[1], dim)
            nn.init.xavier_uniform_(self.proj.weight)
            nn.init.zeros_(self.proj.bias)
        if features in ("id", "text_id"):
            self.embedding = nn.Embedding(n, dim)
            nn.init.normal_(self.embedding.weight, std=0.1)
        conv = GATConv if spec.gat_version == "v1" else GATv2Conv
        self.convs = nn.ModuleList(
            conv(dim, dim // heads, heads=heads, concat=True, dropout=spec.dropout,
                 add_self_loops=True) for _ in range(spec.layers))
        self.register_buffer("hard_items", torch.zeros(0, 0, dtype=torch.long), persistent=False)
        self._cache: tuple[torch.Tensor, torch.Tensor] | None = None
        self._step = 0

    # ---------------------------------------------------------------------------- forward
    def x0(self) -> torch.Tensor:
        if self.features == "id":
            return self.embedding.weight
        x = self.proj(self.text)
        return x + self.embedding.weight if self.features == "text_id" else x

    def propagate(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(layer-0 features x, layer-mean output h) for all U+I nodes."""
        x = self.x0()
        hs, h = [x], x
        for conv in self.convs:
            h = conv(h, self.edge_index)
            hs.append(h)
        return x, torch.stack(hs, 0).mean(0)

    def representations(self) -> tuple[torch.Tensor, torch.Tensor]:
        _, h = self.propagate()
        return h[: self.n_users], h[self.n_users:]

    # ---------------------------------------------------------------------- hard negatives
    @torch.no_grad()
    def refresh_hard_negatives(self) -> None:
        """Per user, ranks [skip, skip+pool) of the current scores, training positives masked."""
        was = self.training
        self.eval()
        hu, hi = self.representations()
        self.train(was)
        k = min(self.hn_skip + self.hn_pool, self.n_items - 1)
        out = torch.empty(self.n_users, k, dtype=torch.long, device=hu.device)
        tp = self.train_pairs
        for s in range(0, self.n_users, 1024):
            scores = hu[s: s + 1024] @ hi.T
            sel = (tp[:, 0] >= s) & (tp[:, 0] < s + 1024)
            scores[tp[sel, 0] - s, tp[sel, 1]] = -torch.inf
            out[s: s + 1024] = scores.topk(k, dim=1).indices
        # a user with < k free items would get masked positives in the tail: keep the free head
        self.hard_items = out[:, min(self.hn_skip, k - 1):]
        n_pos = torch.bincount(tp[:, 0], minlength=self.n_users)
        self._hard_len = torch.clamp(self.n_items - n_pos - min(self.hn_skip, k - 1), min=1,
                                     max=self.hard_items.shape[1])

    def on_epoch_start(self, epoch: int, steps_per_epoch: int) -> None:
        self._cache = None
        if self.hn_ratio <= 0 or epoch < self.hn_start:
            return
        if self.hard_items.numel() == 0 or (epoch - self.hn_start) % self.hn_refresh == 0:
            self.refresh_hard_negatives()

    def mix_negatives(self, batch: Batch) -> torch.Tensor:
        """Replace a ``hard_negative_ratio`` share of the uniform negatives by hard ones."""
        neg = batch.neg
        if self.hn_ratio <= 0 or self.hard_items.numel() == 0:
            return neg
        use = torch.rand(len(neg), device=neg.device) < self.hn_ratio
        if not use.any():
            return neg
        u = batch.users[use]
        col = (torch.rand(len(u), device=neg.device) * self._hard_len[u]).long()
        neg = neg.clone()
        neg[use] = self.hard_items[u, col]
        return neg

    # ------------------------------------------------------------------------------- loss
    def training_loss(self, batch: Batch, epoch: int) -> tuple[torch.Tensor, dict[str, float]]:
        if self._cache is None or self._step % self.forward_every == 0:
            x, h = self.propagate()
            self._cache = (x.detach(), h.detach())
        else:  # stale forward (forward_every > 1): gradient reaches layer-0 rows only
            x0 = self.x0()
            x, h = x0, self._cache[1] + (x0 - x0.detach())
        self._step += 1
        neg = self.mix_negatives(batch)
        nu = self.n_users
        u, i, j = h[batch.users], h[nu + batch.pos], h[nu + neg]
        parts = {"bpr": bpr_loss((u * i).sum(-1), (u * j).sum(-1))}
        if self.alpha > 0:
            parts["cos"] = self.alpha * (1 - F.cosine_similarity(u, i, dim=-1)).mean()
        parts["reg"] = self.reg * l2_batch(x[batch.users], x[nu + batch.pos], x[nu + neg])
        loss = sum(parts.values())
        return loss, {k: float(v.detach()) for k, v in parts.items()}


def stacked_text(features) -> np.ndarray:
    """[U+I, d] profile vectors (users first) from :class:`NodeFeatures`."""
    return np.concatenate([features.user_vec, features.item_vec], 0)
