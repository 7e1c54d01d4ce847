"""Position bias of an LM's candidate choice: free generation vs ``choice: likelihood``.

For ``--users`` ml-100k users (seeded): history = their first ``--history`` items rated >= 4,
candidates = their last item rated >= 4 (the held-out positive) and ``--candidates - 1``
unrated items, shuffled. Prints, per mode, how many answers parse, how often the liked pick is
caller position 0 and how often liked/disliked is the held-out positive; and, from the
likelihood run's scores, the forced-format greedy pick per shown order (argmax_j of
log P("liked: j" | prompt), i.e. the index token greedy decoding puts after ``liked: ``) by
shown position. Chance for a held-out hit is 1 / candidates.

    python benchmarks/choice_position_bias.py --model smollm2-135m --users 20 --candidates 3
"""

from __future__ import annotations

import argparse
import collections
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from recmind_dist.generation import Generator, choose_liked_disliked_many
from recmind_dist.generation.choice import candidate_orders
from recmind_dist.generation.tasks.liked_disliked import liked_answer, prompt_liked_disliked
from recmind_dist.specs import GenerateSpec


def build_cases(root: Path, n_users: int, n_hist: int, n_cands: int, seed: int
                ) -> tuple[list[tuple[list[str], list[str]]], list[int]]:
    """``(history_texts, candidate_texts)`` per user and the held-out positive's index."""
    items = pd.read_parquet(root / "items.parquet").set_index("id")
    inter = pd.read_parquet(root / "interactions.parquet")

    def text(i: int) -> str:
        return f"{items.title[i]} ({items.year[i]}). Genres: {items.genres[i]}."

    rng = np.random.default_rng(seed)
    cases, held_idx = [], []
    for u in rng.choice(inter.user.unique(), n_users, replace=False):
        r = inter[inter.user == u].sort_values("timestamp")
        liked = r[r.rating >= 4].item.tolist()
        seen = set(r.item)
        negs = rng.choice([i for i in items.index if i not in seen], n_cands - 1,
                          replace=False).tolist()
        cands = negs + [liked[-1]]
        cands = [cands[k] for k in rng.permutation(n_cands).tolist()]
        cases.append(([text(i) for i in liked[:n_hist]], [text(i) for i in cands]))
        held_idx.append(cands.index(liked[-1]))
    return cases, held_idx


def forced_greedy(gen: Generator, cases: list[tuple[list[str], list[str]]], held: list[int]
                  ) -> dict[str, object]:
    """Per shown order: argmax_j log P("liked: j" | prompt) (scores from ``gen``'s cache)."""
    by_pos: collections.Counter[int] = collections.Counter()
    hits = n = 0
    for (hist, cands), h in zip(cases, held, strict=True):
        for order in candidate_orders(cands, gen.spec.choice_permutations, gen.spec.seed):
            prompt = prompt_liked_disliked(hist, [cands[k] for k in order])
            s, _ = gen.scores([(prompt, liked_answer(j)) for j in range(len(cands))], "bias")
            j = int(np.argmax(s))
            by_pos[j] += 1
            hits += order[j] == h
            n += 1
    return {"orders": n, "pick_by_shown_position": dict(sorted(by_pos.items())),
            "liked_is_heldout": hits}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--data", type=Path, default=Path("data/ml-100k"))
    ap.add_argument("--users", type=int, default=20)
    ap.add_argument("--history", type=int, default=3)
    ap.add_argument("--candidates", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache-dir", type=Path, default=Path("data/cache/choice_bias"))
    ap.add_argument("--device", default=None)
    a = ap.parse_args()
    cases, held = build_cases(a.data, a.users, a.history, a.candidates, a.seed)
    base = {"backend": "hf", "model": a.model, "device": a.device, "max_new_tokens": 10,
            "batch_size": 12, "format_retries": 0, "cache_dir": a.cache_dir,
            "choice_permutations": a.candidates}
    free = Generator(GenerateSpec(**base))
    scored = Generator(GenerateSpec(**base, choice="likelihood"), model=free.backend.model,
                       tokenizer=free.backend.tokenizer)
    rows: dict[str, object] = {}
    for mode, gen in (("generate", free), ("likelihood", scored)):
        t0 = time.perf_counter()
        outs = choose_liked_disliked_many(gen, cases)
        ok = [(o, h) for o, h in zip(outs, held, strict=True) if o.ok]
        rows[mode] = {"users": len(outs), "answered": len(ok),
                      "liked_is_position_0": sum(o.parsed[0] == 0 for o, _ in ok),
                      "liked_is_heldout": sum(o.parsed[0] == h for o, h in ok),
                      "disliked_is_heldout": sum(o.parsed[1] == h for o, h in ok),
                      "seconds": round(time.perf_counter() - t0, 1)}
    rows["forced_greedy_one_order"] = forced_greedy(scored, cases, held)
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
