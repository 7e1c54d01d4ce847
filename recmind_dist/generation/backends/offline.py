"""The offline backend: no generative model, the tasks' own offline answers.

Each request is answered by its task module (:data:`recmind_dist.generation.tasks.
OFFLINE_TASKS`): templated facts for profiles, cosine similarity of the encoder's vectors
(MiniLM by default, :class:`recmind_dist.embed.encoder.TextEncoder`) for candidate choice and
re-ranking, templated justifications from real item attributes. The answer is text in the
format an LM is asked for and goes through the same parser. An unknown task answers ``""``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from recmind_dist.generation.backends.base import Backend
from recmind_dist.generation.records import Request
from recmind_dist.generation.tasks import OFFLINE_TASKS
from recmind_dist.specs.generation import GenerateSpec

__all__ = ["OFFLINE_VERSION", "OfflineBackend"]

#: Bump when the offline backend's answers change for the same prompt (invalidates its cache).
OFFLINE_VERSION = 2


class OfflineBackend(Backend):
    """Templates + encoder similarity.

    ``encoder``: any object with ``encode(texts) -> [n, d]`` (default: a lazily loaded
    :class:`~recmind_dist.embed.encoder.TextEncoder` for ``spec.model``). Vectors are
    normalised to unit length and memoised per text.
    """

    name = "offline"
    answers_choices_itself = True  # its similarity answer, whatever ``spec.choice`` says

    def __init__(self, spec: GenerateSpec, encoder: Any = None) -> None:
        from recmind_dist.embed.encoder import MINILM_HUB_ID, default_model_path

        self.spec = spec
        self._encoder = encoder
        self.model_name = str(spec.model or default_model_path())
        if self.model_name == default_model_path():  # same weights: a machine-independent key
            self.model_name = MINILM_HUB_ID
        if encoder is not None and getattr(encoder, "model_name", None):
            self.model_name = str(encoder.model_name)
        self._memo: dict[str, np.ndarray] = {}

    def params(self) -> dict[str, Any]:
        """The re-rank weight and :data:`OFFLINE_VERSION` (part of the cache key)."""
        return {"rerank_w": self.spec.offline_rerank_weight, "v": OFFLINE_VERSION}

    @property
    def encoder(self) -> Any:
        if self._encoder is None:
            from recmind_dist.embed.encoder import MINILM_HUB_ID, TextEncoder, default_model_path

            src = default_model_path() if self.model_name == MINILM_HUB_ID else self.model_name
            self._encoder = TextEncoder(src, normalize=True, device=self.spec.device)
        return self._encoder

    def vectors(self, texts: Sequence[str]) -> np.ndarray:
        """Unit vectors ``[len(texts), d]`` (texts not seen before are encoded in one call)."""
        missing = list(dict.fromkeys(t for t in texts if t not in self._memo))
        if missing:
            vecs = np.asarray(self.encoder.encode(missing), dtype=np.float32)
            norms = np.linalg.norm(vecs, axis=1, keepdims=True)
            vecs = vecs / np.maximum(norms, 1e-12)
            self._memo.update(zip(missing, vecs, strict=True))
        if not texts:
            return np.zeros((0, 1), np.float32)
        return np.stack([self._memo[t] for t in texts])

    def prefetch(self, requests: Sequence[Request]) -> None:
        """Encode every text the requests will need in one batched call."""
        texts: list[str] = []
        for r in requests:
            task = OFFLINE_TASKS.get(r.task)
            if task is not None:
                texts += task.offline_texts(r.payload)
        if texts:
            self.vectors(list(dict.fromkeys(texts)))

    def generate(self, requests: Sequence[Request]) -> list[str | None]:
        self.prefetch(requests)
        return [self.answer(r) for r in requests]

    def answer(self, r: Request) -> str:
        """The task module's offline answer to one request (``""`` for an unknown task)."""
        task = OFFLINE_TASKS.get(r.task)
        return task.offline_answer(r.payload, self.vectors, self.spec) if task else ""
