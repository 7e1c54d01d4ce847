"""The Parquet prompt cache: keys unchanged by the move to recmind_dist.generation (existing
caches still hit), reruns cost nothing, chunks resume, compaction keeps every key."""

from __future__ import annotations

from test_generate import CANDS, HIST, BagEncoder, FlakyBackend, offline

from recmind_dist.generation import (
    GenerationCache,
    Generator,
    ItemInfo,
    cache_key,
    choose_liked_disliked_many,
    rerank_with_justifications,
)
from recmind_dist.specs import GenerateSpec


def test_known_cache_keys_are_unchanged():
    """Keys computed by text/generate.py before the split (sha256 of the UTF-8 JSON, not
    ASCII-escaped): the same inputs must give byte-identical keys."""
    prompt = "Profile of Amélie (2001) ¯\\_(ツ)_/¯"
    assert cache_key("offline", "sentence-transformers/all-MiniLM-L6-v2", prompt,
                     {"rerank_w": 0.3, "v": 2}) == (
        "4d6e4e4c5980defd5bc71d501012bcdc0bb9ab409c0fad2e3f7a0ecd598cee1a")
    assert cache_key("hf", "tiny", "liked: 1",
                     {"temperature": 0.0, "top_p": 1.0, "max_new_tokens": 96}) == (
        "95f51a2f3785c6f35fc2242d05b50ca96288bbbea8c757d95d34f60d055784f2")
    assert cache_key("fake", "flaky", "p") == (
        "dc28f9d63b4db401c4cc8b007cc535c5976cae986814ba73ae123b41fe75b7b6")


def test_cache_rerun_costs_nothing_and_resumes(tmp_path):
    g = offline(tmp_path / "cache", ray_chunk=2)
    cases = [(HIST, CANDS[i:] + CANDS[:i]) for i in range(3)]
    first = choose_liked_disliked_many(g, cases)
    assert g.stats["generated"] == 3 and len(list((tmp_path / "cache").glob("part-*"))) == 2
    g2 = Generator(GenerateSpec(cache_dir=tmp_path / "cache"), backend=FlakyBackend(0))
    g2.backend.name, g2.backend.model_name = "offline", "bag-of-words"  # same key space
    g2.backend.params = g.backend.params
    again = choose_liked_disliked_many(g2, cases + [(HIST, CANDS[::-1])])
    assert [o.parsed for o in again[:3]] == [o.parsed for o in first]
    assert all(o.cached for o in again[:3]) and not again[3].cached
    assert g2.stats["cache_hits"] == 3 and g2.backend.calls == 1  # only the new prompt
    cache = GenerationCache(tmp_path / "cache")
    assert len(cache) == 4 and cache.compact() is not None
    assert len(GenerationCache(tmp_path / "cache")) == 4


def test_cache_key_includes_answer_changing_settings(tmp_path):
    cands = [ItemInfo(f"M{i}", CANDS[i % 3]) for i in range(6)]
    a = Generator(GenerateSpec(cache_dir=tmp_path, offline_rerank_weight=0.0),
                  encoder=BagEncoder())
    b = Generator(GenerateSpec(cache_dir=tmp_path, offline_rerank_weight=1.0),
                  encoder=BagEncoder())
    ra = rerank_with_justifications(a, "", cands, [HIST[0]])
    rb = rerank_with_justifications(b, "", cands, [HIST[0]])
    assert not rb.cached and [i for i, _ in ra.parsed] == list(range(6))
    assert a.key("p") != b.key("p")
