"""Implicit-feedback augmentation: the LM picks one liked and one disliked candidate per user.

For every user u with candidates C_u (the base model's top-N, training positives excluded,
see :mod:`recmind_dist.augment.candidates`), the LM is shown u's TRAINING history (up to
``max_history`` items as "Title (year). Genres: ...") and the indexed candidates, and answers
``liked: i`` / ``disliked: j`` (:func:`recmind_dist.generation.tasks.liked_disliked.choose_liked_disliked_many`:
prompt, robust parser, bounded retries, cache). Each valid answer becomes the BPR triple
``(u, C_u[i], C_u[j])``.

Guarantees (checked here, whatever the LM wrote): i ≠ j; both are candidates of u; neither is
a training positive of u (so the negative of an augmented triple is never a known positive,
and the positive is a NEW edge). Answers that fail are counted (``skipped`` by the parser
after its retries, ``invalid`` by these checks) and produce no triple. The triples are
returned as their own table and never touch ``data.train``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from recmind_dist.augment.candidates import Candidates
from recmind_dist.data.split import SplitData
from recmind_dist.sampling import NegativeSampler

log = logging.getLogger(__name__)

__all__ = ["augment_implicit", "choose_many", "history_items"]

TRIPLE_COLUMNS = ("user", "pos", "neg")


def history_items(data: SplitData, max_history: int, seed: int = 0) -> list[np.ndarray]:
    """Up to ``max_history`` TRAINING items per local user (seeded random subset, vectorised)."""
    rng = np.random.default_rng(seed)
    tr = data.train
    key = rng.random(len(tr))
    order = np.lexsort((key, tr[:, 0]))
    users, items = tr[order, 0], tr[order, 1]
    starts = np.searchsorted(users, np.arange(data.n_users))
    ends = np.searchsorted(users, np.arange(data.n_users), side="right")
    return [items[s: min(e, s + max_history)] for s, e in zip(starts, ends, strict=True)]


def choose_many(gen: Any, cases: Sequence[tuple[Sequence[str], Sequence[str]]]) -> list[Any]:
    """Adapter over the shared backend (:mod:`recmind_dist.generation`): one ``Output``
    (``ok``, ``parsed = (liked, disliked)``, ``backend``, ``model``) per case."""
    from recmind_dist.generation import choose_liked_disliked_many

    return choose_liked_disliked_many(gen, cases)


def augment_implicit(
    gen: Any, data: SplitData, candidates: Candidates, item_texts: Sequence[str],
    max_history: int = 20, seed: int = 0, users: np.ndarray | None = None,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Augmented triples (LOCAL ids) for ``users`` (default: all) and the run's statistics.

    ``item_texts[i]``: the text shown for local item ``i``. Returns
    ``(DataFrame(user, pos, neg, backend, model), stats)``.
    """
    t0 = time.perf_counter()
    hist = history_items(data, max_history, seed)
    users = np.arange(data.n_users) if users is None else np.asarray(users, np.int64)
    cases, case_users, case_cands = [], [], []
    for u in users.tolist():
        cand = candidates.for_user(u)
        if len(cand) < 2:
            continue
        cases.append(([item_texts[i] for i in hist[u]], [item_texts[i] for i in cand]))
        case_users.append(u)
        case_cands.append(cand)
    outputs = choose_many(gen, cases) if cases else []
    sampler = NegativeSampler(data.n_items, data.train)
    rows: list[tuple[int, int, int, str, str]] = []
    stats = {"users": len(users), "prompted": len(cases), "ok": 0, "skipped": 0, "invalid": 0,
             "cached": 0}
    backends: dict[str, int] = {}
    for u, cand, out in zip(case_users, case_cands, outputs, strict=True):
        stats["cached"] += int(bool(getattr(out, "cached", False)))
        if not out.ok or out.parsed is None:
            stats["skipped"] += 1
            continue
        try:
            li, di = (int(x) for x in out.parsed)
        except (TypeError, ValueError):
            stats["invalid"] += 1
            continue
        if not (0 <= li < len(cand) and 0 <= di < len(cand)) or li == di:
            stats["invalid"] += 1
            continue
        pos, neg = int(cand[li]), int(cand[di])
        uu = np.array([u, u])
        if sampler.is_positive(uu, np.array([pos, neg])).any():
            stats["invalid"] += 1
            continue
        rows.append((u, pos, neg, str(out.backend), str(out.model)))
        backends[str(out.backend)] = backends.get(str(out.backend), 0) + 1
        stats["ok"] += 1
    triples = pd.DataFrame(rows, columns=[*TRIPLE_COLUMNS, "backend", "model"])
    for c in TRIPLE_COLUMNS:
        triples[c] = triples[c].astype(np.int64)
    dt = time.perf_counter() - t0
    stats.update(seconds=dt, users_per_s=len(cases) / dt if dt > 0 else 0.0,
                 backends=backends)
    log.info("implicit augmentation: %d triples from %d prompted users (%d skipped, %d invalid)"
             " in %.1fs (%.1f users/s)", stats["ok"], len(cases), stats["skipped"],
             stats["invalid"], dt, stats["users_per_s"])
    return triples, stats
