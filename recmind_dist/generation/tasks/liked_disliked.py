"""Task ``liked_disliked``: pick the candidate a user would most like and most dislike.

Prompt: the user's liked history and the indexed candidates; answer ``liked: i`` /
``disliked: j``. Parser: both indices present, in range and different (unless there is one
candidate). Offline answer with unit encoder vectors c_k of the candidates and the history's
mean direction h: ``liked = argmax_k c_k·h``, ``disliked = argmin_k c_k·h`` (the argmax when
that is the same candidate); with no history every score is 0.

Likelihood choice (``choice: likelihood``, :mod:`recmind_dist.generation.choice`): S_k is the
log-likelihood of the answer ``liked: <position of k>`` averaged over candidate orders, and
the same rule picks ``liked = argmax_k S_k``, ``disliked = argmin_k S_k``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from recmind_dist.generation.choice import choose_by_likelihood
from recmind_dist.generation.records import Output, Request
from recmind_dist.generation.similarity import VectorFn, mean_direction
from recmind_dist.specs.generation import GenerateSpec

if TYPE_CHECKING:
    from recmind_dist.generation.engine import Generator

__all__ = ["TASK", "choose_liked_disliked", "choose_liked_disliked_many", "liked_answer",
           "offline_answer", "offline_texts", "parse_liked_disliked", "pick_liked_disliked",
           "prompt_liked_disliked"]

TASK = "liked_disliked"


def prompt_liked_disliked(history: Sequence[str], candidates: Sequence[str]) -> str:
    hist = "\n".join(f"- {h}" for h in history) or "- (nothing yet)"
    cands = "\n".join(f"[{i}] {c}" for i, c in enumerate(candidates))
    return ("A user watched and liked these movies:\n" f"{hist}\n\n"
            "Candidates:\n" f"{cands}\n\n"
            "Pick the ONE candidate the user would most like and the ONE they would most "
            "dislike. Answer with two lines exactly like:\nliked: <index>\ndisliked: <index>")


_LIKED = re.compile(r"(?<![a-z])liked\s*[:=\-]?\s*\[?\s*(-?\d+)", re.IGNORECASE)
_DISLIKED = re.compile(r"dis-?liked\s*[:=\-]?\s*\[?\s*(-?\d+)", re.IGNORECASE)


def parse_liked_disliked(text: str, req: Request) -> tuple[int, int]:
    """``(liked, disliked)`` candidate indices; raises on a missing/out-of-range/equal index."""
    n = len(req.payload["candidates"])
    m_d = _DISLIKED.search(text)
    m_l = None
    for m in _LIKED.finditer(text):
        if not text[max(0, m.start() - 3): m.start()].lower().endswith("dis"):
            m_l = m
            break
    if m_l is None or m_d is None:
        raise ValueError("no 'liked: i' / 'disliked: j' found")
    li, di = int(m_l.group(1)), int(m_d.group(1))
    for v in (li, di):
        if not 0 <= v < n:
            raise ValueError(f"index {v} out of range 0..{n - 1}")
    if li == di and n > 1:
        raise ValueError("liked and disliked are the same candidate")
    return li, di


def offline_texts(payload: dict[str, Any]) -> list[str]:
    """Texts the offline answer encodes: the history, then the candidates."""
    return list(payload["history"]) + list(payload["candidates"])


def offline_answer(payload: dict[str, Any], vectors: VectorFn, spec: GenerateSpec) -> str:
    """``liked: argmax c·h`` / ``disliked: argmin c·h`` in the format the parser reads."""
    hist = vectors(list(payload["history"]))
    cand = vectors(list(payload["candidates"]))
    if len(cand) == 0:
        return ""
    sim = cand @ mean_direction(hist) if len(hist) else np.zeros(len(cand))
    liked, disliked = pick_liked_disliked(sim)
    return f"liked: {liked}\ndisliked: {disliked}"


def pick_liked_disliked(score: np.ndarray) -> tuple[int, int]:
    """``liked = argmax_k score_k``, ``disliked = argmin_k score_k`` (stable; the last of the
    ascending order when that is the liked one; the same index for one candidate)."""
    liked = int(np.argmax(score))
    order = np.argsort(score, kind="stable")
    disliked = int(order[0]) if int(order[0]) != liked else int(order[-1])
    if len(score) == 1:
        disliked = liked
    return liked, disliked


def liked_answer(position: int) -> str:
    """The answer tokens scored for the candidate shown at ``position``."""
    return f"liked: {position}"


def _decide(score: np.ndarray) -> tuple[tuple[int, int], str]:
    liked, disliked = pick_liked_disliked(score)
    return (liked, disliked), f"liked: {liked}\ndisliked: {disliked}"


def choose_liked_disliked_many(gen: Generator,
                               cases: Sequence[tuple[Sequence[str], Sequence[str]]]
                               ) -> list[Output]:
    """Batched :func:`choose_liked_disliked` over ``(history_texts, candidate_texts)`` cases
    (generated and parsed, or scored by likelihood when ``gen.likelihood_choice``)."""
    if gen.likelihood_choice:
        shown = [(list(c), _prompt_of(list(h), list(c))) for h, c in cases]
        return choose_by_likelihood(gen, TASK, shown, liked_answer, _decide)
    reqs = [Request(TASK, prompt_liked_disliked(h, c),
                    {"history": list(h), "candidates": list(c)}) for h, c in cases]
    return gen.run(reqs, parse_liked_disliked)


def _prompt_of(history: list[str], candidates: list[str]) -> Callable[[list[int]], str]:
    return lambda order: prompt_liked_disliked(history, [candidates[k] for k in order])


def choose_liked_disliked(gen: Generator, history_texts: Sequence[str],
                          candidate_texts: Sequence[str]) -> Output:
    """``Output.parsed = (liked_idx, disliked_idx)`` indices into ``candidate_texts``."""
    return choose_liked_disliked_many(gen, [(history_texts, candidate_texts)])[0]
