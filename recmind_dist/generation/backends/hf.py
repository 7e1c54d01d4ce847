"""Hugging Face causal LM backend: batched, left-padded ``generate`` with the chat template
where the tokenizer has one.

Greedy decoding at ``temperature = 0``; otherwise nucleus sampling with ``temperature`` /
``top_p`` and the torch seed ``seed + b`` for the backend's b-th batch.
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

__all__ = ["HFBackend"]


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
        if local.exists():
            if not (local / "config.json").exists():
                raise InputError("generate spec", "model", f"{src} exists but has no config.json")
            kw["local_files_only"] = True
            src = str(local)
        try:
            tok = AutoTokenizer.from_pretrained(src, **kw)
            mdl = AutoModelForCausalLM.from_pretrained(src, dtype=getattr(torch, dtype), **kw)
        except (OSError, ValueError) as exc:
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
