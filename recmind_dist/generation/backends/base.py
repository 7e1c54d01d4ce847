"""The backend interface (requests in, raw texts out) and the spec's backend factory."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

from recmind_dist.errors import InputError
from recmind_dist.generation.records import Request
from recmind_dist.specs.generation import GenerateSpec

__all__ = ["Backend", "build_backend"]


class Backend(ABC):
    """Turns requests into raw texts. ``None`` for a request = transport failure (not cached)."""

    name: str = "?"
    model_name: str = "?"
    #: True where the backend answers candidate choices its own way (offline: similarity), so
    #: ``GenerateSpec.choice = "likelihood"`` leaves its answers as they are.
    answers_choices_itself: bool = False

    def params(self) -> dict[str, Any]:
        """Settings besides model and prompt that change the text (part of the cache key):
        the sampling settings of the backend's ``spec`` (none without a spec)."""
        spec = getattr(self, "spec", None)
        if spec is None:
            return {}
        return {"temperature": spec.temperature, "top_p": spec.top_p,
                "max_new_tokens": spec.max_new_tokens,
                **({"seed": spec.seed} if spec.temperature > 0 else {})}

    @abstractmethod
    def generate(self, requests: Sequence[Request]) -> list[str | None]:
        """One raw answer per request (``None`` = transport failure)."""

    def score(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        """``log P(answer | prompt) = sum_t log p(a_t | prompt, a_<t)`` per (prompt, answer);
        backends without token log-probabilities refuse."""
        raise InputError("generate spec", "choice",
                         f"backend {self.name!r} cannot score answer likelihoods; use "
                         "choice: generate (or backend hf)")


def build_backend(spec: GenerateSpec, **objects: Any) -> Backend:
    """The spec's backend; ``objects`` may carry pre-built ``model``/``tokenizer`` (hf),
    ``encoder`` (offline) or an ``httpx`` ``transport`` (openai, e.g. a mock in tests)."""
    if spec.backend == "offline":
        from recmind_dist.generation.backends.offline import OfflineBackend

        return OfflineBackend(spec, encoder=objects.get("encoder"))
    if spec.backend == "hf":
        from recmind_dist.generation.backends.hf import HFBackend

        return HFBackend(spec, model=objects.get("model"), tokenizer=objects.get("tokenizer"))
    from recmind_dist.generation.backends.openai import OpenAIBackend

    return OpenAIBackend(spec, transport=objects.get("transport"))
