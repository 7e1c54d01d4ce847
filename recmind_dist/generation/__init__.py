"""Generative LM backends, the prompt cache and the recommendation tasks built on them.

Shared by the GAT + LM model (profiles as node features, re-ranking with justifications) and
LLMRec augmentation (liked/disliked choice among candidates, user profiles).

* :mod:`~recmind_dist.generation.records`: Request, Output, ProfileRecord, ItemInfo.
* :mod:`~recmind_dist.generation.cache`: the Parquet prompt cache and its key.
* :mod:`~recmind_dist.generation.engine`: :class:`Generator` (cache, batching, format
  re-asks, Ray fan-out).
* :mod:`~recmind_dist.generation.choice`: ``choice: likelihood``, candidate scores averaged
  over candidate orders.
* :mod:`~recmind_dist.generation.backends`: ``offline`` / ``hf`` / ``openai``; every
  :class:`Output` records the backend and model that wrote its text.
* :mod:`~recmind_dist.generation.tasks`: profile, liked/disliked, re-rank (prompt, parser,
  offline answer and API of each).
"""

from recmind_dist.generation.backends.base import Backend, build_backend
from recmind_dist.generation.cache import GenerationCache, cache_key
from recmind_dist.generation.choice import candidate_orders, likelihood_scores
from recmind_dist.generation.engine import Generator, Parser, build_generator
from recmind_dist.generation.records import ItemInfo, Output, ProfileRecord, Request
from recmind_dist.generation.tasks import (
    choose_liked_disliked,
    choose_liked_disliked_many,
    parse_liked_disliked,
    parse_profile,
    parse_rerank,
    prompt_liked_disliked,
    prompt_profile,
    prompt_rerank,
    rerank_with_justifications,
    rerank_with_justifications_many,
    template_justification,
    write_profiles,
)
from recmind_dist.specs.generation import GenerateSpec

__all__ = [
    "Backend",
    "GenerateSpec",
    "GenerationCache",
    "Generator",
    "ItemInfo",
    "Output",
    "Parser",
    "ProfileRecord",
    "Request",
    "build_backend",
    "build_generator",
    "cache_key",
    "candidate_orders",
    "choose_liked_disliked",
    "choose_liked_disliked_many",
    "likelihood_scores",
    "parse_liked_disliked",
    "parse_profile",
    "parse_rerank",
    "prompt_liked_disliked",
    "prompt_profile",
    "prompt_rerank",
    "rerank_with_justifications",
    "rerank_with_justifications_many",
    "template_justification",
    "write_profiles",
]
