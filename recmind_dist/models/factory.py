"""Build a model from its spec and a split."""

from __future__ import annotations

import torch

from recmind_dist.config import LightGCNSpec, MFSpec, ModelSpec, PopularitySpec
from recmind_dist.data.split import SplitData
from recmind_dist.graph.adjacency import normalized_adjacency
from recmind_dist.models.base import Recommender
from recmind_dist.models.lightgcn import LightGCN
from recmind_dist.models.mf import MF
from recmind_dist.models.popularity import Popularity


def build_model(spec: ModelSpec, data: SplitData, device: str | torch.device = "cpu") -> Recommender:
    if isinstance(spec, PopularitySpec):
        model: Recommender = Popularity(data.n_users, data.n_items, data.train)
    elif isinstance(spec, MFSpec):
        model = MF(data.n_users, data.n_items, spec.dim, spec.reg)
    elif isinstance(spec, LightGCNSpec):
        adj = normalized_adjacency(data.n_users, data.n_items, data.train, device)
        model = LightGCN(data.n_users, data.n_items, adj, spec.dim, spec.layers, spec.reg)
    else:  # pragma: no cover - the discriminated union makes this unreachable
        raise TypeError(f"unknown model spec {type(spec).__name__}")
    return model.to(device)
