"""Likelihood choice among candidates, averaged over candidate orders (``choice: likelihood``).

A small LM's free answer to "which candidate?" mostly reflects where a candidate stands in the
prompt (SmolLM2-135M picks candidate 1 whatever it is). Instead, for a case with candidates
c_1..c_n, each shown order π_1..π_P of them gives a prompt x(π_p) and, for each candidate k,
the answer a(pos_p(k)) that names k by its shown position pos_p(k). The score of k is the
answer's log-likelihood averaged over the orders,

    S_k = (1/P) Σ_{p=1..P} log P(a(pos_p(k)) | x(π_p)),

and the task decides from S (liked = argmax_k S_k, disliked = argmin_k S_k; re-rank order =
S descending). The shown orders are P = min(``choice_permutations``, n) cyclic shifts
π_p(j) = β((j + p) mod n) of one base order β that sorts the candidates by
``stable_hash([seed, text])`` (ties by input index): they depend only on the candidate set and
the seed, so S (and the choice) does not depend on the order the caller lists the candidates
in, and with P = n every candidate is shown once in every position, so a bias b_j that adds
to every answer at position j adds the same (1/n) Σ_j b_j to every S_k.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from recmind_dist.generation.records import Output
from recmind_dist.hashing import stable_hash

if TYPE_CHECKING:
    from recmind_dist.generation.engine import Generator

__all__ = ["ChoiceCase", "candidate_orders", "choose_by_likelihood", "likelihood_scores"]

#: (candidate texts, prompt of a shown order: original indices by position).
ChoiceCase = tuple[Sequence[str], Callable[[list[int]], str]]


def candidate_orders(texts: Sequence[str], permutations: int, seed: int) -> list[list[int]]:
    """The shown orders (original indices by position): ``min(permutations, n)`` cyclic
    shifts of the base order that sorts candidates by ``stable_hash([seed, text])``."""
    n = len(texts)
    base = sorted(range(n), key=lambda i: (stable_hash([seed, texts[i]]), i))
    return [base[p:] + base[:p] for p in range(min(permutations, n))]


def likelihood_scores(gen: Generator, task: str, cases: Sequence[ChoiceCase],
                      answer: Callable[[int], str]) -> tuple[list[np.ndarray], list[bool]]:
    """``S`` per case (one score per candidate, in the caller's order) and whether every
    score of the case came from the cache; ``answer(pos)`` names the candidate at ``pos``."""
    pairs: list[tuple[str, str]] = []
    owner: list[tuple[int, int]] = []  # (case, candidate) of each pair
    n_orders: list[int] = []
    for c, (texts, prompt_of) in enumerate(cases):
        orders = candidate_orders(texts, gen.spec.choice_permutations, gen.spec.seed)
        n_orders.append(len(orders))
        for order in orders:
            prompt = prompt_of(order)
            for pos, k in enumerate(order):
                pairs.append((prompt, answer(pos)))
                owner.append((c, k))
    flat, hits = gen.scores(pairs, task)
    totals = [np.zeros(len(texts), np.float64) for texts, _ in cases]
    all_cached = [True] * len(cases)
    for (c, k), v, hit in zip(owner, flat, hits, strict=True):
        totals[c][k] += v
        all_cached[c] = all_cached[c] and hit
    return [t / max(m, 1) for t, m in zip(totals, n_orders, strict=True)], all_cached


def choose_by_likelihood(gen: Generator, task: str, cases: Sequence[ChoiceCase],
                         answer: Callable[[int], str],
                         decide: Callable[[np.ndarray], tuple[Any, str]]) -> list[Output]:
    """One ok :class:`Output` per case: ``decide(S) -> (parsed, text)`` where ``text`` is the
    answer in the task's format; ``Output.scores`` holds S."""
    t0 = time.perf_counter()
    scores, cached = likelihood_scores(gen, task, cases, answer)
    outs = []
    for s, hit in zip(scores, cached, strict=True):
        parsed, text = decide(s)
        outs.append(Output(task, text, parsed, True, gen.backend.name, gen.backend.model_name,
                           cached=hit, scores=s.tolist()))
    gen.stats["requests"] += len(cases)
    gen.stats["ok"] += len(cases)
    gen.stats["seconds"] += time.perf_counter() - t0
    return outs
