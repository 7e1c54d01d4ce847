"""The model contract's registry: one entry per model name.

An entry says which spec class configures the model, how to build it from (spec, split,
gathered inputs, device), which inputs the pipeline must gather for a given spec, and what a
distributed trainer must know (DDP's ``find_unused_parameters``; a per-rank builder for
``train.mode: partitioned``). The trainer and the pipeline ask the registry, never the model's
class (no ``isinstance``/``getattr`` chains), and a new model is one entry here.

Inputs (:data:`INPUT_NAMES`): ``text_features`` (frozen-LM node vectors from the embedding
job), ``node_texts`` (the texts themselves, for end-to-end LoRA), ``profiles`` (LM-written
profiles instead of templated texts, GAT-LLM), ``augmentation`` (LLMRec's artefact).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from recmind_dist.data.split import SplitData
from recmind_dist.errors import InputError
from recmind_dist.graph.adjacency import normalized_adjacency, normalized_degree
from recmind_dist.models.base import Recommender
from recmind_dist.models.inputs import ModelInputs
from recmind_dist.specs import (
    GATLLMSpec,
    LightGCNSpec,
    LLMRecSpec,
    MFSpec,
    ModelSpec,
    PopularitySpec,
    RecMindSpec,
    SimGCLSpec,
    XSimGCLSpec,
)

INPUT_NAMES = ("text_features", "node_texts", "profiles", "augmentation")

Builder = Callable[[Any, SplitData, ModelInputs, torch.device], Recommender]


@dataclass(frozen=True)
class ModelEntry:
    """How the pipeline and the trainers handle one model."""

    spec_cls: type
    build: Builder
    needs: Callable[[Any], frozenset[str]]
    #: DDP must tolerate parameters without a gradient in a step (RecMind's gates during
    #: warm-up, GAT-LLM's unused projection): costs an extra graph traversal per step.
    ddp_find_unused_parameters: bool
    #: per-rank builder for ``train.mode: partitioned`` (None: replicated only)
    partitioned: Callable[..., Recommender] | None = None


def _nothing(_: Any) -> frozenset[str]:
    return frozenset()


def _require(value: Any, spec: Any, what: str, spec_field: str = "model") -> Any:
    """``value`` (a gathered input), or an error naming the spec field that asks for it."""
    if value is None:
        raise InputError("job spec", spec_field, f"{spec.name} needs {what}; the pipeline "
                         f"gathers it (recmind_dist.pipeline.model_inputs)")
    return value


def _adjacency(data: SplitData, device: torch.device) -> torch.Tensor:
    return normalized_adjacency(data.n_users, data.n_items, data.train, device)


def _build_popularity(spec: PopularitySpec, data: SplitData, inputs: ModelInputs,
                      device: torch.device) -> Recommender:
    from recmind_dist.models.popularity import Popularity

    return Popularity(data.n_users, data.n_items, data.train)


def _build_mf(spec: MFSpec, data: SplitData, inputs: ModelInputs,
              device: torch.device) -> Recommender:
    from recmind_dist.models.mf import MF

    return MF(data.n_users, data.n_items, spec)


def _build_lightgcn(spec: LightGCNSpec, data: SplitData, inputs: ModelInputs,
                    device: torch.device) -> Recommender:
    from recmind_dist.models.lightgcn import LightGCN

    return LightGCN(data.n_users, data.n_items, _adjacency(data, device), spec, data.seed)


def _build_simgcl(spec: SimGCLSpec, data: SplitData, inputs: ModelInputs,
                  device: torch.device) -> Recommender:
    from recmind_dist.models.simgcl import SimGCL

    return SimGCL(data.n_users, data.n_items, _adjacency(data, device), spec, data.seed)


def _build_xsimgcl(spec: XSimGCLSpec, data: SplitData, inputs: ModelInputs,
                   device: torch.device) -> Recommender:
    from recmind_dist.models.simgcl import XSimGCL

    return XSimGCL(data.n_users, data.n_items, _adjacency(data, device), spec, data.seed)


def _build_partitioned_lightgcn(spec: LightGCNSpec, data: SplitData, local_graph: Any,
                                device: torch.device, init: Recommender | None,
                                seed: int) -> Recommender:
    from recmind_dist.models.partitioned_lightgcn import PartitionedLightGCN

    if spec.loss != "bpr":
        raise InputError("job spec", "model.loss", "train.mode: partitioned trains LightGCN "
                         f"with BPR only (got loss {spec.loss!r})")
    init_rows = None
    if init is not None:  # start where the single-process model starts
        init_rows = init.embedding.weight.detach()[torch.as_tensor(np.array(local_graph.own, dtype=np.int64))].clone()
    return PartitionedLightGCN(data.n_users, data.n_items, local_graph, spec, device,
                               init_rows, seed)


def _recmind_needs(spec: RecMindSpec) -> frozenset[str]:
    return frozenset({"text_features"} | ({"node_texts"} if spec.encoder == "lora" else set()))


def _build_recmind(spec: RecMindSpec, data: SplitData, inputs: ModelInputs,
                   device: torch.device) -> Recommender:
    from recmind_dist.models.recmind import RecMind
    from recmind_dist.models.text_controls import apply_text_control

    features = apply_text_control(_require(inputs.features, spec, "node text features"),
                                  spec.text_control, data.seed)
    tower = None
    if spec.encoder == "lora":
        from recmind_dist.models.lora_text import NodeTextTower

        if features.user_text is None or features.item_text is None:
            raise InputError("job spec", "model.encoder", "encoder: lora needs the node texts")
        tower = NodeTextTower(
            [*features.user_text, *features.item_text], data.n_users,
            model=features.info.get("lm"), pooling=features.info.get("pooling", "auto"),
            max_length=spec.lora_max_length, r=spec.lora_r, alpha=spec.lora_alpha)
    degree = np.concatenate([data.user_degree, data.item_degree])
    return RecMind(
        data.n_users, data.n_items, _adjacency(data, device), features, degree,
        normalized_degree(data.n_users, data.n_items, data.train), spec, tower, data.seed,
    )


def _build_partitioned_recmind(spec: RecMindSpec, data: SplitData, local_graph: Any,
                               device: torch.device, init: Recommender | None,
                               seed: int) -> Recommender:
    from recmind_dist.models.partitioned_recmind import PartitionedRecMind

    if init is None:  # centring, PCA and id_init need every node's text: the driver's model
        raise InputError("job spec", "train.mode", "partitioned RecMind starts from the "
                         "driver's single-process model (train_distributed(model=...), as "
                         "the pipeline passes it)")
    return PartitionedRecMind(init, local_graph, device)


def _gat_needs(spec: GATLLMSpec) -> frozenset[str]:
    if spec.features == "id":
        return frozenset()
    return frozenset({"text_features"} | ({"profiles"} if spec.profiles is not None else set()))


def _build_gat_llm(spec: GATLLMSpec, data: SplitData, inputs: ModelInputs,
                   device: torch.device) -> Recommender:
    from recmind_dist.models.gat_llm import GATLLM, stacked_text

    text = None
    if spec.features != "id":
        text = stacked_text(_require(inputs.features, spec, f"profile vectors (features="
                                             f"{spec.features!r})", "model.features"))
    return GATLLM(data.n_users, data.n_items, data.train, text, spec)


def _llmrec_needs(spec: LLMRecSpec) -> frozenset[str]:
    return frozenset({"augmentation"})


def _build_llmrec(spec: LLMRecSpec, data: SplitData, inputs: ModelInputs,
                  device: torch.device) -> Recommender:
    from recmind_dist.models.llmrec import LLMRec

    aug = _require(inputs.augmentation, spec, "its augmentation artefact")
    fu, fi = (aug.user_features, aug.item_features) if spec.side_features else (None, None)
    return LLMRec(data.n_users, data.n_items, _adjacency(data, device), aug.aug_triples, fu, fi,
                  spec, data.seed)


REGISTRY: dict[str, ModelEntry] = {
    "popularity": ModelEntry(PopularitySpec, _build_popularity, _nothing, False),
    "mf": ModelEntry(MFSpec, _build_mf, _nothing, False),
    "lightgcn": ModelEntry(LightGCNSpec, _build_lightgcn, _nothing, False,
                           _build_partitioned_lightgcn),
    "simgcl": ModelEntry(SimGCLSpec, _build_simgcl, _nothing, False),
    "xsimgcl": ModelEntry(XSimGCLSpec, _build_xsimgcl, _nothing, False),
    "recmind": ModelEntry(RecMindSpec, _build_recmind, _recmind_needs, True,
                          _build_partitioned_recmind),
    "gat_llm": ModelEntry(GATLLMSpec, _build_gat_llm, _gat_needs, True),
    "llmrec": ModelEntry(LLMRecSpec, _build_llmrec, _llmrec_needs, True),
}


def model_entry(spec: ModelSpec) -> ModelEntry:
    """The registry entry of ``spec`` (its ``name``)."""
    entry = REGISTRY.get(spec.name)
    if entry is None or not isinstance(spec, entry.spec_cls):
        raise InputError("job spec", "model.name", f"no model registered as {spec.name!r}; "
                         f"known: {sorted(REGISTRY)}")
    return entry


def needed_inputs(spec: ModelSpec) -> frozenset[str]:
    """Which inputs (:data:`INPUT_NAMES`) the pipeline must gather before building ``spec``."""
    return model_entry(spec).needs(spec)


def build_model(spec: ModelSpec, data: SplitData, inputs: ModelInputs | None = None,
                device: str | torch.device = "cpu") -> Recommender:
    """The model of ``spec`` on ``data``, from the gathered ``inputs``, on ``device``."""
    device = torch.device(device)
    return model_entry(spec).build(spec, data, inputs or ModelInputs(), device).to(device)
