"""LLMRec (Wei et al., WSDM 2024) on the LightGCN backbone.

The backbone is :class:`recmind_dist.models.lightgcn.LightGCN` itself (subclassed, not
copied): propagation over the ORIGINAL training graph E, h = mean of the layer states.

What LLMRec adds (see :mod:`recmind_dist.augment` for how the augmentation is made):

* **Augmented BPR triples** E_A = {(u, i+, i−)} chosen by an LM among the base model's
  candidates. They are never added to E (not to the graph, not to the trainer's edge
  batches); the model keeps them in its own buffer and every training step adds a separate
  augmented sub-batch with its own weight:

      L = BPR(E batch) + reg + w_A · (m/B) · (BPR(E_A sub-batch) + reg) + w_M · L_mae,

  with B the E batch size and m the augmented sub-batch size (both BPR terms are means), so
  ``aug_weight`` w_A is the weight of ONE augmented triple relative to one original edge
  (w_A = 1: an LM-chosen triple counts as much as an observed edge, as when the paper's
  code concatenates the augmented pairs into the batch).

  Each epoch visits every kept augmented triple once: they are shuffled at
  :meth:`on_epoch_start` and cut into as many contiguous chunks as the epoch has GLOBAL E
  batches (:mod:`recmind_dist.models.aug_schedule`). Under replicated data parallelism
  (:meth:`set_shard`) worker r takes its contiguous share of m_r triples of each chunk and
  its own slice of B_r edges of the E batch, and weighs the augmented term by its own
  m_r/B_r. The trainer scales worker r's loss by W·B_r/B and averages the W gradients, so

      (1/W) Σ_r W·(B_r/B)·w_A·(m_r/B_r)·mean_{t∈r} ℓ_t = w_A·(1/B)·Σ_{t∈chunk} ℓ_t
                                                    = w_A·(m/B)·mean_{t∈chunk} ℓ_t,

  the single-process term (ℓ_t: BPR + reg of triple t).
* **Noisy-pair pruning** (:func:`recmind_dist.models.denoise.prune_keep_mask`): at the start
  of every epoch the ``⌊ω·|E_A|⌋`` augmented triples with the largest BPR loss under the
  current model are dropped for that epoch (ω = ``prune_rate``); the counts and mean losses
  of the kept and dropped triples are the model's :meth:`epoch_metrics`.
* **Side features** from LM-enriched item attributes and user profiles, embedded by the
  frozen encoder (f_u, f_i ∈ R^D), projected and added to the layer-0 ID embeddings:

      E⁰_u = e_u + P_u f_u,   E⁰_i = e_i + P_i f_i   (nodes without text: + 0).

* **MAE feature refinement** (:class:`recmind_dist.models.denoise.FeatureMAE`): mask a
  fraction of the feature dimensions of every node, reconstruct them through P and a linear
  decoder; weight ``mae_weight``; each step reconstructs a random subset of at most
  ``mae_rows`` users and as many items (an unbiased estimate of the all-node loss).

Every setting is read from :class:`recmind_dist.specs.LLMRecSpec`, whose ``variant`` presets
(``no_prune``, ``no_mae``, ``edges_only``) are resolved into ``prune_rate``, ``mae_weight``
and ``side_features`` at validation; the model never reads ``variant``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from recmind_dist.models.aug_schedule import AugSchedule
from recmind_dist.models.base import Batch
from recmind_dist.models.denoise import FeatureMAE, prune_keep_mask, triple_bpr_losses
from recmind_dist.models.lightgcn import LightGCN
from recmind_dist.specs import LightGCNSpec, LLMRecSpec

#: MAE rows reconstructed per step and node type (a fixed cost cap, not a tuned setting)


class LLMRec(LightGCN):
    """``aug_triples`` [M, 3] local (user, pos, neg) (the epoch's step count comes from the
    trainer's :meth:`on_epoch_start`); ``user_features`` /
    ``item_features`` [U, D] / [I, D] or None (no side features); ``seed`` seeds the model's
    own generator (epoch shuffles, MAE masks)."""

    def __init__(
        self,
        n_users: int,
        n_items: int,
        adj: torch.Tensor,
        aug_triples: np.ndarray,
        user_features: np.ndarray | None,
        item_features: np.ndarray | None,
        spec: LLMRecSpec,
        seed: int,
    ) -> None:
        # the backbone is LightGCN with BPR (its dim / layers / reg), as in the paper
        super().__init__(n_users, n_items, adj,
                         LightGCNSpec(dim=spec.dim, layers=spec.layers, reg=spec.reg), seed)
        self.spec = spec
        triples = torch.as_tensor(np.asarray(aug_triples, dtype=np.int64).reshape(-1, 3))
        self.register_buffer("aug", triples, persistent=False)
        self._gen = torch.Generator().manual_seed(int(seed))
        self.schedule = AugSchedule()
        self.last_prune: dict[str, float] = {}
        self.use_features = bool(spec.side_features and user_features is not None)
        if self.use_features:
            fu = torch.as_tensor(np.asarray(user_features, np.float32))
            fi = torch.as_tensor(np.asarray(item_features, np.float32))
            if fu.shape[0] != n_users or fi.shape[0] != n_items or fu.shape[1] != fi.shape[1]:
                raise ValueError("side features must be [U, D] and [I, D]")
            self.register_buffer("f_user", fu, persistent=False)
            self.register_buffer("f_item", fi, persistent=False)
            d_text = fu.shape[1]
            self.user_proj = nn.Linear(d_text, spec.dim)
            self.item_proj = nn.Linear(d_text, spec.dim)
            for p in (self.user_proj, self.item_proj):  # start close to LightGCN
                nn.init.normal_(p.weight, std=0.1 / math.sqrt(d_text))
                nn.init.zeros_(p.bias)
            self.register_buffer("has_user", (fu.abs().sum(1, keepdim=True) > 0).float(),
                                 persistent=False)
            self.register_buffer("has_item", (fi.abs().sum(1, keepdim=True) > 0).float(),
                                 persistent=False)
            self.mae_user = FeatureMAE(d_text, spec.dim, spec.mae_ratio, spec.mae_rows)
            self.mae_item = FeatureMAE(d_text, spec.dim, spec.mae_ratio, spec.mae_rows)

    # ---------------------------------------------------------------------------- forward

    def side(self) -> torch.Tensor:
        """[U+I, dim] projected side features (zero rows for nodes without text)."""
        su = self.user_proj(self.f_user) * self.has_user
        si = self.item_proj(self.f_item) * self.has_item
        return torch.cat([su, si], 0)

    def layer0(self) -> torch.Tensor:
        e = self.embedding.weight
        return e + self.side() if self.use_features else e

    def representations(self) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.layer_mean(self.layer0())
        return h[: self.n_users], h[self.n_users :]

    # ---------------------------------------------------------------------------- training

    def set_shard(self, rank: int, world: int) -> None:
        """Replicated data parallel: take share ``rank`` of ``world`` of every chunk."""
        self.schedule.set_shard(rank, world)

    def epoch_metrics(self) -> dict[str, float]:
        """This epoch's pruning: triples kept/dropped and their mean BPR loss (empty: ω = 0)."""
        return dict(self.last_prune)

    @torch.no_grad()
    def on_epoch_start(self, epoch: int, steps_per_epoch: int) -> None:
        """Prune the noisiest augmented triples under the current model, shuffle the rest and
        cut them into ``steps_per_epoch`` chunks (one per global E batch)."""
        aug = self.aug
        if len(aug) and self.spec.prune_rate > 0:
            was = self.training
            self.eval()
            hu, hi = self.representations()
            self.train(was)
            losses = triple_bpr_losses(hu, hi, aug)
            keep = prune_keep_mask(losses, self.spec.prune_rate)
            self.last_prune = {"aug_kept": float(keep.sum()), "aug_dropped": float((~keep).sum()),
                               "aug_loss_kept": float(losses[keep].mean()) if keep.any() else 0.0,
                               "aug_loss_dropped": float(losses[~keep].mean())
                               if (~keep).any() else 0.0}
            aug = aug[keep]
        perm = torch.randperm(len(aug), generator=self._gen).to(aug.device)
        self.schedule.start_epoch(aug[perm], steps_per_epoch)

    def training_loss(self, batch: Batch, epoch: int) -> tuple[torch.Tensor, dict[str, float]]:
        x0 = self.layer0()
        h = self.layer_mean(x0)
        hu, hi = h[: self.n_users], h[self.n_users :]
        parts = self.bpr_terms(hu, hi, batch)
        loss = parts["bpr"] + parts["reg"]
        if self.spec.aug_weight > 0 and len(self.aug):
            t = self.schedule.next_share()
            if len(t):
                ap = self.bpr_terms(hu, hi, Batch(t[:, 0], t[:, 1], t[:, 2]))
                parts["aug_bpr"], parts["aug_reg"] = ap["bpr"], ap["reg"]
                share = len(t) / max(len(batch.users), 1)  # m_r / B_r
                loss = loss + self.spec.aug_weight * share * (ap["bpr"] + ap["reg"])
        if self.use_features and self.spec.mae_weight > 0:
            lu, _ = self.mae_user(self.f_user, self.user_proj, self._gen)
            li, _ = self.mae_item(self.f_item, self.item_proj, self._gen)
            parts["mae"] = 0.5 * (lu + li)
            loss = loss + self.spec.mae_weight * parts["mae"]
        return loss, {k: float(v.detach()) for k, v in parts.items()}
