"""RecMind (arXiv 2509.06286): LightGCN with language features fused inside every layer.

Notation: N = U + I nodes (users first), E⁰ the trainable ID table [N, d], Â the normalised
bipartite adjacency, d̃_v = log(1+deg_v)/max log(1+deg) the normalised training degree.

RecMind composes three components, each reading its settings from the one
:class:`recmind_dist.specs.RecMindSpec`:

* :class:`~recmind_dist.models.language_view.LanguageView` -- z_v = s · u_v/‖u_v‖ from the
  node's (centred, PCA-reduced) LM vector, or a fallback MLP over [E⁰_v ‖ d̃_v] for nodes
  without text;
* :class:`~recmind_dist.models.gate.Gate` -- the gated propagation
  γ^l = σ(w_lᵀ[E^l ‖ z ‖ d̃] + b_l) (``gate = learned``; ``fixed``: γ^l ≡ γ; ``none``: no
  fusion), Ẽ^l = (1 − γ^l) ⊙ E^l + γ^l ⊙ z, E^{l+1} = Â Ẽ^l, h = 1/(L+1) Σ_l Ẽ^l;
* :class:`~recmind_dist.models.alignment.Alignment` -- L_align, the symmetric InfoNCE between
  ẑ and the graph view ĝ with momentum queues.

**Readout** (``readout``): ``fused`` scores with h, score(u, i) = h_uᵀ h_i; ``late`` (plain
propagation, ``gate = none``) with [g ‖ z] (``late_fusion = concat``) or (g + z)/2
(``mean``); ``language`` with z alone (no graph at all). The layer mean is over the *fused*
states, so z reaches h directly: a cold item (no training edge, E^{l≥1} = 0) still gets
h = 1/(L+1)[(1−γ⁰)E⁰ + Σ_l γ^l z] (``readout_layer0 = false``: the mean of Ẽ^1..Ẽ^L,
SimGCL's and XSimGCL's readout). With ``isolated_text_only`` (learned gate) such a node's
gate is pinned to γ ≡ 1, so its h is exactly z; with ``isolated_norm = warm_mean`` it is
scored with z's direction at the mean ‖h‖ of the items with edges.

**Graph view** of the alignment: g = 1/(L+1) Σ_l E^l (the un-fused states: g has no direct copy
of the node's own z, so the gate cannot trivially satisfy the loss); ``align_view = fused``
uses h instead.

**Two phases.** Epochs 1..T_w (``warmup_epochs``): L = L_align only (no BPR term at all).
Then

    L = BPR(s) + reg · ½ (‖e_u⁰‖² + ‖e_i⁰‖² + ‖e_j⁰‖²)/B + λ · L_align    (λ = ``lambda_align``;
                                                                       λ = 0: no alignment)

the regulariser being LightGCN's. With ``warm_negatives`` BPR triples whose sampled negative
has no training edge are dropped (in a cold-start protocol unseen items are unknown at
training time). **Cold-item dropout** (``cold_dropout = p``, where an edgeless item's h is z,
i.e. ``isolated_text_only``): each triple's positive and negative representation is replaced
by its z, independently with probability p (DropoutNet, Volkovs et al. 2017):

    s(u, i) = h_uᵀ (m_i z_i + (1 − m_i) h_i),   m_i ~ Bernoulli(p)

so z is trained to rank against items with edges, on their scale, as an unseen item will be.

**Backbone** (``backbone``): the gate and the alignment act on the states of LightGCN's
propagation, or of SimGCL's / XSimGCL's noise-perturbed one (:mod:`recmind_dist.models.simgcl`;
ε = ``cl_eps``, λ_cl = ``cl_lambda``, τ_cl = ``cl_tau``, l* = ``cl_layer``). In the joint
phase a perturbed gated pass adds n_l = ε sign(E^{l+1}) ⊙ Δ/‖Δ‖ to every propagated state,
E'^{l+1} = Â Ẽ'^l + n_l (the gates read E'^l), and

    xsimgcl:  L = L_rank(h') + λ_cl · cl(h', E'^{l*}) + …   (one perturbed pass: h', E'^l,
                                                            the alignment's g are all from it)
    simgcl:   L = L_rank(h)  + λ_cl · cl(h', h'') + …       (two extra perturbed passes)

with cl the batch's user + item InfoNCE (:func:`recmind_dist.models.simgcl.batch_contrastive`).
Whether h keeps layer 0 is ``readout_layer0`` (SimGCL/XSimGCL leave it out). Evaluation uses the clean propagation. The noise comes from the model's
:class:`~recmind_dist.models.rng.SeededGenerator` (seeded from the run seed; only with a
perturbed backbone, so a lightgcn-backbone model's state dict is unchanged).

With ``gate = fixed, fixed_gamma = 0`` h is exactly LightGCN's layer mean (same ops, same
order); with also λ = 0 (and ``warm_negatives = False`` or a split where every item has a
training edge) the training loss is LightGCN's. The ablation ``variant`` of the spec is a label
of preset settings (:data:`recmind_dist.specs.models.RECMIND_PRESETS`); this model never reads
it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from recmind_dist.errors import InputError
from recmind_dist.graph.propagate import layer_mean
from recmind_dist.losses import bpr_loss
from recmind_dist.models.alignment import Alignment
from recmind_dist.models.base import Batch, GatherFn, Recommender
from recmind_dist.models.batch_nodes import distinct_batch_nodes
from recmind_dist.models.gate import Gate
from recmind_dist.models.inputs import NodeFeatures
from recmind_dist.models.language_view import LanguageView, text_id_rows
from recmind_dist.models.lightgcn import layer0_l2
from recmind_dist.models.lora_text import NodeTextTower
from recmind_dist.models.rng import SeededGenerator
from recmind_dist.models.simgcl import batch_contrastive, sign_noise
from recmind_dist.specs import RecMindSpec

log = logging.getLogger(__name__)

__all__ = ["RecMind", "RecMindViews"]

#: Where the state-dict entries of RecMind before its split into components (b433d43) live
#: now: first key component -> new path.
_MOVED_KEYS = {
    "text_vec": "language.text_vec",
    "has_text": "language.has_text",
    "fallback_idx": "language.fallback_idx",
    "text_tower": "language.text_tower",
    "proj": "language.proj",
    "z_scale": "language.z_scale",
    "fallback": "language.fallback",
    "key_proj": "alignment.key_proj",
    "queues": "alignment.queues",
    "gate_w_e": "gate.w_e",
    "gate_w_z": "gate.w_z",
    "gate_w_d": "gate.w_d",
    "gate_b": "gate.b",
}


@dataclass
class RecMindViews:
    """One forward pass: z [N, d], the layer states [E⁰ .. E^L] (un-fused), the gates
    [γ⁰ .. γ^L] ([N, 1] each; empty without a gate), h [N, d] (mean of the fused states), and
    g (the graph view of all nodes, only where it is h: no fusion; else None -- see
    :meth:`RecMind.graph_view_rows`)."""

    z: torch.Tensor
    layers: list[torch.Tensor]
    gammas: list[torch.Tensor]
    h: torch.Tensor
    g: torch.Tensor | None


class RecMind(Recommender):
    """See the module docstring. Every setting is read from ``spec`` (kept as ``self.spec``).

    Parameters, in creation order: ``embedding`` (E⁰, created first and initialised like
    LightGCN's, so the same seed gives the same E⁰), ``language`` (projection, scale,
    fallback), ``alignment`` (frozen key projection, queues), ``gate`` (learned gate only);
    then ``rng`` (the backbone's noise, seeded with ``seed``; perturbed backbones only)."""

    def __init__(self, n_users: int, n_items: int, adj: torch.Tensor, features: NodeFeatures,
                 degree: np.ndarray, deg_norm: np.ndarray, spec: RecMindSpec,
                 text_tower: NodeTextTower | None, seed: int) -> None:
        super().__init__()
        if features.user_vec.shape[0] != n_users or features.item_vec.shape[0] != n_items:
            raise InputError("node features", "user_vec/item_vec", f"one row per local user "
                             f"and item expected ({n_users}, {n_items}), got "
                             f"({features.user_vec.shape[0]}, {features.item_vec.shape[0]})")
        self.spec = spec
        self.n_users, self.n_items = n_users, n_items
        self.adj = adj
        self.embedding = nn.Embedding(n_users + n_items, spec.dim)
        nn.init.normal_(self.embedding.weight, std=0.1)
        self.language = LanguageView(features, text_tower, spec)
        if spec.id_init == "text":  # E⁰ rows with text: their top-d PCs, std 0.1
            has = self.language.has_text.numpy()
            rows = text_id_rows(self.language.text_vec.numpy(), has, spec.dim)
            if rows is not None:
                with torch.no_grad():
                    self.embedding.weight[torch.from_numpy(np.flatnonzero(has))] = (
                        torch.from_numpy(rows).float())
        self.register_buffer("deg_norm", torch.from_numpy(np.asarray(deg_norm, np.float32)))
        self.register_buffer("node_degree", torch.from_numpy(np.asarray(degree, np.int64)))
        isolated = np.asarray(degree) == 0
        self.register_buffer("isolated", torch.from_numpy(isolated)[:, None])
        self.any_isolated = bool(isolated.any())
        self.register_buffer("item_warm", torch.from_numpy(~isolated[n_users:]))
        self.alignment = Alignment(self.language.proj, spec)
        self.gate = Gate(spec)
        self.rng = SeededGenerator(seed) if spec.backbone != "lightgcn" else None
        self.phase = "joint"

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        # runs before the components load: state dicts saved before the split still load
        for key in [k for k in state_dict if k.startswith(prefix)]:
            head, dot, rest = key[len(prefix):].partition(".")
            if head in _MOVED_KEYS:
                state_dict[prefix + _MOVED_KEYS[head] + dot + rest] = state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # ----------------------------------------------------------------------------- views
    def pinned(self) -> torch.Tensor | None:
        """[N] bool of the nodes whose gate is pinned to γ ≡ 1 (no training edge, with
        ``isolated_text_only``), or None."""
        return self.isolated[:, 0] if self.spec.isolated_text_only and self.any_isolated else None

    def _perturb(self, x: torch.Tensor) -> torch.Tensor:
        """x + ε sign(x) ⊙ Δ/‖Δ‖ (the backbone's noise)."""
        return x + sign_noise(x, self.spec.cl_eps, self.rng.on(x.device))

    def perturbed_mean(self, z: torch.Tensor) -> torch.Tensor:
        """h' of one perturbed gated pass for the language view ``z`` (SimGCL's views)."""
        return self.gate.propagate(self.adj, self.embedding.weight, z, self.deg_norm,
                                   self.pinned(), self._perturb)[0]

    def forward_views(self, grad_nodes: torch.Tensor | None = None,
                      perturbed: bool = False) -> RecMindViews:
        """z, the layer states, the gates, h and (where it is h) g. ``grad_nodes``: the nodes
        whose text goes through the LoRA LM with gradient this step (end to end only);
        ``perturbed``: the backbone's noise on every propagated state."""
        e0 = self.embedding.weight
        z = self.language(e0, self.deg_norm, grad_nodes)
        if self.spec.readout == "language":  # no graph at all
            return RecMindViews(z, [e0], [], z, z)
        h, layers, gammas = self.gate.propagate(self.adj, e0, z, self.deg_norm, self.pinned(),
                                                self._perturb if perturbed else None)
        # g of all nodes is only needed without fusion (where it is h, e.g. for late fusion);
        # the alignment takes the few rows it uses from graph_view_rows
        return RecMindViews(z, layers, gammas, h, h if self.spec.gate == "none" else None)

    def graph_view_rows(self, views: RecMindViews, nodes: torch.Tensor) -> torch.Tensor:
        """Rows ``nodes`` of the alignment's graph view: g = mean_l E^l (or h with
        ``align_view = fused``), without building it for all N nodes."""
        if self.spec.align_view == "fused":
            return views.h.index_select(0, nodes)
        if views.g is not None:
            return views.g.index_select(0, nodes)
        return layer_mean([e.index_select(0, nodes) for e in views.layers])

    def readout(self, views: RecMindViews) -> torch.Tensor:
        """The representation scored by dot product [N, d or 2d] (``readout``)."""
        if self.spec.readout == "language":
            return views.z
        if self.spec.readout == "late":
            g, z = views.g, views.z
            return torch.cat([g, z], 1) if self.spec.late_fusion == "concat" else 0.5 * (g + z)
        return views.h

    def representations(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.scored(self.readout(self.forward_views()))

    def scored(self, rep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(users, items) of the readout ``rep`` of all N nodes as scored: with
        ``isolated_norm = warm_mean`` the edgeless items rescaled (module docstring)."""
        users, items = rep[: self.n_users], rep[self.n_users :]
        iso = ~self.item_warm
        if (self.spec.isolated_norm == "warm_mean" and self.spec.isolated_text_only  # h = z
                and self.any_isolated and bool(iso.any())):
            # unseen items: their direction, at the typical norm of an item with edges
            norm = items[self.item_warm].norm(dim=1).mean()
            items = items.clone()
            items[iso] = F.normalize(items[iso], dim=1) * norm
        return users, items

    # ----------------------------------------------------------------------------- training
    def on_epoch_start(self, epoch: int, steps_per_epoch: int) -> None:
        """Refresh the LoRA text table (from epoch 2 on) and switch phase (warm-up, joint)."""
        if epoch > 1:  # e of all nodes with current adapters
            self.language.refresh()
        phase = "warmup" if self.in_warmup(epoch) else "joint"
        if phase != self.phase:
            log.info("RecMind epoch %d: phase %s -> %s", epoch, self.phase, phase)
        self.phase = phase

    def in_warmup(self, epoch: int) -> bool:
        return epoch <= self.spec.warmup_epochs

    def set_gather(self, fn: GatherFn | None) -> None:
        self.alignment.set_gather(fn)

    def alignment_loss(self, views: RecMindViews, batch: Batch) -> torch.Tensor:
        """L_align over the same number k of the batch's distinct users and positive items."""
        nodes = torch.cat(distinct_batch_nodes(batch, self.n_users, self.n_items,
                                               self.spec.align_nodes, same_count=True))
        return self.alignment(views.z, lambda n: self.graph_view_rows(views, n), nodes,
                              self.language)

    def training_loss(self, batch: Batch, epoch: int) -> tuple[torch.Tensor, dict[str, float]]:
        warm = self.in_warmup(epoch)
        use_align = warm or self.spec.lambda_align > 0
        if use_align:  # MoCo: update the key encoder before computing this step's keys
            self.alignment.momentum_step(self.language.proj)
        grad_nodes = None
        if self.language.text_tower is not None:  # up to lora_nodes, half users, half items
            grad_nodes = torch.cat(distinct_batch_nodes(
                batch, self.n_users, self.n_items, max(1, self.spec.lora_nodes // 2),
                same_count=False))
        backbone = "lightgcn" if warm else self.spec.backbone
        views = self.forward_views(grad_nodes, perturbed=backbone == "xsimgcl")
        parts: dict[str, torch.Tensor] = {}
        if use_align:
            parts["align"] = self.alignment_loss(views, batch)
        if warm:
            loss = parts["align"]
        else:
            rep = self.readout(views)
            users, pos, neg = batch.users, batch.pos, batch.neg
            if self.spec.warm_negatives:
                keep = self.item_warm[neg]
                if not bool(keep.all()):
                    users, pos, neg = users[keep], pos[keep], neg[keep]
            drop = self.cold_drop(len(pos), pos.device)
            parts["bpr"] = bpr_loss(*self._bpr_scores(rep, views.z, users, pos, neg,
                                                      self.n_users, drop))
            parts["reg"] = self.spec.reg * layer0_l2(self.embedding.weight, self.n_users, batch)
            loss = parts["bpr"] + parts["reg"]
            if backbone != "lightgcn" and self.spec.cl_lambda > 0:
                if backbone == "xsimgcl":
                    a, b = views.h, views.layers[self.spec.cl_layer]
                else:
                    a, b = self.perturbed_mean(views.z), self.perturbed_mean(views.z)
                parts["cl"] = batch_contrastive(a, b, batch, self.n_users, self.spec.cl_tau)
                loss = loss + self.spec.cl_lambda * parts["cl"]
            if "align" in parts:
                loss = loss + self.spec.lambda_align * parts["align"]
        out = dict(zip(parts, torch.stack(list(parts.values())).detach().tolist()))
        out["warmup"] = float(warm)
        return loss, out

    def cold_drop(self, n: int, device: torch.device) -> torch.Tensor | None:
        """Cold-item dropout's draw for ``n`` BPR triples: ``[2, n]`` bool (row 0: replace
        the positive by its z, row 1: the negative), each True with probability
        ``cold_dropout``; None where the dropout is off."""
        if self.cold_dropout_on():
            return torch.rand(2, n, device=device) < self.spec.cold_dropout
        return None

    def cold_dropout_on(self) -> bool:
        """Whether BPR triples' items are scored with z at random (``cold_dropout`` > 0,
        where an edgeless item's h is z: ``isolated_text_only``)."""
        return self.spec.cold_dropout > 0 and self.spec.isolated_text_only

    @staticmethod
    def _bpr_scores(rep: torch.Tensor, z: torch.Tensor, users: torch.Tensor, pos: torch.Tensor,
                    neg: torch.Tensor, item_offset: int, drop: torch.Tensor | None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(h_uᵀx_i, h_uᵀx_j) for the BPR triples; item ``i``'s row of ``rep`` and ``z`` is
        ``item_offset + i``. x is the item's h, or -- cold-item dropout, ``drop``
        (:meth:`cold_drop`) -- its z. The dropped triples' scores are recomputed from z rows
        gathered for them alone and written over the h scores (a [B] vector), so no
        [N + I, d] table of h and z is built and scattered back."""
        nu = item_offset
        u = rep.index_select(0, users)  # index_select: cheaper backward than rep[idx]
        s_pos = (u * rep.index_select(0, nu + pos)).sum(-1)
        s_neg = (u * rep.index_select(0, nu + neg)).sum(-1)
        if drop is not None:
            dp, dn = drop[0].nonzero().squeeze(1), drop[1].nonzero().squeeze(1)
            z_rows = z.index_select(0, nu + torch.cat([pos[dp], neg[dn]]))
            s_z = (u.index_select(0, torch.cat([dp, dn])) * z_rows).sum(-1)
            s_pos = s_pos.index_copy(0, dp, s_z[: len(dp)])
            s_neg = s_neg.index_copy(0, dn, s_z[len(dp) :])
        return s_pos, s_neg

    # ----------------------------------------------------------------------------- probes
    @torch.no_grad()
    def probes(self) -> dict[str, torch.Tensor]:
        """``{"gate": γ [N, L+1]}`` of every node (users, then items) and layer, in eval
        mode; empty for ``gate = none``."""
        if self.spec.gate == "none":
            return {}
        was = self.training
        self.eval()
        gamma = torch.cat(self.forward_views().gammas, 1)
        self.train(was)
        return {"gate": gamma}

    def epoch_metrics(self) -> dict[str, float]:
        """The language view's learned norm s (its growth shows the alignment's pull)."""
        return {"z_scale": float(self.language.z_scale.detach())}

    def feature_summary(self) -> dict[str, float]:
        """How many users and items have no text (their z is the fallback's)."""
        has = self.language.has_text.cpu().numpy()
        nu = self.n_users
        return {"users_fallback": float((~has[:nu]).sum()),
                "items_fallback": float((~has[nu:]).sum())}
