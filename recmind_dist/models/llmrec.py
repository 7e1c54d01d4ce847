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
  :meth:`on_epoch_start` and cut into as many contiguous chunks as the epoch has E batches.
* **Noisy-pair pruning** (:func:`recmind_dist.augment.denoise.prune_keep_mask`): at the start
  of every epoch the ``⌊ω·|E_A|⌋`` augmented triples with the largest BPR loss under the
  current model are dropped for that epoch (ω = ``prune_rate``).
* **Side features** from LM-enriched item attributes and user profiles, embedded by the
  frozen encoder (f_u, f_i ∈ R^D), projected and added to the layer-0 ID embeddings:

      E⁰_u = e_u + P_u f_u,   E⁰_i = e_i + P_i f_i   (nodes without text: + 0).

* **MAE feature refinement** (:class:`recmind_dist.augment.denoise.FeatureMAE`): mask a
  fraction of the feature dimensions of every node, reconstruct them through P and a linear
  decoder; weight ``mae_weight``; each step reconstructs a random subset of at most
  ``mae_rows`` users and as many items (an unbiased estimate of the all-node loss).

Variants: ``full``; ``no_prune`` (ω = 0); ``no_mae`` (w_M = 0); ``edges_only`` (no side
features, hence no MAE: LightGCN + pruned augmented triples).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from recmind_dist.augment.denoise import FeatureMAE, prune_keep_mask, triple_bpr_losses
from recmind_dist.models.base import Batch
from recmind_dist.models.lightgcn import LightGCN

VARIANTS = ("full", "no_prune", "no_mae", "edges_only")


class LLMRec(LightGCN):
    def __init__(
        self,
        n_users: int,
        n_items: int,
        adj: torch.Tensor,
        aug_triples: np.ndarray,
        n_train_edges: int,
        user_features: np.ndarray | None = None,
        item_features: np.ndarray | None = None,
        dim: int = 64,
        n_layers: int = 3,
        reg: float = 1e-4,
        variant: str = "full",
        aug_weight: float = 1.0,
        prune_rate: float = 0.1,
        mae_ratio: float = 0.3,
        mae_weight: float = 0.1,
        mae_rows: int | None = 512,
        seed: int = 0,
    ) -> None:
        super().__init__(n_users, n_items, adj, dim, n_layers, reg)
        if variant not in VARIANTS:
            raise ValueError(f"unknown LLMRec variant {variant!r}; expected one of {VARIANTS}")
        self.variant = variant
        self.aug_weight = float(aug_weight)
        self.prune_rate = 0.0 if variant == "no_prune" else float(prune_rate)
        use_features = variant != "edges_only" and user_features is not None
        self.mae_weight = 0.0 if variant in ("no_mae", "edges_only") else float(mae_weight)
        self.n_train_edges = int(n_train_edges)
        triples = torch.as_tensor(np.asarray(aug_triples, dtype=np.int64).reshape(-1, 3))
        self.register_buffer("aug", triples, persistent=False)
        self._gen = torch.Generator().manual_seed(int(seed))
        self._epoch_aug = triples
        self._cursor, self._chunk = 0, 0
        self.last_prune: dict[str, float] = {}
        self.use_features = bool(use_features)
        if self.use_features:
            fu = torch.as_tensor(np.asarray(user_features, np.float32))
            fi = torch.as_tensor(np.asarray(item_features, np.float32))
            if fu.shape[0] != n_users or fi.shape[0] != n_items or fu.shape[1] != fi.shape[1]:
                raise ValueError("side features must be [U, D] and [I, D]")
            self.register_buffer("f_user", fu, persistent=False)
            self.register_buffer("f_item", fi, persistent=False)
            d_text = fu.shape[1]
            self.user_proj = nn.Linear(d_text, dim)
            self.item_proj = nn.Linear(d_text, dim)
            for p in (self.user_proj, self.item_proj):  # start close to LightGCN
                nn.init.normal_(p.weight, std=0.1 / math.sqrt(d_text))
                nn.init.zeros_(p.bias)
            self.register_buffer("has_user", (fu.abs().sum(1, keepdim=True) > 0).float(),
                                 persistent=False)
            self.register_buffer("has_item", (fi.abs().sum(1, keepdim=True) > 0).float(),
                                 persistent=False)
            self.mae_user = FeatureMAE(d_text, dim, mae_ratio, mae_rows)
            self.mae_item = FeatureMAE(d_text, dim, mae_ratio, mae_rows)

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

    @torch.no_grad()
    def on_epoch_start(self, epoch: int) -> None:
        """Prune the noisiest augmented triples under the current model, shuffle the rest."""
        aug = self.aug
        if len(aug) and self.prune_rate > 0:
            was = self.training
            self.eval()
            hu, hi = self.representations()
            self.train(was)
            losses = triple_bpr_losses(hu, hi, aug)
            keep = prune_keep_mask(losses, self.prune_rate)
            self.last_prune = {"aug_kept": float(keep.sum()), "aug_dropped": float((~keep).sum()),
                               "aug_loss_kept": float(losses[keep].mean()) if keep.any() else 0.0,
                               "aug_loss_dropped": float(losses[~keep].mean())
                               if (~keep).any() else 0.0}  # fmt: skip
            aug = aug[keep]
        perm = torch.randperm(len(aug), generator=self._gen).to(aug.device)
        self._epoch_aug = aug[perm]
        self._cursor, self._chunk = 0, 0

    def _aug_batch(self, batch_size: int) -> torch.Tensor:
        if self._chunk == 0:  # first step of the epoch: as many chunks as E batches
            n_batches = max(1, math.ceil(self.n_train_edges / max(batch_size, 1)))
            self._chunk = math.ceil(len(self._epoch_aug) / n_batches)
        out = self._epoch_aug[self._cursor : self._cursor + self._chunk]
        self._cursor += self._chunk
        return out

    def training_loss(self, batch: Batch, epoch: int) -> tuple[torch.Tensor, dict[str, float]]:
        x0 = self.layer0()
        h = self.layer_mean(x0)
        hu, hi = h[: self.n_users], h[self.n_users :]
        parts = self.bpr_terms(hu, hi, batch)
        loss = parts["bpr"] + parts["reg"]
        if self.aug_weight > 0 and len(self._epoch_aug):
            t = self._aug_batch(len(batch.users))
            if len(t):
                ap = self.bpr_terms(hu, hi, Batch(t[:, 0], t[:, 1], t[:, 2]))
                parts["aug_bpr"], parts["aug_reg"] = ap["bpr"], ap["reg"]
                share = len(t) / max(len(batch.users), 1)
                loss = loss + self.aug_weight * share * (ap["bpr"] + ap["reg"])
        if self.use_features and self.mae_weight > 0:
            lu, _ = self.mae_user(self.f_user, self.user_proj, self._gen)
            li, _ = self.mae_item(self.f_item, self.item_proj, self._gen)
            parts["mae"] = 0.5 * (lu + li)
            loss = loss + self.mae_weight * parts["mae"]
        return loss, {k: float(v.detach()) for k, v in parts.items()}


def build_llmrec(spec, data, device="cpu") -> LLMRec:
    """The model of an LLMRec spec on ``data``, from the augmentation artefact that
    :func:`recmind_dist.augment.run.ensure_augmentation` made for this spec and split."""
    from recmind_dist.augment.run import find_artifact
    from recmind_dist.errors import InputError
    from recmind_dist.graph.adjacency import normalized_adjacency

    art = find_artifact(spec, data)
    if art is None:
        raise InputError("job spec", "model", "no LLMRec augmentation for this split yet: train "
                         "with recmind_dist.augment.run.run_llmrec (it makes the artefact first)")
    triples = art.local_triples(data)
    fu, fi = art.local_features(data) if spec.variant != "edges_only" else (None, None)
    adj = normalized_adjacency(data.n_users, data.n_items, data.train, device)
    return LLMRec(
        data.n_users, data.n_items, adj, triples, len(data.train), fu, fi, dim=spec.dim,
        n_layers=spec.layers, reg=spec.reg, variant=spec.variant, aug_weight=spec.aug_weight,
        prune_rate=spec.prune_rate, mae_ratio=spec.mae_ratio, mae_weight=spec.mae_weight,
        seed=data.seed,
    )
