"""Plain containers of what a model is built from, beyond its spec and the split.

The pipeline gathers these (text features from the embedding job's cache, the LLMRec
augmentation artefact) and hands them to a model's builder; models never load them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class NodeFeatures:
    """Frozen text vectors per LOCAL node id (zero rows where ``has_text`` is False)."""

    user_vec: np.ndarray  # [U, d] float32
    item_vec: np.ndarray  # [I, d] float32
    user_has_text: np.ndarray  # [U] bool
    item_has_text: np.ndarray  # [I] bool
    info: dict[str, Any] = field(default_factory=dict)
    user_text: list[str] | None = None  # per local user ("" = none); end-to-end LoRA only
    item_text: list[str] | None = None

    def __post_init__(self) -> None:
        self.user_vec = np.ascontiguousarray(self.user_vec, dtype=np.float32)
        self.item_vec = np.ascontiguousarray(self.item_vec, dtype=np.float32)
        self.user_has_text = np.asarray(self.user_has_text, dtype=bool)
        self.item_has_text = np.asarray(self.item_has_text, dtype=bool)
        if self.user_vec.shape[1] != self.item_vec.shape[1]:
            raise ValueError("user and item vectors must have the same dimension")
        if len(self.user_has_text) != len(self.user_vec) or len(self.item_has_text) != len(
            self.item_vec
        ):
            raise ValueError("has_text masks must have one entry per node")

    @property
    def dim(self) -> int:
        return int(self.user_vec.shape[1])

    def summary(self) -> dict[str, float]:
        return {
            "users_with_text": float(self.user_has_text.sum()),
            "users_without_text": float((~self.user_has_text).sum()),
            "items_with_text": float(self.item_has_text.sum()),
            "items_without_text": float((~self.item_has_text).sum()),
            "dim": float(self.dim),
        }


@dataclass
class ModelInputs:
    """Everything a model's builder may take beyond its spec and the split; the pipeline fills
    the fields that :func:`recmind_dist.models.registry.needed_inputs` names."""

    features: NodeFeatures | None = None  # "text_features" (+ texts for "node_texts")
    augmentation: LLMRecInputs | None = None  # "augmentation": LLMRec's artefact arrays


@dataclass
class LLMRecInputs:
    """What LLMRec is built from beyond its spec and the split: the augmentation artefact's
    arrays on the split's LOCAL ids (made by :mod:`recmind_dist.pipeline.augmentation`).

    ``aug_triples``: [M, 3] int64 (user, pos, neg). ``user_features`` / ``item_features``:
    [U, D] / [I, D] float32 text vectors (zero rows: no text), or both None (no side
    features)."""

    aug_triples: np.ndarray
    user_features: np.ndarray | None
    item_features: np.ndarray | None

    def __post_init__(self) -> None:
        self.aug_triples = np.asarray(self.aug_triples, dtype=np.int64).reshape(-1, 3)
        if (self.user_features is None) != (self.item_features is None):
            raise ValueError("give both user and item side features, or neither")
