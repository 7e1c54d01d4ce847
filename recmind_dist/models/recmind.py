"""RecMind (arXiv 2509.06286): LightGCN with language features fused inside every layer.

Notation: N = U + I nodes (users first), E⁰ the trainable ID table [N, d], Â the normalised
bipartite adjacency, d̃_v = log(1+deg_v)/max log(1+deg) the normalised training degree, e_v the
frozen LM vector of node v's text (precomputed by the embedding job).

**Language view.** For nodes with text, z_v = s · u_v/‖u_v‖ with u_v = W_proj ē_v + MLP(ē_v)
(the adapter: a two-layer ReLU MLP of width ``adapter_hidden``, residual to the linear
projection; 0 = projection only), ē_v the LM vector minus the mean over nodes of its type
with text (removes the encoder's common direction), projected once onto its top ``text_pca``
principal directions (a fixed map; makes the per-step projection of all N nodes cheaper), and s a trainable scale initialised to
0.1·√d, the expected norm of an ID row. Without the fixed norm, Adam on the scale-free
InfoNCE grows ‖z‖ by orders of magnitude within an epoch and the gate saturates.
For nodes without text (zero LM vector, ``has_text = False``) z_v = MLP_fb([E⁰_v ‖ d̃_v])
(``fallback = mlp``) or 0 (``fallback = zero``); ``fallback_mask`` records which nodes use it.

``id_init = text`` starts E⁰'s rows with text at the top-d principal components of ē (scaled
to LightGCN's N(0, 0.1²) spread) instead of random rows.

**Gated propagation** (l = 0..L, one gate per layer):

    γ_v^l = σ(w_lᵀ [E_v^l ‖ z_v ‖ d̃_v] + b_l)
    Ẽ^l   = (1 − γ^l) ⊙ E^l + γ^l ⊙ z
    E^{l+1} = Â Ẽ^l
    h     = 1/(L+1) Σ_{l=0..L} Ẽ^l              (final representation; score(u,i) = h_uᵀ h_i)

A node without any training edge (e.g. an unseen item of a cold-item split) has an ID row that
never received a positive signal, so its gate is pinned to γ ≡ 1 (``isolated_text_only``,
learned gate only): its h is exactly z. The layer mean is over the *fused* states Ẽ^l, so z reaches h directly: a cold item (no
training edge, E^{l≥1} = 0) still gets h = 1/(L+1)[(1−γ⁰)E⁰ + Σ_l γ^l z] and can be ranked.
With γ ≡ 0 (``variant=fixed_gate, fixed_gamma=0``), Ẽ^l = E^l bit for bit and h is exactly
LightGCN's layer mean (same ops, same order); with also λ = 0 (and ``warm_negatives=False``
or a split where every item has a training edge) the training loss is LightGCN's.

With ``isolated_norm = warm_mean`` an isolated item is scored with z's direction at the mean
‖h‖ of the items with edges (‖h‖ of a trained item carries its popularity, the scale of an
untrained z nothing); the default keeps z as it is.

**Cold-item dropout** (``cold_dropout = p``, learned gate only, where an edgeless item's h is
exactly z): in the joint phase's BPR each triple's positive and negative representation is
replaced by its z, independently with probability p (DropoutNet, Volkovs et al. 2017):

    s(u,i) = h_uᵀ (m_i z_i + (1 − m_i) h_i),  m_i ~ Bernoulli(p)

so z is trained to rank against items with edges, on their scale, as an unseen item will be.

**Alignment.** The graph view g = 1/(L+1) Σ_l E^l (the un-fused states: g has no direct copy of
the node's own z, so the gate cannot trivially satisfy the loss; ``align_view = fused`` uses h
instead). For the batch's unique users and unique positive items separately,

    L_align = ½ [ InfoNCE(ẑ, ĝ) over users + InfoNCE(ẑ, ĝ) over items ]

over k randomly chosen of each type (k = ``align_nodes``, or fewer when the batch has fewer
of a type; the same k for both, so the two terms are one batched call), with x̂ = x/‖x‖,
:func:`recmind_dist.losses.symmetric_infonce` at temperature τ, in-batch
negatives plus FIFO queues per node type (MoCo): ``queues["z"]`` holds keys ẑ_k from a
momentum copy of the projection (θ_k ← m θ_k + (1−m) θ, updated before each step; no-text
nodes use the detached fallback output) and ``queues["g"]`` holds detached past graph views
(each with a user and an item ring). ``self.gather`` (None
= identity) is the hook a distributed trainer replaces with a differentiable all-gather.

**End-to-end LoRA** (``text_tower``, spec ``encoder: lora``): e_v comes from the LM with
LoRA adapters instead of the embedding job's cache (:mod:`recmind_dist.models.lora_text`):
all rows are re-encoded without gradient at each epoch start, and each step re-encodes up
to ``lora_nodes`` of the batch's users and positive items with gradient, so BPR and
L_align train the adapters through those rows. No PCA on this path.

**Two phases.** Epochs 1..T_w (``warmup_epochs``): L = L_align only (no BPR term at all, so
the BPR gradient is exactly zero). Then L = BPR(h) + reg·L2(E⁰_batch) + λ·L_align, the
regulariser being LightGCN's (λ/2 ‖·‖² of the batch's layer-0 rows / B). With
``warm_negatives`` (default) BPR triples whose sampled negative has no training edge are
dropped: in a cold-start protocol unseen items are unknown at training time, and pushing their
text down as negatives would teach the adapter to bury exactly the items to be ranked. (A
random split leaves only a handful of such items.)

**Variants** (``variant``): ``full``; ``no_align`` (λ = 0 and no warm-up); ``late_fusion``
(plain LightGCN propagation, then h = [g ‖ z] (``late_fusion = concat``) or (g + z)/2
(``mean``)); ``fixed_gate`` (γ^l ≡ ``fixed_gamma``, no gate parameters); ``llm_only`` (scores
with z alone: h = z, BPR on z, no alignment); ``no_warmup`` (T_w = 0).
"""

from __future__ import annotations

import copy
import logging
import math
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from recmind_dist.graph.propagate import layer_mean, propagate
from recmind_dist.losses import bpr_loss, gather_rows, symmetric_infonce
from recmind_dist.models.base import Batch, Recommender
from recmind_dist.models.gated_propagation import gate_constants, gated_propagation
from recmind_dist.models.inputs import NodeFeatures
from recmind_dist.models.lightgcn import layer0_l2
from recmind_dist.models.lora_text import NodeTextTower
from recmind_dist.models.queue import KeyQueue, momentum_update, upgrade_per_type_queues

log = logging.getLogger(__name__)

Variant = Literal["full", "no_align", "late_fusion", "fixed_gate", "llm_only", "no_warmup"]


def _centered(vec: np.ndarray, has: np.ndarray) -> np.ndarray:
    """Subtract the mean LM vector of the nodes with text (rows without text stay zero).

    Sentence-encoder vectors of texts written from one template share a large common
    direction (cosines of unrelated MiniLM movie descriptions are ~0.3-0.6); removing it
    leaves the part that tells nodes apart."""
    out = np.array(vec, dtype=np.float32, copy=True)
    if has.any():
        out[has] -= out[has].mean(0, keepdims=True)
    out[~has] = 0.0
    return out


def _pca(vec: np.ndarray, has: np.ndarray, k: int) -> np.ndarray:
    """Project (centred) rows onto the top-``k`` principal directions of the rows with text,
    rescaled so the mean row norm is unchanged (0 or k >= dim: unchanged). A fixed linear map
    of frozen vectors, it loses little and makes the per-step projection of all N nodes
    dim/k times cheaper."""
    if k <= 0 or k >= vec.shape[1] or has.sum() <= k:
        return vec
    _, _, vt = np.linalg.svd(vec[has].astype(np.float64), full_matrices=False)
    out = (vec @ vt[:k].T).astype(np.float32)
    before = np.linalg.norm(vec[has], axis=1).mean()
    after = np.linalg.norm(out[has], axis=1).mean()
    if after > 0:
        out *= before / after
    out[~has] = 0.0
    return out


class TextProjector(nn.Module):
    """z = W_proj e + W₂ ReLU(W₁ e): linear projection plus a small residual adapter MLP."""

    def __init__(self, in_dim: int, out_dim: int, hidden: int) -> None:
        super().__init__()
        self.proj = nn.Linear(in_dim, out_dim)
        self.adapter = (
            nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, out_dim))
            if hidden > 0 else None
        )
        if self.adapter is not None:  # start as the plain projection; the MLP learns a residual
            nn.init.zeros_(self.adapter[2].weight)
            nn.init.zeros_(self.adapter[2].bias)

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        z = self.proj(e)
        return z if self.adapter is None else z + self.adapter(e)


class _RowsAtNorm(torch.autograd.Function):
    r"""z = s · u/‖u‖ row by row (s a scalar), with the backward written out:

        ∂u = (s/‖u‖) (g − û (û·g)),   ∂s = Σ_v g_v·û_v

    one autograd node instead of norm → clamp → div → mul, whose backward forms u's gradient
    in two [N, d] parts and adds them."""

    @staticmethod
    def forward(ctx, u: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        norm = torch.linalg.vector_norm(u, dim=1).clamp_min_(1e-12)
        r = s / norm
        ctx.save_for_backward(u, norm, r)
        return u * r.unsqueeze(1)

    @staticmethod
    @once_differentiable
    def backward(ctx, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        u, norm, r = ctx.saved_tensors
        t = (g * u).sum(1)  # g·u per row
        g_u = (g * r.unsqueeze(1)).addcmul_(u, (r * t / norm.square()).unsqueeze(1), value=-1.0)
        return g_u, (t / norm).sum()


class RecMind(Recommender):
    def __init__(
        self,
        n_users: int,
        n_items: int,
        adj: torch.Tensor,
        features: NodeFeatures,
        degree: np.ndarray,
        deg_norm: np.ndarray,
        dim: int = 64,
        n_layers: int = 3,
        reg: float = 1e-4,
        tau: float = 0.2,
        lambda_align: float = 0.1,
        warmup_epochs: int = 3,
        queue_size: int = 1024,
        momentum: float = 0.99,
        adapter_hidden: int = 0,
        variant: Variant = "full",
        gate_init: float = 0.1,
        fixed_gamma: float = 0.1,
        late_fusion: Literal["concat", "mean"] = "concat",
        fallback: Literal["mlp", "zero"] = "mlp",
        fallback_hidden: int = 64,
        align_view: Literal["graph", "fused"] = "graph",
        isolated_text_only: bool = True,
        warm_negatives: bool = True,
        align_grad: Literal["both", "language"] = "both",
        text_pca: int = 64,
        align_nodes: int = 64,
        text_tower: NodeTextTower | None = None,
        lora_nodes: int = 64,
        id_init: Literal["random", "text"] = "random",
        isolated_norm: Literal["z", "warm_mean"] = "z",
        cold_dropout: float = 0.2,
    ) -> None:
        super().__init__()
        n = n_users + n_items
        if features.user_vec.shape[0] != n_users or features.item_vec.shape[0] != n_items:
            raise ValueError("features must have one row per local user and item")
        self.n_users, self.n_items, self.n_layers, self.reg = n_users, n_items, n_layers, reg
        self.adj = adj
        # created first and initialised like LightGCN's, so the same seed gives the same E⁰
        self.embedding = nn.Embedding(n, dim)
        nn.init.normal_(self.embedding.weight, std=0.1)

        self.variant = variant
        self.tau = tau
        self.momentum = momentum
        self.late_fusion = late_fusion
        self.fallback_kind = fallback
        self.align_view = align_view
        self.warm_negatives = warm_negatives
        self.align_grad = align_grad
        self.align_nodes = int(align_nodes)
        if not 0.0 <= cold_dropout < 1.0:
            raise ValueError(f"cold_dropout must be in [0, 1), got {cold_dropout}")
        self.cold_dropout = float(cold_dropout)
        # effective settings of the variant
        self.gate_mode = {"fixed_gate": "fixed", "late_fusion": "none",
                          "llm_only": "none"}.get(variant, "learned")  # fmt: skip
        no_align = variant in ("no_align", "llm_only")
        self.lambda_align = 0.0 if no_align else float(lambda_align)
        self.warmup_epochs = 0 if (no_align or variant == "no_warmup" or self.lambda_align == 0
                                   ) else int(warmup_epochs)  # fmt: skip
        self.fixed_gamma = float(fixed_gamma)
        self.phase = "joint"
        self.gather = None  # distributed trainers set a differentiable all-gather here

        has = np.concatenate([features.user_has_text, features.item_has_text], 0)
        self.text_tower = text_tower
        self.lora_nodes = int(lora_nodes)
        self._grad_nodes: torch.Tensor | None = None  # nodes re-encoded with grad this step
        if text_tower is not None:  # end-to-end: e from the LoRA LM, centred, no PCA
            if len(text_tower.has_text) != n:
                raise ValueError("text_tower must hold one text per node (users, then items)")
            has = text_tower.has_text.cpu().numpy()
            text = text_tower.refresh().cpu().numpy()
        else:
            text = np.concatenate([_centered(features.user_vec, features.user_has_text),
                                   _centered(features.item_vec, features.item_has_text)], 0)
            text = _pca(text, has, text_pca)
        if id_init == "text" and has.any():  # E⁰ rows with text: their top-d PCs, std 0.1
            x = _pca(text, has, dim) if text.shape[1] > dim else text
            if x.shape[1] == dim:
                x = x * (0.1 / max(float(x[has].std()), 1e-12))
                with torch.no_grad():
                    rows = torch.from_numpy(np.flatnonzero(has))
                    self.embedding.weight[rows] = torch.from_numpy(x[has]).float()
        self.register_buffer("text_vec", torch.from_numpy(text).float())
        self.register_buffer("has_text", torch.from_numpy(has))
        self.register_buffer("deg_norm", torch.from_numpy(np.asarray(deg_norm, np.float32)))
        self.register_buffer("node_degree", torch.from_numpy(np.asarray(degree, np.int64)))
        self.register_buffer("fallback_idx", torch.from_numpy(np.flatnonzero(~has)))
        isolated = np.asarray(degree) == 0
        self.isolated_text_only = isolated_text_only and self.gate_mode == "learned"
        self.register_buffer("isolated", torch.from_numpy(isolated)[:, None])
        self.any_isolated = bool(isolated.any())
        self.isolated_norm = isolated_norm
        self.register_buffer("item_warm", torch.from_numpy(~isolated[n_users:]))

        self.proj = TextProjector(text.shape[1], dim, adapter_hidden)
        # |z| = z_scale: starts at the expected norm of a N(0, 0.1²) ID row, like E⁰
        self.z_scale = nn.Parameter(torch.tensor(0.1 * math.sqrt(dim)))
        self.key_proj = copy.deepcopy(self.proj)  # momentum copy: keys for the queue
        for p in self.key_proj.parameters():
            p.requires_grad_(False)
        self.fallback = (
            nn.Sequential(nn.Linear(dim + 1, fallback_hidden), nn.ReLU(),
                          nn.Linear(fallback_hidden, dim))
            if fallback == "mlp" else None
        )  # fmt: skip
        if self.gate_mode == "learned":
            g = n_layers + 1
            self.gate_w_e = nn.Parameter(torch.zeros(g, dim))
            self.gate_w_z = nn.Parameter(torch.zeros(g, dim))
            self.gate_w_d = nn.Parameter(torch.zeros(g))
            b0 = math.log(gate_init / (1.0 - gate_init))
            self.gate_b = nn.Parameter(torch.full((g,), b0))
        # one queue per view, with a ring for users and one for items (they move together:
        # both types align the same number of nodes a step)
        self.queues = nn.ModuleDict({view: KeyQueue(dim, queue_size, groups=2)
                                     for view in ("z", "g")})

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        upgrade_per_type_queues(state_dict, prefix + "queues.", ("user", "item"), ("z", "g"))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # ----------------------------------------------------------------------------- views
    @property
    def fallback_mask(self) -> torch.Tensor:
        """[N] bool: nodes whose z comes from the fallback (no text)."""
        return ~self.has_text

    def language_view(self, proj: nn.Module | None = None) -> torch.Tensor:
        """z for every node [N, d]: projected LM vector, or the fallback for no-text nodes.

        End-to-end (``text_tower``): the rows of this step's ``_grad_nodes`` are re-encoded
        through the LoRA LM with gradient, the others come from the per-epoch refresh."""
        text = self.text_vec
        if self.text_tower is not None and self._grad_nodes is not None and proj is None:
            nodes = self.text_tower.text_nodes(self._grad_nodes)
            if len(nodes):
                text = text.index_copy(0, nodes, self.text_tower(nodes).to(text.dtype))
        u = (proj or self.proj)(text)
        z = _RowsAtNorm.apply(u, self.z_scale)  # s · u/‖u‖
        if len(self.fallback_idx) == 0:
            return z
        idx = self.fallback_idx
        if self.fallback is None:
            fb = torch.zeros(len(idx), z.shape[1], dtype=z.dtype, device=z.device)
        else:
            x = torch.cat([self.embedding.weight[idx], self.deg_norm[idx, None]], 1)
            fb = self.fallback(x)
        return z.index_copy(0, idx, fb)

    def gate_static(self, z: torch.Tensor) -> torch.Tensor | None:
        """The layer-independent part of every gate logit, ``[N, L+1]``:
        ``w_z,lᵀ z_v + w_d,l d̃_v + b_l`` for all layers in one matrix product; an edgeless
        node's is 10⁴ (:meth:`_pinned`)."""
        if self.gate_mode != "learned":
            return None
        return gate_constants(z, self.deg_norm, self._pinned(), self.gate_w_z, self.gate_w_d,
                              self.gate_b).t()

    def _pinned(self) -> torch.Tensor | None:
        """[N] bool of the nodes whose gate is pinned to γ ≡ 1 (no training edge: the ID row
        carries no signal; σ(10⁴) is 1.0 in float32, with zero gradient), or None."""
        return self.isolated[:, 0] if self.isolated_text_only and self.any_isolated else None

    def gate(self, layer: int, e: torch.Tensor, static: torch.Tensor | None) -> torch.Tensor:
        """γ^l [N, 1] for the layer's input states ``e``: the fixed γ, or the learned gate on
        ``static`` (:meth:`gate_static`)."""
        if self.gate_mode == "fixed":
            return torch.full((e.shape[0], 1), self.fixed_gamma, dtype=e.dtype, device=e.device)
        return torch.sigmoid(torch.addmv(static[:, layer], e, self.gate_w_e[layer])).unsqueeze(1)

    def forward_views(self) -> dict[str, Any]:
        """z, the layer states E^l, the gates γ^l, h (fused mean); g (graph view) only where
        it is h (late fusion) -- see :meth:`graph_view_rows`.

        With a learned gate on a sparse Â, the propagation is one autograd node with its
        backward written out (:mod:`recmind_dist.models.gated_propagation`); the loop below
        is the same forward through autograd (fixed / no gate, partitioned Â)."""
        e0 = self.embedding.weight
        z = self.language_view()
        if self.variant == "llm_only":  # no graph at all
            return {"z": z, "layers": [e0], "gammas": [], "h": z, "g": z}
        if self.gate_mode == "learned" and isinstance(self.adj, torch.Tensor):
            h, layers, gammas = gated_propagation(
                self.adj, e0, z, self.deg_norm, self._pinned(), self.gate_w_e, self.gate_w_z,
                self.gate_w_d, self.gate_b)
            return {"z": z, "layers": layers, "gammas": gammas, "h": h, "g": None}
        static = self.gate_static(z)
        layers, fused, gammas = [e0], [], []
        for layer in range(self.n_layers + 1):
            e = layers[-1]
            if self.gate_mode == "none":
                f = e
            else:
                gamma = self.gate(layer, e, static)
                gammas.append(gamma)
                f = torch.lerp(e, z, gamma)  # (1 − γ) e + γ z; γ = 0 gives e exactly
            fused.append(f)
            if layer < self.n_layers:
                layers.append(propagate(self.adj, f))
        h = layer_mean(fused)
        # g of all nodes is only needed for late fusion (where it is h); the alignment takes
        # the few rows it uses from graph_view_rows
        g = h if self.gate_mode == "none" else None
        return {"z": z, "layers": layers, "gammas": gammas, "h": h, "g": g}

    def graph_view_rows(self, views: dict[str, Any], nodes: torch.Tensor) -> torch.Tensor:
        """Rows ``nodes`` of the alignment's view: g = mean_l E^l (or h when
        ``align_view = fused``), without building it for all N nodes."""
        if self.align_view == "fused":
            return views["h"].index_select(0, nodes)
        if views["g"] is not None:
            return views["g"].index_select(0, nodes)
        return layer_mean([e.index_select(0, nodes) for e in views["layers"]])

    def _scoring(self, views: dict[str, Any]) -> torch.Tensor:
        if self.variant == "llm_only":
            return views["z"]
        if self.variant == "late_fusion":
            g, z = views["g"], views["z"]
            return torch.cat([g, z], 1) if self.late_fusion == "concat" else 0.5 * (g + z)
        return views["h"]

    def representations(self) -> tuple[torch.Tensor, torch.Tensor]:
        rep = self._scoring(self.forward_views())
        users, items = rep[: self.n_users], rep[self.n_users :]
        iso = ~self.item_warm
        if (self.isolated_norm == "warm_mean" and self.isolated_text_only  # h = z there
                and self.any_isolated and bool(iso.any())):
            # unseen items: their direction, at the typical norm of an item with edges
            norm = items[self.item_warm].norm(dim=1).mean()
            items = items.clone()
            items[iso] = F.normalize(items[iso], dim=1) * norm
        return users, items

    # ----------------------------------------------------------------------------- training
    def on_epoch_start(self, epoch: int) -> None:
        if self.text_tower is not None and epoch > 1:  # e of all nodes with current adapters
            self.text_vec.copy_(self.text_tower.refresh().to(self.text_vec))
        phase = "warmup" if self.in_warmup(epoch) else "joint"
        if phase != self.phase:
            log.info("RecMind epoch %d: phase %s -> %s", epoch, self.phase, phase)
        self.phase = phase

    def in_warmup(self, epoch: int) -> bool:
        return epoch <= self.warmup_epochs

    def _lora_sample(self, batch: Batch) -> torch.Tensor:
        """Up to ``lora_nodes`` of the batch's unique users and positive items, half each."""
        return torch.cat(self._batch_nodes(batch, max(1, self.lora_nodes // 2)))

    @torch.no_grad()
    def _keys(self, nodes: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Momentum-encoder keys ẑ_k for ``nodes`` (no-text nodes: the detached fallback z)."""
        k = self.key_proj(self.text_vec.index_select(0, nodes))
        if len(self.fallback_idx):
            k = torch.where(self.has_text[nodes, None], k, z[nodes].detach())
        return F.normalize(k, dim=1)

    def _batch_nodes(self, batch: Batch, k: int, same_count: bool = False
                     ) -> list[torch.Tensor]:
        """The batch's distinct users and distinct positive items (node ids, ascending as
        ``torch.unique`` would give them, from one mask over all N nodes instead of a sort),
        each cut to a random k of them (k = 0: all). ``same_count``: both cut to the smaller
        of k and the two counts."""
        mask = torch.zeros(self.n_users + self.n_items, dtype=torch.bool,
                           device=batch.users.device)
        mask[batch.users] = True
        mask[batch.pos + self.n_users] = True
        nodes = mask.nonzero().squeeze(1)
        n_u = int(mask[: self.n_users].sum())
        parts = [nodes[:n_u], nodes[n_u:]]
        if same_count:
            k = min(len(parts[0]), len(parts[1]), *([k] if k > 0 else []))
        out = []
        for part in parts:
            if 0 < k < len(part):  # a random subset keeps the cost bounded
                part = part[torch.randperm(len(part), device=part.device)[:k]]
            out.append(part)
        return out

    def alignment_loss(self, views: dict[str, Any], batch: Batch) -> torch.Tensor:
        """½ (InfoNCE over users + InfoNCE over items) between ẑ and the graph view.

        The same number k of users and of items is aligned, so both types go through one
        batched loss ([2, k, d] views, [2, Q, d] queues)."""
        z = views["z"]
        nodes = torch.cat(self._batch_nodes(batch, self.align_nodes, same_count=True))
        a = F.normalize(z.index_select(0, nodes), dim=1).view(2, -1, z.shape[1])
        # language-side alignment: the graph view is a target, not trained here
        with torch.set_grad_enabled(self.align_grad == "both" and torch.is_grad_enabled()):
            b = F.normalize(self.graph_view_rows(views, nodes), dim=1).view_as(a)
        qz, qg = self.queues["z"], self.queues["g"]
        loss = symmetric_infonce(a, b, self.tau, qz.keys(), qg.keys(), self.gather)
        with torch.no_grad():
            qz.enqueue(gather_rows(self._keys(nodes, z).view_as(a), self.gather))
            qg.enqueue(gather_rows(b.detach(), self.gather))
        return loss

    def training_loss(self, batch: Batch, epoch: int) -> tuple[torch.Tensor, dict[str, float]]:
        warm = self.in_warmup(epoch)
        use_align = warm or self.lambda_align > 0
        if use_align:  # MoCo: update the key encoder before computing this step's keys
            momentum_update(self.key_proj, self.proj, self.momentum)
        if self.text_tower is not None:  # nodes whose text goes through the LM with grad
            self._grad_nodes = self._lora_sample(batch)
        try:
            views = self.forward_views()
        finally:
            self._grad_nodes = None
        parts: dict[str, torch.Tensor] = {}
        if use_align:
            parts["align"] = self.alignment_loss(views, batch)
        if warm:
            loss = parts["align"]
        else:
            rep = self._scoring(views)
            users, pos, neg = batch.users, batch.pos, batch.neg
            if self.warm_negatives:
                keep = self.item_warm[neg]
                if not bool(keep.all()):
                    users, pos, neg = users[keep], pos[keep], neg[keep]
            parts["bpr"] = bpr_loss(*self._bpr_scores(rep, views["z"], users, pos, neg))
            parts["reg"] = self.reg * layer0_l2(self.embedding.weight, self.n_users, batch)
            loss = parts["bpr"] + parts["reg"]
            if "align" in parts:
                loss = loss + self.lambda_align * parts["align"]
        out = dict(zip(parts, torch.stack(list(parts.values())).detach().tolist()))
        out["warmup"] = float(warm)
        return loss, out

    def _bpr_scores(self, rep: torch.Tensor, z: torch.Tensor, users: torch.Tensor,
                    pos: torch.Tensor, neg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(h_uᵀx_i, h_uᵀx_j) for the BPR triples. x is the item's h, or -- cold-item dropout
        -- its z, independently with probability ``cold_dropout`` per positive and per
        negative. The dropped triples' scores are recomputed from z rows gathered for them
        alone and written over the h scores (a [B] vector), so no [N + I, d] table of h and z
        is built and scattered back."""
        nu = self.n_users
        u = rep.index_select(0, users)  # index_select: cheaper backward than rep[idx]
        s_pos = (u * rep.index_select(0, nu + pos)).sum(-1)
        s_neg = (u * rep.index_select(0, nu + neg)).sum(-1)
        if self.cold_dropout > 0 and self.isolated_text_only:
            drop = torch.rand(2, len(pos), device=pos.device) < self.cold_dropout
            dp, dn = drop[0].nonzero().squeeze(1), drop[1].nonzero().squeeze(1)
            z_rows = z.index_select(0, nu + torch.cat([pos[dp], neg[dn]]))
            s_z = (u.index_select(0, torch.cat([dp, dn])) * z_rows).sum(-1)
            s_pos = s_pos.index_copy(0, dp, s_z[: len(dp)])
            s_neg = s_neg.index_copy(0, dn, s_z[len(dp) :])
        return s_pos, s_neg

    # ----------------------------------------------------------------------------- probes
    @torch.no_grad()
    def gammas(self) -> torch.Tensor | None:
        """γ [N, L+1] of every node and layer (None for variants without a gate)."""
        if self.gate_mode == "none":
            return None
        was = self.training
        self.eval()
        g = torch.cat(self.forward_views()["gammas"], 1)
        self.train(was)
        return g

    def gate_probe(
        self, cold_degree: int = 3, head_fraction: float = 0.2, png_path: str | Path | None = None
    ) -> dict[str, float]:
        """Mean/median γ per item-degree bucket and layer (+ Spearman ρ(γ, degree)); optional
        PNG of γ vs degree. Empty for variants without a gate."""
        from recmind_dist.eval.gate_probe import gate_summary, plot_gate_vs_degree

        g = self.gammas()
        if g is None:
            return {}
        g = g.cpu().numpy()
        deg = self.node_degree.cpu().numpy()
        nu = self.n_users
        metrics = gate_summary(g[nu:], deg[nu:], cold_degree, head_fraction, prefix="gate/item")
        metrics.update(gate_summary(g[:nu], deg[:nu], None, None, prefix="gate/user"))
        if png_path is not None:
            plot_gate_vs_degree(g[nu:], deg[nu:], png_path, title=f"RecMind gate ({self.variant})")
        return metrics

    def feature_summary(self) -> dict[str, float]:
        has = self.has_text.cpu().numpy()
        nu = self.n_users
        return {"users_fallback": float((~has[:nu]).sum()),
                "items_fallback": float((~has[nu:]).sum())}  # fmt: skip
