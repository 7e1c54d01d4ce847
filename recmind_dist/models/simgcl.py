"""SimGCL (Yu et al., SIGIR 2022) and XSimGCL (Yu et al., TKDE 2023): LightGCN with
noise-perturbed views and an InfoNCE term.

Both propagate with LightGCN's code (:func:`recmind_dist.graph.propagate.lightgcn_layers`)
and read out the mean of layers 1..L -- **without** layer 0, as in the papers and
RecBole-GNN:

    E^{l+1} = Â E^l,   h = 1/L Σ_{l=1..L} E^l,   score(u, i) = h_uᵀ h_i.

A perturbed propagation adds uniform noise in each state's own orthant after every layer:

    E'^{l+1} = Â E'^l + ε · sign(Â E'^l) ⊙ Δ/‖Δ‖₂,   Δ ~ U(0, 1)^{N×d}  (row-wise norm),

so every row moves by a vector of norm ε (ε ‖sign ⊙ Δ/‖Δ‖‖ = ε where no entry is 0) that
keeps the sign of each coordinate. With cosine InfoNCE at temperature τ over the batch's
distinct users U_B and distinct positive items I_B (:func:`recmind_dist.losses.infonce`),

    cl(a, b) = InfoNCE(a[U_B], b[U_B]) + InfoNCE(a[I_B], b[I_B]).

* **SimGCL**: two independent perturbed propagations h', h'' give the views; the ranking
  loss is on the clean h:

      L = L_rank(h) + λ · cl(h', h'').

* **XSimGCL** (cross-layer): one perturbed propagation E'^1..E'^L; its mean h' is both the
  ranking representation and one view, the other view is layer l* of the same pass:

      L = L_rank(h') + λ · cl(h', E'^{l*}).

  Evaluation (``representations``) uses the clean propagation.

L_rank is the spec's ranking loss (BPR or sampled softmax, plus λ_reg L2 on the batch's
layer-0 rows: :mod:`recmind_dist.models.ranking_loss`). The noise comes from the model's
:class:`~recmind_dist.models.rng.SeededGenerator` (seeded from the run seed). With data
parallel workers each worker's InfoNCE runs over its own sub-batch's nodes (the noise, and so
the views, are the same on every worker).
"""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F

from recmind_dist.graph.propagate import layer_mean, lightgcn_layers
from recmind_dist.losses import infonce
from recmind_dist.models.base import Batch
from recmind_dist.models.lightgcn import LightGCN, LightGCNSettings


class SimGCLSettings(LightGCNSettings, Protocol):
    """What SimGCL reads from its spec beyond LightGCN's settings."""

    eps: float
    lambda_cl: float
    tau_cl: float


class XSimGCLSettings(SimGCLSettings, Protocol):
    cl_layer: int


def sign_noise(x: torch.Tensor, eps: float, generator: torch.Generator) -> torch.Tensor:
    """ε · sign(x) ⊙ Δ/‖Δ‖₂ with Δ ~ U(0, 1) row-wise: per row a random vector of norm ε
    (less where x has zero entries) in x's orthant."""
    delta = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return eps * torch.sign(x) * F.normalize(delta, dim=-1)


def batch_contrastive(a: torch.Tensor, b: torch.Tensor, batch: Batch, n_users: int,
                      tau: float) -> torch.Tensor:
    """cl(a, b): InfoNCE of the batch's distinct users plus of its distinct positive items,
    between two [N, d] views (users first), at temperature τ."""
    users = torch.unique(batch.users)
    items = n_users + torch.unique(batch.pos)
    return (infonce(a.index_select(0, users), b.index_select(0, users), tau)
            + infonce(a.index_select(0, items), b.index_select(0, items), tau))


class SimGCL(LightGCN):
    """SimGCL: ``spec`` gives LightGCN's settings plus ε (``eps``), λ (``lambda_cl``) and τ
    (``tau_cl``); ``seed`` seeds the noise (and the softmax loss's extra negatives)."""

    def __init__(self, n_users: int, n_items: int, adj: torch.Tensor, spec: SimGCLSettings,
                 seed: int) -> None:
        if spec.layers < 1:
            raise ValueError("SimGCL reads out layers 1..L: it needs layers >= 1")
        super().__init__(n_users, n_items, adj, spec, seed)
        self.eps, self.lambda_cl, self.tau_cl = spec.eps, spec.lambda_cl, spec.tau_cl

    @classmethod
    def draws_random(cls, spec: SimGCLSettings) -> bool:
        return True  # the perturbed views

    def _perturb(self, x: torch.Tensor) -> torch.Tensor:
        return x + sign_noise(x, self.eps, self.rng.on(x.device))

    def layer_states(self, perturbed: bool) -> list[torch.Tensor]:
        """[E^1 .. E^L] (perturbed: E'^1 .. E'^L) from the ID table."""
        perturb = self._perturb if perturbed else None
        return lightgcn_layers(self.adj, self.embedding.weight, self.n_layers, perturb)[1:]

    def layer_mean(self, x0: torch.Tensor) -> torch.Tensor:
        """h = mean over [E^1 .. E^L] (layer 0 left out) for the stacked table ``x0``."""
        return layer_mean(lightgcn_layers(self.adj, x0, self.n_layers)[1:])

    def contrastive(self, a: torch.Tensor, b: torch.Tensor, batch: Batch) -> torch.Tensor:
        """:func:`batch_contrastive` at this model's τ."""
        return batch_contrastive(a, b, batch, self.n_users, self.tau_cl)

    def training_loss(self, batch: Batch, epoch: int) -> tuple[torch.Tensor, dict[str, float]]:
        h_user, h_item = self.representations()
        parts = self.ranking_terms(h_user, h_item, batch)
        loss = sum(parts.values())
        if self.lambda_cl > 0:
            view1 = layer_mean(self.layer_states(perturbed=True))
            view2 = layer_mean(self.layer_states(perturbed=True))
            parts["cl"] = self.contrastive(view1, view2, batch)
            loss = loss + self.lambda_cl * parts["cl"]
        return loss, {k: float(v.detach()) for k, v in parts.items()}


class XSimGCL(SimGCL):
    """XSimGCL: SimGCL's settings plus the contrasted layer l* (``cl_layer``, 1..L)."""

    def __init__(self, n_users: int, n_items: int, adj: torch.Tensor, spec: XSimGCLSettings,
                 seed: int) -> None:
        if not 1 <= spec.cl_layer <= spec.layers:
            raise ValueError(f"cl_layer must be in 1..layers={spec.layers}, got {spec.cl_layer}")
        super().__init__(n_users, n_items, adj, spec, seed)
        self.cl_layer = spec.cl_layer

    def training_loss(self, batch: Batch, epoch: int) -> tuple[torch.Tensor, dict[str, float]]:
        states = self.layer_states(perturbed=True)
        h = layer_mean(states)
        parts = self.ranking_terms(h[: self.n_users], h[self.n_users :], batch)
        loss = sum(parts.values())
        if self.lambda_cl > 0:
            parts["cl"] = self.contrastive(h, states[self.cl_layer - 1], batch)
            loss = loss + self.lambda_cl * parts["cl"]
        return loss, {k: float(v.detach()) for k, v in parts.items()}
