"""Build a model from its spec and a split."""

from __future__ import annotations

import numpy as np
import torch

from recmind_dist.config import LightGCNSpec, MFSpec, ModelSpec, PopularitySpec, RecMindSpec
from recmind_dist.data.split import SplitData
from recmind_dist.errors import InputError
from recmind_dist.graph.adjacency import normalized_adjacency, normalized_degree
from recmind_dist.models.base import Recommender
from recmind_dist.models.lightgcn import LightGCN
from recmind_dist.models.mf import MF
from recmind_dist.models.popularity import Popularity


def needs_features(spec: ModelSpec) -> bool:
    """Whether :func:`build_model` needs node text features for this spec."""
    return isinstance(spec, RecMindSpec)


def build_model(
    spec: ModelSpec, data: SplitData, device: str | torch.device = "cpu", features=None  # noqa: ANN001
) -> Recommender:
    """``features``: :class:`recmind_dist.models.features.NodeFeatures` for models that
    :func:`needs_features` (RecMind); ignored otherwise."""
    if isinstance(spec, PopularitySpec):
        model: Recommender = Popularity(data.n_users, data.n_items, data.train)
    elif isinstance(spec, MFSpec):
        model = MF(data.n_users, data.n_items, spec.dim, spec.reg)
    elif isinstance(spec, LightGCNSpec):
        adj = normalized_adjacency(data.n_users, data.n_items, data.train, device)
        model = LightGCN(data.n_users, data.n_items, adj, spec.dim, spec.layers, spec.reg)
    elif isinstance(spec, RecMindSpec):
        from recmind_dist.models.recmind import RecMind

        if features is None:
            raise InputError("job spec", "model", "recmind needs node text features "
                             "(recmind_dist.models.features.node_text_features)")
        adj = normalized_adjacency(data.n_users, data.n_items, data.train, device)
        degree = np.concatenate([data.user_degree, data.item_degree])
        model = RecMind(
            data.n_users, data.n_items, adj, features, degree,
            normalized_degree(data.n_users, data.n_items, data.train),
            dim=spec.dim, n_layers=spec.layers, reg=spec.reg, tau=spec.tau,
            lambda_align=spec.lambda_align, warmup_epochs=spec.warmup_epochs,
            queue_size=spec.queue_size, momentum=spec.momentum,
            adapter_hidden=spec.adapter_hidden, variant=spec.variant, gate_init=spec.gate_init,
            fixed_gamma=spec.fixed_gamma, late_fusion=spec.late_fusion, fallback=spec.fallback,
            fallback_hidden=spec.fallback_hidden, align_view=spec.align_view,
            isolated_text_only=spec.isolated_text_only, warm_negatives=spec.warm_negatives,
            align_grad=spec.align_grad,
        )  # fmt: skip
    else:  # pragma: no cover - the discriminated union makes this unreachable
        raise TypeError(f"unknown model spec {type(spec).__name__}")
    return model.to(device)
