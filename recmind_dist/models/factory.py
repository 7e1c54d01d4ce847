"""Build a model from its spec and a split."""

from __future__ import annotations

import numpy as np
import torch

from recmind_dist.data.split import SplitData
from recmind_dist.errors import InputError
from recmind_dist.graph.adjacency import normalized_adjacency, normalized_degree
from recmind_dist.models.base import Recommender
from recmind_dist.models.lightgcn import LightGCN
from recmind_dist.models.mf import MF
from recmind_dist.models.popularity import Popularity
from recmind_dist.specs import (
    GATLLMSpec,
    LightGCNSpec,
    MFSpec,
    ModelSpec,
    PopularitySpec,
    RecMindSpec,
)


def needs_features(spec: ModelSpec) -> bool:
    """Whether :func:`build_model` needs node text features for this spec."""
    if isinstance(spec, GATLLMSpec):
        return spec.features != "id"
    return isinstance(spec, RecMindSpec)


def build_model(
    spec: ModelSpec, data: SplitData, device: str | torch.device = "cpu", features=None
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
        tower = None
        if spec.encoder == "lora":
            from recmind_dist.models.lora_text import NodeTextTower

            if features.user_text is None or features.item_text is None:
                raise InputError("job spec", "model.encoder", "encoder: lora needs the node "
                                 "texts (recmind_dist.models.features.attach_node_texts)")
            tower = NodeTextTower(
                [*features.user_text, *features.item_text], data.n_users,
                model=features.info.get("lm"), pooling=features.info.get("pooling", "auto"),
                max_length=spec.lora_max_length, r=spec.lora_r, alpha=spec.lora_alpha)
        model = RecMind(
            data.n_users, data.n_items, adj, features, degree,
            normalized_degree(data.n_users, data.n_items, data.train), spec=spec,
            text_tower=tower,
        )
    elif isinstance(spec, GATLLMSpec):
        from recmind_dist.models.gat_llm import GATLLM, stacked_text

        if needs_features(spec) and features is None:
            raise InputError("job spec", "model.features", f"gat_llm with features="
                             f"{spec.features!r} needs node text features (profiles)")
        model = GATLLM(
            data.n_users, data.n_items, data.train,
            stacked_text(features) if needs_features(spec) else None,
            features=spec.features, dim=spec.dim, layers=spec.layers, heads=spec.heads,
            alpha=spec.alpha, reg=spec.reg, dropout=spec.dropout, gat_version=spec.gat_version,
            hard_negative_ratio=spec.hard_negative_ratio,
            hard_negative_pool=spec.hard_negative_pool,
            hard_negative_skip=spec.hard_negative_skip,
            hard_negative_refresh=spec.hard_negative_refresh,
            hard_negative_start=spec.hard_negative_start, forward_every=spec.forward_every,
        )  # fmt: skip
    elif getattr(spec, "name", None) == "llmrec":
        from recmind_dist.models.llmrec import build_llmrec

        model = build_llmrec(spec, data, device)
    else:  # pragma: no cover - the discriminated union makes this unreachable
        raise TypeError(f"unknown model spec {type(spec).__name__}")
    return model.to(device)
