"""Generation engine and tasks: offline answers, tiny random HF causal LM (garbage survives
the parser), parsers and format re-asks. The cache is tested in test_generation_cache.py, the
OpenAI-compatible HTTP backend in test_generation_openai.py."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from recmind_dist.errors import InputError
from recmind_dist.generation import (
    Generator,
    ItemInfo,
    ProfileRecord,
    Request,
    choose_liked_disliked,
    choose_liked_disliked_many,
    parse_liked_disliked,
    parse_rerank,
    rerank_with_justifications,
    write_profiles,
)
from recmind_dist.specs import GenerateSpec


class BagEncoder:
    """Deterministic bag-of-words encoder (no model): cosine = word overlap."""

    model_name = "bag-of-words"

    def encode(self, texts):
        out = np.zeros((len(texts), 512), np.float32)
        for r, t in enumerate(texts):
            for w in t.lower().replace(".", " ").replace(",", " ").split():
                out[r, zlib.crc32(w.encode()) % 512] += 1.0
        return out


HIST = ["Toy Story (1995). Genres: Animation, Comedy.", "Aladdin (1992). Genres: Animation."]
CANDS = ["Scream (1996). Genres: Horror.", "Lion King (1994). Genres: Animation, Comedy.",
         "Heat (1995). Genres: Crime."]


def offline(tmp_path=None, **kw) -> Generator:
    spec = GenerateSpec(cache_dir=tmp_path, **kw)
    return Generator(spec, encoder=BagEncoder())


def test_offline_tasks_record_backend_and_parse():
    g = offline()
    o = choose_liked_disliked(g, HIST, CANDS)
    assert o.ok and o.backend == "offline" and o.model == "bag-of-words"
    assert o.parsed[0] == 1 and o.parsed[1] != 1
    (p,) = write_profiles(g, [ProfileRecord("user", 3, "A 24-year-old male student.")])
    assert p.ok and p.parsed == "A 24-year-old male student."
    cands = [ItemInfo("Scream", CANDS[0], {"genres": "Horror", "year": "1996"}),
             ItemInfo("Lion King", CANDS[1], {"genres": "Animation, Comedy", "year": "1994"})]
    hist = [ItemInfo("Toy Story", HIST[0], {"genres": "Animation, Comedy"})]
    r = rerank_with_justifications(g, "", cands, hist)
    assert r.ok and sorted(i for i, _ in r.parsed) == [0, 1]
    for i, sentence in r.parsed:
        assert cands[i].title in sentence and "liked Toy Story" in sentence
    assert g.stats["ok"] == 3 and g.stats["skipped"] == 0


def test_offline_answers_match_the_former_single_module():
    """Texts and cache keys pinned from text/generate.py before the split (same prompts, same
    encoder): the task modules' offline answers and the keys are unchanged."""
    g = offline(offline_rerank_weight=1.0)
    cands = [ItemInfo("Scream", CANDS[0], {"genres": "Horror", "year": "1996"}),
             ItemInfo("Lion King", CANDS[1], {"genres": "Animation, Comedy", "year": "1994"}),
             ItemInfo("Heat", CANDS[2], {"genres": "Crime", "year": "1995"})]
    hist = [ItemInfo("Toy Story", HIST[0], {"genres": "Animation, Comedy"}),
            ItemInfo("Aladdin", HIST[1], {"genres": "Animation"})]
    r = rerank_with_justifications(g, "likes animation", cands, hist)
    assert r.text == (
        "1: Lion King (1994) is an animation / comedy movie, recommended because you liked "
        "Toy Story, which is also animation / comedy.\n"
        "2: Heat (1995) is a crime movie, recommended because you liked Toy Story.\n"
        "0: Scream (1996) is a horror movie, recommended because you liked Aladdin.")
    assert r.key == "5b38987c3624aeee4f4fc3db7f0ab6ef6436fafe60fdd503585a949bca97858a"
    o = choose_liked_disliked(offline(), HIST, CANDS[::-1])
    assert o.text == "liked: 1\ndisliked: 2"
    assert o.key == "83ecde33eac195c59270a86a85b1e3901dc2047411046c6cde46f54d573676b4"


def test_offline_backend_dispatches_to_the_task_modules():
    from recmind_dist.generation.tasks import OFFLINE_TASKS

    assert set(OFFLINE_TASKS) == {"profile", "liked_disliked", "rerank"}
    g = offline()
    assert g.backend.generate([Request("no_such_task", "p", {})]) == [""]
    req = Request("profile", "p", {"facts": "  Likes noir.  "})
    assert g.backend.generate([req]) == [OFFLINE_TASKS["profile"].offline_answer(
        req.payload, g.backend.vectors, g.spec)] == ["Likes noir."]


def test_parsers_reject_bad_answers():
    req = Request("liked_disliked", "", {"candidates": CANDS})
    assert parse_liked_disliked("Liked: [2]\nDisliked: 0", req) == (2, 0)
    assert parse_liked_disliked("disliked: 0, liked: 1", req) == (1, 0)
    for bad in ("liked: 7\ndisliked: 0", "liked: 1\ndisliked: 1", "I like them all", ""):
        with pytest.raises(ValueError):
            parse_liked_disliked(bad, req)
    rreq = Request("rerank", "", {"candidates": CANDS})
    assert parse_rerank("2: a\n0: b\n2: dup", rreq) == [(2, "a"), (0, "b"), (1, "")]
    for bad in ("9: out of range\n0: x", "nothing here", "1: only one"):
        with pytest.raises(ValueError):
            parse_rerank(bad, rreq)


class FlakyBackend:
    """Answers garbage until the prompt carries the retry note ``n`` times."""

    name, model_name = "fake", "flaky"

    def __init__(self, good_after: int) -> None:
        self.good_after, self.calls = good_after, 0

    def generate(self, requests):
        self.calls += len(requests)
        return ["liked: 0\ndisliked: 1" if r.prompt.count("attempt") >= self.good_after
                else "¯\\_(ツ)_/¯" for r in requests]


def test_retry_then_skip_counted_never_crash():
    g = Generator(GenerateSpec(format_retries=2), backend=FlakyBackend(good_after=1))
    (o,) = choose_liked_disliked_many(g, [(HIST, CANDS)])
    assert o.ok and o.attempts == 2 and g.stats["retries"] == 1
    g = Generator(GenerateSpec(format_retries=1), backend=FlakyBackend(good_after=5))
    outs = choose_liked_disliked_many(g, [(HIST, CANDS)] * 3)
    assert [o.ok for o in outs] == [False] * 3 and all(o.parsed is None for o in outs)
    assert g.stats["skipped"] == 3 and g.skipped_by_task == {"liked_disliked": 3}


# ------------------------------------------------------------------------------ tiny HF LM


def tiny_lm(with_chat: bool):
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    words = ["[PAD]", "[UNK]", "<s>", "</s>", "liked", "disliked", ":", "the", "movie", "user",
             "a", "is", "comedy", "horror", "likes", "profile", "[", "]"]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]",
                                     bos_token="<s>", eos_token="</s>")
    if with_chat:
        hf_tok.chat_template = ("{% for m in messages %}user : {{ m['content'] }}{% endfor %}"
                                "{% if add_generation_prompt %} the movie :{% endif %}")
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(words), hidden_size=64, intermediate_size=128,
                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                      max_position_embeddings=2048, pad_token_id=0, bos_token_id=2,
                      eos_token_id=3)
    return hf_tok, LlamaForCausalLM(cfg).eval()


@pytest.mark.parametrize("with_chat", [False, True])
def test_hf_tiny_random_lm_garbage_is_skipped_and_counted(with_chat):
    tok, model = tiny_lm(with_chat)
    spec = GenerateSpec(backend="hf", max_new_tokens=8, batch_size=2, format_retries=1,
                        temperature=0.8, top_p=0.9)
    g = Generator(spec, model=model, tokenizer=tok)
    assert g.backend.chat is with_chat
    cases = [(HIST[:k], CANDS) for k in range(3)]  # 3 distinct prompts
    outs = choose_liked_disliked_many(g, cases)  # no digits in the vocabulary: never parses
    assert len(outs) == 3 and not any(o.ok for o in outs)
    assert all(o.backend == "hf" and o.parsed is None for o in outs)
    assert g.stats["skipped"] == 3 and g.stats["generated"] == 6  # 3 prompts x 2 attempts
    profiles = write_profiles(g, [ProfileRecord("item", 1, "A comedy.")] * 2)
    assert len(profiles) == 2 and g.stats["ok"] + g.stats["skipped"] == 5


def test_hf_loads_from_local_path(tmp_path):
    tok, model = tiny_lm(False)
    model.save_pretrained(tmp_path / "lm")
    tok.save_pretrained(tmp_path / "lm")
    g = Generator(GenerateSpec(backend="hf", model=str(tmp_path / "lm"), max_new_tokens=4,
                               format_retries=0))
    (o,) = choose_liked_disliked_many(g, [(HIST, CANDS)])
    assert o.model == str(tmp_path / "lm") and not o.ok
    with pytest.raises(InputError, match="model"):
        Generator(GenerateSpec(backend="hf"))
    with pytest.raises(InputError, match="extra|config.json"):
        Generator(GenerateSpec(backend="hf", model=str(tmp_path)))
