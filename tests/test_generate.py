"""Generative backends: offline answers, tiny random HF causal LM (garbage survives the
parser), an OpenAI-compatible server on 127.0.0.1, the Parquet cache and retries."""

from __future__ import annotations

import json
import threading
import zlib
from http.server import BaseHTTPRequestHandler, HTTPServer

import numpy as np
import pytest

from recmind_dist.errors import InputError
from recmind_dist.specs import GenerateSpec
from recmind_dist.text.generate import (
    GenerationCache,
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
    g = Generator(GenerateSpec(max_retries=2), backend=FlakyBackend(good_after=1))
    (o,) = choose_liked_disliked_many(g, [(HIST, CANDS)])
    assert o.ok and o.attempts == 2 and g.stats["retries"] == 1
    g = Generator(GenerateSpec(max_retries=1), backend=FlakyBackend(good_after=5))
    outs = choose_liked_disliked_many(g, [(HIST, CANDS)] * 3)
    assert [o.ok for o in outs] == [False] * 3 and all(o.parsed is None for o in outs)
    assert g.stats["skipped"] == 3 and g.skipped_by_task == {"liked_disliked": 3}


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
    spec = GenerateSpec(backend="hf", max_new_tokens=8, batch_size=2, max_retries=1,
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
                               max_retries=0))
    (o,) = choose_liked_disliked_many(g, [(HIST, CANDS)])
    assert o.model == str(tmp_path / "lm") and not o.ok
    with pytest.raises(InputError, match="model"):
        Generator(GenerateSpec(backend="hf"))
    with pytest.raises(InputError, match="extra|config.json"):
        Generator(GenerateSpec(backend="hf", model=str(tmp_path)))


# ------------------------------------------------------------------ OpenAI-compatible server


@pytest.fixture
def chat_server():
    seen = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append((self.path, body, self.headers.get("Authorization")))
            prompt = body["messages"][0]["content"]
            answer = "liked: 1\ndisliked: 0" if "attempt" in prompt else "liked: 99"
            if "FAIL" in prompt:
                self.send_response(500)
                self.end_headers()
                return
            data = json.dumps({"choices": [{"message": {"content": answer}}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *a):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1", seen
    server.shutdown()
    server.server_close()
    t.join(5)


def test_openai_compatible_endpoint(chat_server, monkeypatch):
    url, seen = chat_server
    monkeypatch.setenv("MY_KEY", "sekrit")
    g = Generator(GenerateSpec(backend="openai", base_url=url, model="tiny", api_key_env="MY_KEY",
                               max_retries=1))
    outs = choose_liked_disliked_many(g, [(HIST, CANDS), (HIST, ["FAIL", "x"])])
    assert outs[0].ok and outs[0].parsed == (1, 0) and outs[0].attempts == 2
    assert outs[0].backend == "openai" and outs[0].model == "tiny"
    assert not outs[1].ok and g.stats["transport_errors"] >= 1
    path, body, auth = seen[0]
    assert path == "/v1/chat/completions" and body["model"] == "tiny" and auth == "Bearer sekrit"
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(InputError, match="base_url"):
        Generator(GenerateSpec(backend="openai", model="x"))


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
