"""Controls for the language view: does a gain come from what the texts *say*?

Two ways to keep everything about the text features except their meaning (seeded, so a
control run is as reproducible as the real one):

* ``shuffled``: within each node type, node v takes the text (vector, ``has_text`` flag and,
  for end-to-end LoRA, the text itself) of node π(v) for a seeded permutation π of that
  type's nodes. The set of vectors, their geometry and the share of nodes with text are
  unchanged; which node a text describes is random.
* ``random``: every node with text gets a standard Gaussian vector rescaled to the norm of its
  real vector (same shape, norms and ``has_text``; no shared geometry with the texts).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Literal

import numpy as np

from recmind_dist.models.inputs import NodeFeatures

TextControl = Literal["none", "shuffled", "random"]


def _shuffle(vec: np.ndarray, has: np.ndarray, text: list[str] | None,
             perm: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[str] | None]:
    return vec[perm], has[perm], None if text is None else [text[i] for i in perm]


def _random(vec: np.ndarray, has: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    out = rng.standard_normal(vec.shape).astype(np.float32)
    norm = np.linalg.norm(vec, axis=1, keepdims=True)
    out *= norm / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
    out[~has] = 0.0
    return out


def apply_text_control(features: NodeFeatures, control: TextControl, seed: int) -> NodeFeatures:
    """``features`` with the control applied (``none``: the same object)."""
    if control == "none":
        return features
    rng = np.random.default_rng([seed, 0x7E47])
    if control == "shuffled":
        uv, uh, ut = _shuffle(features.user_vec, features.user_has_text, features.user_text,
                              rng.permutation(len(features.user_vec)))
        iv, ih, it = _shuffle(features.item_vec, features.item_has_text, features.item_text,
                              rng.permutation(len(features.item_vec)))
        return replace(features, user_vec=uv, item_vec=iv, user_has_text=uh, item_has_text=ih,
                       user_text=ut, item_text=it,
                       info={**features.info, "text_control": control})
    if control == "random":
        return replace(features, user_vec=_random(features.user_vec, features.user_has_text, rng),
                       item_vec=_random(features.item_vec, features.item_has_text, rng),
                       info={**features.info, "text_control": control})
    raise ValueError(f"unknown text control {control!r}")
