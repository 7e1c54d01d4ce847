"""Task ``rerank``: re-order a recommender's top-K for a user with one sentence per item.

Prompt: the user's profile, liked (training) items and the indexed candidates; answer one
``<index>: <sentence>`` line per candidate, best first. Parser: indices in range, at least half
of the candidates named; the rest follow in their original order with an empty sentence.

Offline answer: with unit encoder vectors c_k of the candidates and u the mean direction of
the history (and the profile, if any), the recommender's rank r_k = k and the similarity rank
s_k (0 = most similar to u), the order sorts by reciprocal-rank fusion

    f_k = (1 - w) / (10 + r_k) + w / (10 + s_k),   w = ``offline_rerank_weight``,

descending (stable; the recommender's order when there is no history or profile). Each
sentence is :func:`template_justification` anchored on the history item sharing most genres
with the candidate (ties by c_k·h_j).

Likelihood order (``choice: likelihood``, :mod:`recmind_dist.generation.choice`): S_k is the
log-likelihood of the first answer line naming k, ``<position of k>:``, averaged over
candidate orders; the order is S descending (stable) with empty sentences, which callers fill
with :func:`template_justification`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from recmind_dist.generation.choice import choose_by_likelihood
from recmind_dist.generation.records import ItemInfo, Output, Request, as_item_info
from recmind_dist.generation.similarity import VectorFn, mean_direction
from recmind_dist.specs.generation import GenerateSpec

if TYPE_CHECKING:
    from recmind_dist.generation.engine import Generator

__all__ = ["TASK", "first_line_answer", "offline_answer", "offline_texts", "parse_rerank",
           "prompt_rerank", "rerank_with_justifications", "rerank_with_justifications_many",
           "template_justification"]

TASK = "rerank"

#: Reciprocal-rank fusion constant of the offline order (short lists).
RRF_C = 10.0


def prompt_rerank(user_summary: str, history: Sequence[ItemInfo], candidates: Sequence[ItemInfo]
                  ) -> str:
    hist = "\n".join(f"- {h.description}" for h in history) or "- (none)"
    cands = "\n".join(f"[{i}] {c.description}" for i, c in enumerate(candidates))
    return (f"User profile: {user_summary or '(none)'}\n"
            f"Movies the user liked:\n{hist}\n\n"
            "Candidate recommendations, best first according to the recommender:\n"
            f"{cands}\n\n"
            "Re-order the candidates for this user, best first. For each, write one line "
            "'<index>: <one sentence why>', citing the movie's genres or year and, if "
            "relevant, ONE movie from the liked list above. Never claim the user liked a "
            "movie that is not in that list.")


_RERANK_LINE = re.compile(r"^\s*(?:[-*]\s*)?\[?(-?\d+)\]?\s*[:.)\-]\s*(.*)$")


def parse_rerank(text: str, req: Request) -> list[tuple[int, str]]:
    """``[(index, sentence), ...]`` best first; duplicates keep their first position.

    Raises on an out-of-range index or when fewer than half of the candidates are named;
    candidates the answer omits are appended in their original order with an empty sentence
    (callers fill those with :func:`template_justification`).
    """
    n = len(req.payload["candidates"])
    seen: dict[int, str] = {}
    for line in text.splitlines():
        m = _RERANK_LINE.match(line)
        if not m:
            continue
        i = int(m.group(1))
        if not 0 <= i < n:
            raise ValueError(f"index {i} out of range 0..{n - 1}")
        if i not in seen:
            seen[i] = m.group(2).strip()
    if n and len(seen) < (n + 1) // 2:
        raise ValueError(f"only {len(seen)} of {n} candidates named")
    out = list(seen.items())
    out += [(i, "") for i in range(n) if i not in seen]
    return out


def template_justification(item: ItemInfo, anchor: ItemInfo | None) -> str:
    """One sentence citing the item's real attributes and (if any) a liked training item.

    ``anchor`` must come from the user's TRAINING history: it is the only item ever named as
    "liked".
    """
    item = as_item_info(item)
    desc = []
    genres = item.attrs.get("genres")
    year = item.attrs.get("year")
    what = f"{item.title}"
    if year and f"({year})" not in item.title:
        what += f" ({year})"
    if genres:
        kinds = " / ".join(g.strip().lower() for g in genres.split(",") if g.strip())
        art = "an" if kinds[:1] in "aeiou" else "a"
        desc.append(f"is {art} {kinds} movie")
    if anchor is None:
        body = " and ".join(desc) if desc else "matches your profile"
        return f"{what} {body}."
    anchor = as_item_info(anchor)
    shared = _shared_genres(item, anchor)
    because = f"because you liked {anchor.title}"
    if shared:
        because += f", which is also {' / '.join(g.lower() for g in shared)}"
    body = " and ".join(desc) if desc else "is close to your history"
    return f"{what} {body}, recommended {because}."


def _genre_set(x: ItemInfo) -> list[str]:
    g = x.attrs.get("genres") or ""
    return [s.strip() for s in g.split(",") if s.strip()]


def _shared_genres(a: ItemInfo, b: ItemInfo) -> list[str]:
    gb = set(_genre_set(b))
    return [g for g in _genre_set(a) if g in gb]


def offline_texts(payload: dict[str, Any]) -> list[str]:
    """Texts the offline answer encodes: the profile (if any), history, candidates."""
    texts = [payload["user"]] if payload["user"] else []
    texts += [as_item_info(h).description for h in payload["history"]]
    texts += [as_item_info(c).description for c in payload["candidates"]]
    return texts


def offline_answer(payload: dict[str, Any], vectors: VectorFn, spec: GenerateSpec) -> str:
    """The fused order with templated sentences, as ``<index>: <sentence>`` lines."""
    cands = [as_item_info(c) for c in payload["candidates"]]
    hist = [as_item_info(h) for h in payload["history"]]
    if not cands:
        return ""
    cv = vectors([c.description for c in cands])
    hv = vectors([h.description for h in hist]) if hist else np.zeros((0, cv.shape[1]))
    parts = [hv] + ([vectors([payload["user"]])] if payload["user"] else [])
    uv = mean_direction(np.concatenate(parts, 0)) if sum(len(x) for x in parts) else None
    k = len(cands)
    base_rank = np.arange(k, dtype=np.float64)
    if uv is None:
        order = np.arange(k)
    else:
        sim = cv @ uv
        sim_rank = np.empty(k)
        sim_rank[np.argsort(-sim, kind="stable")] = np.arange(k)
        w = spec.offline_rerank_weight
        fused = (1 - w) / (RRF_C + base_rank) + w / (RRF_C + sim_rank)
        order = np.argsort(-fused, kind="stable")
    lines = []
    for i in order.tolist():
        # anchor: the history item sharing most genres, ties by encoder similarity
        shared = np.array([len(_shared_genres(cands[i], h)) for h in hist], np.float64)
        best = int(np.argmax(shared + hv @ cv[i])) if len(hv) else None
        anchor = hist[best] if best is not None else None
        lines.append(f"{i}: {template_justification(cands[i], anchor)}")
    return "\n".join(lines)


def rerank_with_justifications_many(
    gen: Generator,
    cases: Sequence[tuple[str, Sequence[ItemInfo | str], Sequence[ItemInfo | str]]],
) -> list[Output]:
    """Batched re-ranking over ``(user_summary, candidates, history)`` cases (generated and
    parsed, or ordered by likelihood when ``gen.likelihood_choice``)."""
    if gen.likelihood_choice:
        shown = []
        for user, cands, hist in cases:
            ci, hi = [as_item_info(c) for c in cands], [as_item_info(h) for h in hist]
            shown.append(([c.description for c in ci], _prompt_of(user, hi, ci)))
        return choose_by_likelihood(gen, TASK, shown, first_line_answer, _decide)
    reqs = []
    for user, cands, hist in cases:
        ci, hi = [as_item_info(c) for c in cands], [as_item_info(h) for h in hist]
        reqs.append(Request(TASK, prompt_rerank(user, hi, ci),
                            {"user": user, "candidates": ci, "history": hi}))
    return gen.run(reqs, parse_rerank)


def first_line_answer(position: int) -> str:
    """The answer tokens scored for the candidate shown at ``position``."""
    return f"{position}:"


def _prompt_of(user: str, history: list[ItemInfo], candidates: list[ItemInfo]
               ) -> Callable[[list[int]], str]:
    return lambda order: prompt_rerank(user, history, [candidates[k] for k in order])


def _decide(score: np.ndarray) -> tuple[list[tuple[int, str]], str]:
    order = np.argsort(-score, kind="stable").tolist()
    return [(k, "") for k in order], "\n".join(f"{k}:" for k in order)


def rerank_with_justifications(gen: Generator, user_summary: str,
                               candidates: Sequence[ItemInfo | str],
                               history: Sequence[ItemInfo | str] = ()) -> Output:
    """``Output.parsed = [(candidate_idx, sentence), ...]`` best first (a permutation)."""
    return rerank_with_justifications_many(gen, [(user_summary, candidates, history)])[0]
