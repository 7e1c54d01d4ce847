"""TextEncoder: pooling, ordering, truncation, model loading errors, LoRA."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from recmind_dist.embed.encoder import (
    TextEncoder,
    add_lora,
    default_model_path,
    last_token_pool,
    load_hf,
    mean_pool,
    resolve_pooling,
)
from recmind_dist.errors import InputError

TEXTS = [
    "Toy Story (1995). Genres: Animation, Children's, Comedy.",
    "",
    "A 24-year-old M technician. Top genres: Drama, Comedy. Liked: Star Wars; Fargo.",
    "GoldenEye.",
    "word " * 80,
    "Four Rooms (1995). Genres: Thriller.",
]


def _tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(default_model_path())


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from transformers import LlamaConfig, LlamaModel

    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("tiny_llama")
    cfg = LlamaConfig(vocab_size=30522, hidden_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, intermediate_size=128,
                      max_position_embeddings=256, pad_token_id=0)
    LlamaModel(cfg).save_pretrained(d)
    _tokenizer().save_pretrained(d)  # BERT wordpiece tokenizer with [PAD] = 0
    return d


def test_default_model_is_offline_minilm() -> None:
    p = Path(default_model_path())
    assert (p / "config.json").exists() and (p / "model.safetensors").exists()


def test_pooling_equations() -> None:
    h = torch.arange(2 * 4 * 3, dtype=torch.float32).reshape(2, 4, 3)
    m = torch.tensor([[1, 1, 0, 0], [0, 1, 1, 1]])  # right and left padding
    assert torch.allclose(mean_pool(h, m)[0], h[0, :2].mean(0))
    assert torch.allclose(mean_pool(h, m)[1], h[1, 1:].mean(0))
    assert torch.equal(last_token_pool(h, m)[0], h[0, 1])
    assert torch.equal(last_token_pool(h, m)[1], h[1, 3])
    empty = torch.zeros(1, 4, dtype=torch.long)
    assert torch.equal(mean_pool(h[:1], empty), torch.zeros(1, 3))
    assert torch.equal(last_token_pool(h[:1], empty), torch.zeros(1, 3))


def test_encode_order_batches_truncation(tiny_bert: Path) -> None:
    enc = TextEncoder(tiny_bert, max_length=32, dtype="float32")
    assert enc.pooling == "mean" and enc.dim == 32
    ref = enc.encode(TEXTS, batch_size=64)
    assert ref.dtype == np.float32 and ref.shape == (len(TEXTS), 32)
    assert enc.n_truncated == 1  # the 80-word text
    np.testing.assert_allclose(np.linalg.norm(ref, axis=1), 1.0, atol=1e-5)
    for bs in (1, 2, 5):
        np.testing.assert_allclose(enc.encode(TEXTS, batch_size=bs), ref, atol=1e-6)
    # order restored whatever the input order
    np.testing.assert_allclose(enc.encode(TEXTS[::-1], batch_size=2), ref[::-1], atol=1e-6)
    # each text alone equals its batched vector (padding is masked out)
    for i, t in enumerate(TEXTS):
        np.testing.assert_allclose(enc.encode([t])[0], ref[i], atol=1e-6)
    assert enc.encode([]).shape == (0, 32)
    raw = TextEncoder(tiny_bert, normalize=False, dtype="float32").encode(TEXTS[:1])
    assert abs(np.linalg.norm(raw) - 1.0) > 1e-3


def test_decoder_uses_last_token_and_is_padding_invariant(tiny_llama: Path) -> None:
    enc = TextEncoder(tiny_llama, dtype="float32")
    assert enc.pooling == "last" and enc.tokenizer.padding_side == "right"
    ref = enc.encode(TEXTS, batch_size=64)
    for i, t in enumerate(TEXTS):
        np.testing.assert_allclose(enc.encode([t])[0], ref[i], atol=1e-5)
    assert TextEncoder(tiny_llama, pooling="mean").pooling == "mean"


def test_resolve_pooling_auto() -> None:
    from transformers import BertConfig, GPT2Config, LlamaConfig

    assert resolve_pooling(BertConfig()) == "mean"
    assert resolve_pooling(LlamaConfig()) == "last"
    assert resolve_pooling(GPT2Config()) == "last"
    assert resolve_pooling(BertConfig(is_decoder=True)) == "last"
    with pytest.raises(InputError, match="pooling"):
        resolve_pooling(BertConfig(), "cls")


def test_bad_model_path_and_dtype(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="'model'"):
        TextEncoder(str(tmp_path / "no" / "such" / "model"))
    with pytest.raises(InputError, match="config.json"):
        load_hf(tmp_path)
    with pytest.raises(InputError, match="dtype"):
        TextEncoder(default_model_path(), dtype="float16", device="cpu")
    with pytest.raises(InputError, match="dtype"):
        TextEncoder(default_model_path(), dtype="int8", device="cpu")


def test_resolve_dtype_auto(monkeypatch: pytest.MonkeyPatch) -> None:
    import recmind_dist.embed.encoder as encoder_mod

    monkeypatch.setattr(encoder_mod, "cpu_has_bf16_matmul", lambda: True)
    assert encoder_mod.resolve_dtype("auto", "cpu") == "bfloat16"
    monkeypatch.setattr(encoder_mod, "cpu_has_bf16_matmul", lambda: False)
    assert encoder_mod.resolve_dtype("auto", "cpu") == "float32"
    assert encoder_mod.resolve_dtype("float32", "cpu") == "float32"
    assert encoder_mod.resolve_dtype("bfloat16", "cpu") == "bfloat16"  # allowed, warned


def test_bf16_matmul_from_amx_or_avx512_bf16_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    import recmind_dist.embed.encoder as encoder_mod

    monkeypatch.setattr(encoder_mod.torch.cpu, "_is_amx_tile_supported", lambda: False,
                        raising=False)
    for flags, expected in (({"avx2", "avx512f"}, False), ({"avx2", "avx512_bf16"}, True),
                            ({"amx_bf16"}, True), (set(), False)):
        monkeypatch.setattr(encoder_mod, "cpu_flags", lambda f=flags: frozenset(f))
        assert encoder_mod.cpu_has_bf16_matmul() is expected, flags
    monkeypatch.setattr(encoder_mod.torch.cpu, "_is_amx_tile_supported", lambda: True,
                        raising=False)
    assert encoder_mod.cpu_has_bf16_matmul()


def test_cpu_bfloat16_autocast_close_to_float32() -> None:
    """bf16 autocast on CPU (the ``auto`` choice on AMX cores): fp32 weights stay untouched,
    vectors within cosine 0.9999 of the fp32 encode."""
    texts = [t for t in TEXTS if t]
    fp32 = TextEncoder(max_length=256, dtype="float32")
    bf16 = TextEncoder(max_length=256, dtype="bfloat16")
    assert bf16.autocast and not fp32.autocast
    assert next(bf16.model.parameters()).dtype == torch.float32
    a, b = fp32.encode(texts), bf16.encode(texts)
    assert not np.array_equal(a, b)  # it really ran in bf16
    assert (a * b).sum(1).min() > 0.9999


def test_minilm_matches_sentence_transformers() -> None:
    from sentence_transformers import SentenceTransformer

    texts = [t for t in TEXTS if t]
    ours = TextEncoder(max_length=256, dtype="float32").encode(texts, batch_size=4)
    st = SentenceTransformer(default_model_path(), device="cpu").encode(
        texts, batch_size=64, normalize_embeddings=True)
    cos = (ours * st).sum(1)
    assert cos.min() > 0.9999, cos


@pytest.mark.parametrize("kind", ["bert", "llama"])
def test_lora_trains_only_adapters(kind: str, tiny_bert: Path, tiny_llama: Path) -> None:
    from recmind_dist.embed.encoder import LoraTextTower

    tok, model = load_hf(tiny_bert if kind == "bert" else tiny_llama)
    tower = LoraTextTower(model, out_dim=8, r=4, alpha=8)
    trainable = {n for n, p in tower.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or n.startswith("proj.") for n in trainable)
    before = {n: p.detach().clone() for n, p in tower.named_parameters()}
    opt = torch.optim.Adam([p for p in tower.parameters() if p.requires_grad], lr=1e-2)
    tok.padding_side = "right"
    batch = tok(TEXTS[:3], padding=True, return_tensors="pt")
    for _ in range(2):  # step 1 moves lora_B (zero init), step 2 then moves lora_A
        out = tower(batch["input_ids"], batch["attention_mask"])
        loss = (out - 1.0).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = dict(tower.named_parameters())
    for n, p in after.items():
        if n in trainable:
            continue
        assert torch.equal(p, before[n]), f"frozen {n} changed"
    assert any(not torch.equal(after[n], before[n]) for n in trainable if "lora_B" in n)
    assert any(not torch.equal(after[n], before[n]) for n in trainable if "lora_A" in n)
    assert not torch.equal(after["proj.weight"], before["proj.weight"])


def test_add_lora_bad_target() -> None:
    from transformers import BertConfig, BertModel

    m = BertModel(BertConfig(vocab_size=100, hidden_size=16, num_hidden_layers=1,
                             num_attention_heads=2, intermediate_size=32))
    with pytest.raises(InputError, match="target_modules"):
        add_lora(m, target_modules=["no_such_layer"])
