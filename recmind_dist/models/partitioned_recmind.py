"""RecMind over a partitioned graph: each worker owns its rows of everything per node.

Worker r of W owns the nodes O_r of a partition (:mod:`recmind_dist.graph.partitioned`) and
holds their rows of E⁰, of the language view's inputs (text vectors ē, has-text mask, d̃) and
so of z, of the gate inputs and of every layer state; the small parameters (projection,
scale s, fallback MLP, gate weights), the momentum key projection and the queues are
replicated. With Â_r worker r's rows of Â (columns: own rows, then the halo):

    z_{O_r}     = LanguageView(E⁰_{O_r}, d̃_{O_r})                       (no communication)
    γ^l_{O_r}   = σ(w_e,lᵀ E^l_{O_r} + w_z,lᵀ z_{O_r} + w_d,l d̃_{O_r} + b_l)
    F_l         = (1 − γ^l) ⊙ E^l + γ^l ⊙ z                             (own rows)
    E^{l+1}_{O_r} = Â_r [F_l,{O_r} ; halo(F_l)]                          (the halo carries F_l)
    h_{O_r}     = 1/(L+1) Σ_l F_l,{O_r}

(:meth:`recmind_dist.models.gate.Gate.propagate`'s autograd loop on a
:class:`~recmind_dist.graph.partitioned.PartitionedAdjacency`; the exchange's backward sends
the halo's gradient to the owners). Each worker's batch is its slice of the global batch
(:func:`recmind_dist.train.loop.shard_batches`); the global batch's ids are all-gathered
(three int vectors), so every worker knows it. Per step:

* **BPR** (joint phase): the slice's rows of [readout ‖ z ‖ E⁰] are fetched from their owners
  (:func:`~recmind_dist.graph.partitioned.fetch_rows`, differentiable). Worker r's term is
  Σ_{b ∈ slice r} softplus(s⁻_b − s⁺_b) · W / B' (B' the global batch's kept triples,
  ``warm_negatives``), so Σ_r J_r/W -- the trainer scales by the share 1/W -- is the global
  batch mean. Cold-item dropout draws the global batch's ``[2, B']`` mask (every worker
  draws the same: torch's RNG stays in lockstep) and takes its slice's columns.
* **Alignment**: the global batch's alignment nodes, exactly the single-process ones
  (:func:`~recmind_dist.models.batch_nodes.distinct_batch_nodes` on the global batch, same
  draw). Each owner computes ẑ, ĝ (and the momentum keys) of its alignment nodes; the rows
  are all-gathered with the trainer's differentiable gather (:meth:`set_gather`, as in the
  data-parallel path) and put back in single-process order, and every worker evaluates the
  same InfoNCE against the same queues. The gather's backward sums the W copies' gradients
  (each scaled 1/W) into the owners' rows.
* **Queues** -- what "equal" means: every worker holds a replica of the two queues, and
  after every step each replica equals the single-process queue (same keys, same order,
  same fill and position), because every worker enqueues the same gathered rows in
  single-process order (up to float round-off of the rows).
* **Replicated parameters**: their gradients are summed over workers at the end of each
  backward (:class:`~recmind_dist.models.replicated_grads.ReplicatedGrads`); the momentum
  key update then runs identically everywhere.

So h, the loss, every gradient and the Adam trajectory equal single-process RecMind's up to
float round-off (tests: 2 and 3 workers, warm-up and joint phase). The state dict has
RecMind's keys; node-row entries hold the own rows (:data:`NODE_ROW_KEYS`),
:func:`local_state` maps a single-process state dict to a worker's and
:meth:`PartitionedRecMind.gather_for_eval` ``(full_state=True)`` back.

Refused partitioned (:class:`~recmind_dist.errors.InputError`): ``encoder: lora`` (the LoRA
text tower re-encodes arbitrary nodes' texts through the LM with gradient each step and keeps
a full text table) and a ``backbone`` other than lightgcn (SimGCL/XSimGCL noise and their
contrastive term). Every other setting (gates, readouts, ablation presets, fallback, cold
dropout, warm negatives, ``id_init``, text controls) runs partitioned.
"""

from __future__ import annotations

import copy
import warnings

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from recmind_dist.errors import InputError
from recmind_dist.graph.partitioned import (
    LocalGraph,
    PartitionedAdjacency,
    all_gather_rows,
    fetch_rows,
    gather_full,
    owner_maps,
)
from recmind_dist.losses import l2_batch
from recmind_dist.models.base import Batch
from recmind_dist.models.batch_nodes import distinct_batch_nodes
from recmind_dist.models.recmind import RecMind, RecMindViews
from recmind_dist.models.replicated_grads import ReplicatedGrads

__all__ = ["NODE_ROW_KEYS", "PartitionedRecMind", "local_state"]

#: State-dict entries with one row per node (users, then items): a worker holds its own rows.
NODE_ROW_KEYS = ("deg_norm", "node_degree", "isolated", "embedding.weight",
                 "language.text_vec", "language.has_text")
#: The nodes without text, as row positions (a worker's: positions among its own rows).
FALLBACK_KEY = "language.fallback_idx"


def local_state(full: dict[str, torch.Tensor], own: np.ndarray) -> dict[str, torch.Tensor]:
    """Worker state dict of the nodes ``own`` (sorted global ids) from a single-process RecMind
    state dict: node rows cut to ``own``, the fallback positions renumbered, the rest as is."""
    idx = torch.from_numpy(np.asarray(own, dtype=np.int64))
    out = {}
    for key, value in full.items():
        if key in NODE_ROW_KEYS:
            out[key] = value.index_select(0, idx.to(value.device))
        elif key == FALLBACK_KEY:
            has = full["language.has_text"].index_select(0, idx.to(value.device))
            out[key] = (~has).nonzero().squeeze(1)
        else:
            out[key] = value
    return out


class PartitionedRecMind(RecMind):
    """This worker's share of the single-process RecMind ``single`` on the partition ``lg``
    (module docstring): the same spec, parameters and buffers, node rows cut to ``lg.own``.

    ``training_loss`` returns this worker's part J_r of the batch objective; the trainer
    scales it by the worker's share 1/W. Evaluation is centralised: :meth:`gather_for_eval`
    (a collective) assembles the full representations on rank 0."""

    def __init__(self, single: RecMind, lg: LocalGraph, device: torch.device | str) -> None:
        if single.language.text_tower is not None:
            raise InputError("job spec", "model.encoder", "train.mode: partitioned runs RecMind "
                             "on precomputed text vectors; encoder: lora (end-to-end LoRA "
                             "text tower) is single-process or replicated only")
        # simgcl/xsimgcl (noise on every propagated state from the model's generator, and a
        # contrastive term) have no partitioned form yet
        backbone = single.spec.backbone
        if backbone != "lightgcn":
            raise InputError("job spec", "model.backbone", f"train.mode: partitioned runs "
                             f"RecMind on the lightgcn backbone only (got {backbone!r})")
        if lg.parts is None:
            raise InputError("partition plan", "parts", "the local graph must keep the node "
                             "partition (split_graph(keep_parts=True))")
        nn.Module.__init__(self)
        self.spec = single.spec
        self.n_users, self.n_items = single.n_users, single.n_items
        self.lg, self.rank, self.world = lg, lg.rank, lg.world
        with warnings.catch_warnings():  # sparse CSR tensors are a beta API
            warnings.simplefilter("ignore", UserWarning)
            self.adj = PartitionedAdjacency(lg, device)
        own = torch.as_tensor(np.array(lg.own, dtype=np.int64)).to(single.embedding.weight.device)
        # same registration order as RecMind: the same state-dict keys and parameter order
        rows = single.embedding.weight.detach().index_select(0, own)
        self.embedding = nn.Embedding(lg.n_own, self.spec.dim, _weight=rows.clone())  # no draw
        lang = single.language
        cut = {id(lang.text_vec): lang.text_vec.index_select(0, own),
               id(lang.has_text): lang.has_text.index_select(0, own)}
        self.language = copy.deepcopy(lang, cut)  # without copying the full text table
        self.language.fallback_idx = (~self.language.has_text).nonzero().squeeze(1)
        for name in ("deg_norm", "node_degree", "isolated"):
            self.register_buffer(name, getattr(single, name).index_select(0, own).clone())
        self.register_buffer("item_warm", single.item_warm.clone())  # all items: negatives
        self.any_isolated = single.any_isolated  # global: the pinned mask is applied alike
        self.alignment = copy.deepcopy(single.alignment)
        self.gate = copy.deepcopy(single.gate)
        self.phase = single.phase
        self.rng = None  # no backbone noise (lightgcn backbone only)
        self._parts, self._pos = owner_maps(lg, device)
        self._full: tuple[torch.Tensor, torch.Tensor] | None = None
        self.to(device)
        replicated = [p for n, p in self.named_parameters()
                      if p.requires_grad and n != "embedding.weight"]
        self._grads = ReplicatedGrads(replicated, [self.embedding.weight])

    # ----------------------------------------------------------------------------- training
    def fetch(self, x_own: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """Rows ``ids`` (global node ids) of the table whose own rows are ``x_own``."""
        return fetch_rows(x_own, ids, self._parts, self._pos, self.world)

    def training_loss(self, batch: Batch, epoch: int) -> tuple[torch.Tensor, dict[str, float]]:
        """J_r for this worker's slice ``batch`` of the global batch (module docstring); the
        same phases, terms and random draws as :meth:`RecMind.training_loss`."""
        warm = self.in_warmup(epoch)
        use_align = warm or self.spec.lambda_align > 0
        if use_align:  # MoCo: update the key encoder before computing this step's keys
            self.alignment.momentum_step(self.language.proj)
        token = self._grads.token()  # sums the replicated gradients after the backward
        slices, sizes = all_gather_rows(torch.stack([batch.users, batch.pos, batch.neg], 1),
                                        self.world)
        whole = Batch(slices[:, 0], slices[:, 1], slices[:, 2])
        start = sum(sizes[: self.rank])  # slices are in rank order
        views = self.forward_views()
        parts: dict[str, torch.Tensor] = {}
        if use_align:
            parts["align"] = self._alignment_loss(views, whole)
        if warm:
            loss = parts["align"]
        else:
            parts["bpr"], parts["reg"] = self._ranking_terms(views, batch, whole, start)
            loss = parts["bpr"] + parts["reg"]
            if "align" in parts:
                loss = loss + self.spec.lambda_align * parts["align"]
        out = dict(zip(parts, torch.stack(list(parts.values())).detach().tolist()))
        out["warmup"] = float(warm)
        return loss + token, out

    def _alignment_loss(self, views: RecMindViews, whole: Batch) -> torch.Tensor:
        """L_align of the global batch's alignment nodes: rows made by their owners, gathered
        in single-process order, the same InfoNCE and queue update on every worker."""
        nodes = torch.cat(distinct_batch_nodes(whole, self.n_users, self.n_items,
                                               self.spec.align_nodes, same_count=True))
        owner = self._parts.index_select(0, nodes)
        local = self._pos.index_select(0, nodes[owner == self.rank])
        a, b = self.alignment.pair_rows(views.z, lambda n: self.graph_view_rows(views, n),
                                        local)
        keys = self.alignment.keys(self.language, local, views.z)
        gather = self.alignment.gather
        if gather is None:
            if self.world > 1:
                raise RuntimeError("partitioned RecMind needs the cross-worker gather "
                                   "(set_gather), as the distributed trainer installs it")
            gather = _identity
        rows = gather(torch.cat([a, b, keys], 1))  # rank order
        back = torch.argsort(torch.argsort(owner, stable=True))  # -> single-process order
        d = views.z.shape[1]
        a, b, keys = rows.index_select(0, back).view(-1, 3, d).unbind(1)
        shape = (2, -1, d)
        return self.alignment.contrast(a.reshape(shape), b.reshape(shape),
                                       keys.reshape(shape), None)

    def _ranking_terms(self, views: RecMindViews, batch: Batch, whole: Batch, start: int
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        """(BPR part, L2 part) of this worker's slice, scaled so that their sum over workers,
        each times 1/W, is the single-process batch's BPR mean and L2 term."""
        nu, b = self.n_users, len(batch.users)
        rep = self.readout(views)
        e0 = self.embedding.weight
        z = views.z if self.cold_dropout_on() else e0[:, :0]  # z rows: cold-item dropout
        ids = torch.cat([batch.users, nu + batch.pos, nu + batch.neg])
        rows = self.fetch(torch.cat([rep, z, e0], 1), ids)
        rep_b, z_b, e_b = rows.split([rep.shape[1], z.shape[1], e0.shape[1]], 1)
        # compact tables: rows [users | positives | negatives] of the slice, items offset b
        ar = torch.arange(b, device=rep.device)
        users, pos, neg = ar, ar, b + ar
        n_kept, before = len(whole.users), start
        if self.spec.warm_negatives:
            keep = self.item_warm.index_select(0, batch.neg)
            warm_all = self.item_warm.index_select(0, whole.neg)
            n_kept, before = int(warm_all.sum()), int(warm_all[:start].sum())
            users, pos, neg = users[keep], pos[keep], neg[keep]
        drop = self.cold_drop(n_kept, rep.device)  # the global batch's draw, this slice's part
        if drop is not None:
            drop = drop[:, before : before + len(pos)]
        s_pos, s_neg = self._bpr_scores(rep_b, z_b, users, pos, neg, b, drop)
        # BPR (losses.bpr_loss) as this slice's sum over the global batch's count
        bpr = torch.nn.functional.softplus(s_neg - s_pos).sum() * (self.world / n_kept)
        reg = self.spec.reg * l2_batch(*e_b.chunk(3))
        return bpr, reg

    # ----------------------------------------------------------------------------- evaluation
    @torch.no_grad()
    def gather_for_eval(self, full_state: bool = False) -> dict[str, torch.Tensor] | None:
        """Collective: rank 0 caches the full scored representations for evaluation; with
        ``full_state`` also returns the single-process RecMind state dict (rank 0)."""
        full = gather_full(self.readout(self.forward_views()), self.lg)
        if self.rank == 0:
            self._full = self.scored(full)
        return self.single_state() if full_state else None

    @torch.no_grad()
    def single_state(self) -> dict[str, torch.Tensor] | None:
        """Collective: the single-process RecMind state dict on rank 0 (None elsewhere) --
        node rows gathered, the fallback positions renumbered, the replicated rest as is."""
        state = {k: v.detach() for k, v in self.state_dict().items()}
        rows = {k: gather_full(state[k], self.lg) for k in NODE_ROW_KEYS}
        if self.rank != 0:
            return None
        out = {}
        for key, value in state.items():
            if key in rows:
                out[key] = rows[key].cpu()
            elif key == FALLBACK_KEY:
                out[key] = (~rows["language.has_text"]).nonzero().squeeze(1).cpu()
            else:  # a copy: state_dict() tensors share the live parameters' storage
                out[key] = value.cpu().clone()
        return out

    def representations(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._full is None:
            raise RuntimeError("call gather_for_eval() on every rank first (rank 0 only)")
        return self._full

    @torch.no_grad()
    def probes(self) -> dict[str, torch.Tensor]:
        """Collective: ``{"gate": γ [N, L+1]}`` of every node on rank 0 (empty elsewhere and
        for ``gate = none``)."""
        if self.spec.gate == "none":
            return {}
        was = self.training
        self.eval()
        gamma = gather_full(torch.cat(self.forward_views().gammas, 1), self.lg)
        self.train(was)
        return {} if gamma is None else {"gate": gamma}

    def feature_summary(self) -> dict[str, float]:
        """Collective: :meth:`RecMind.feature_summary` over all workers' nodes."""
        has = self.language.has_text
        owned_user = torch.from_numpy(self.lg.own < self.n_users).to(has.device)
        counts = torch.stack([(~has & owned_user).sum(), (~has & ~owned_user).sum()]).double()
        dist.all_reduce(counts)
        return {"users_fallback": float(counts[0]), "items_fallback": float(counts[1])}


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x
