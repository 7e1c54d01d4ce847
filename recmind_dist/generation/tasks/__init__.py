"""The recommendation tasks: each module holds its prompt, its parser, the offline backend's
answer for it and its API functions. :data:`OFFLINE_TASKS` maps a task name to its module."""

from __future__ import annotations

from typing import Any, Protocol

from recmind_dist.generation.similarity import VectorFn
from recmind_dist.generation.tasks import liked_disliked, profile, rerank
from recmind_dist.generation.tasks.liked_disliked import (
    choose_liked_disliked,
    choose_liked_disliked_many,
    parse_liked_disliked,
    prompt_liked_disliked,
)
from recmind_dist.generation.tasks.profile import parse_profile, prompt_profile, write_profiles
from recmind_dist.generation.tasks.rerank import (
    parse_rerank,
    prompt_rerank,
    rerank_with_justifications,
    rerank_with_justifications_many,
    template_justification,
)
from recmind_dist.specs.generation import GenerateSpec

__all__ = [
    "OFFLINE_TASKS", "OfflineTask", "choose_liked_disliked", "choose_liked_disliked_many",
    "parse_liked_disliked", "parse_profile", "parse_rerank", "prompt_liked_disliked",
    "prompt_profile", "prompt_rerank", "rerank_with_justifications",
    "rerank_with_justifications_many", "template_justification", "write_profiles",
]


class OfflineTask(Protocol):
    """What the offline backend needs of a task: the texts to encode, then the answer."""

    def offline_texts(self, payload: dict[str, Any]) -> list[str]: ...

    def offline_answer(self, payload: dict[str, Any], vectors: VectorFn,
                       spec: GenerateSpec) -> str: ...


OFFLINE_TASKS: dict[str, OfflineTask] = {
    profile.TASK: profile, liked_disliked.TASK: liked_disliked, rerank.TASK: rerank}
