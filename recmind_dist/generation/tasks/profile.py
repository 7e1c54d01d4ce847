"""Task ``profile``: rewrite a node's templated facts into a short profile.

Prompt: the facts and an instruction not to invent titles. Parser: 3..120 words of mostly
alphabetic prose (at least 60 % of the words contain a letter), longer answers cut to 120
words, an echo of the prompt rejected. Offline answer: the facts themselves.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from recmind_dist.generation.records import Output, ProfileRecord, Request
from recmind_dist.generation.similarity import VectorFn
from recmind_dist.specs.generation import GenerateSpec

if TYPE_CHECKING:
    from recmind_dist.generation.engine import Generator

__all__ = ["TASK", "offline_answer", "offline_texts", "parse_profile", "prompt_profile",
           "write_profiles"]

TASK = "profile"

_WORD = re.compile(r"[^\W\d_]")  # a word with at least one letter


def prompt_profile(rec: ProfileRecord) -> str:
    who = "user of a movie recommender" if rec.kind == "user" else "item in a catalogue"
    return (f"Write a short profile (one or two sentences) of this {who}, using only the facts "
            f"below. Do not invent titles.\nFacts: {rec.facts}\nProfile:")


def parse_profile(text: str, req: Request | None = None) -> str:
    """Accept 3..120 words of mostly alphabetic text that is not an echo of the prompt."""
    t = " ".join(text.strip().split())
    t = re.sub(r"^(profile|answer)\s*:\s*", "", t, flags=re.IGNORECASE)
    words = t.split()
    if len(words) < 3:
        raise ValueError("profile too short")
    if len(words) > 120:
        t = " ".join(words[:120])
    alpha = sum(bool(_WORD.search(w)) for w in words[:120])
    if alpha < 0.6 * min(len(words), 120):
        raise ValueError("profile is not prose")
    if req is not None and t.lower().startswith("write a short profile"):
        raise ValueError("echo of the prompt")
    return t


def offline_texts(payload: dict[str, Any]) -> list[str]:
    """Texts the offline answer encodes: none."""
    return []


def offline_answer(payload: dict[str, Any], vectors: VectorFn, spec: GenerateSpec) -> str:
    """No generative model: the profile is the templated facts."""
    return str(payload["facts"]).strip()


def write_profiles(gen: Generator, records: Sequence[ProfileRecord]) -> list[Output]:
    """One profile per record (``parsed`` = the profile text; None if skipped)."""
    reqs = [Request(TASK, prompt_profile(r), {"facts": r.facts, "kind": r.kind, "id": r.id})
            for r in records]
    return gen.run(reqs, parse_profile)
