"""OpenAI-compatible ``POST {base_url}/chat/completions`` backend (vLLM, TGI, Ollama, ...)
over ``httpx``, ``batch_size`` requests in parallel.

Base URL and model come from the spec or ``$OPENAI_BASE_URL`` / ``$OPENAI_MODEL``; the key from
the environment variable named by ``api_key_env``.

Transport retries (``tenacity``): a request that fails with a connection error, a timeout,
HTTP 429 or a 5xx is sent again after ``min(0.25 · 2^(a-1), 4)`` seconds before its a-th
retry, at most ``http_retries`` times, so it goes out at most ``1 + http_retries`` times. Any
other 4xx, and a success whose body is not a chat completion, fail at once. A failed request
answers ``None`` (a transport failure: not cached, not re-asked by the engine).

``choice: likelihood`` is refused at construction (:class:`~recmind_dist.errors.InputError`):
this backend does not fetch token log-probabilities over HTTP.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
)

from recmind_dist.errors import InputError
from recmind_dist.generation.backends.base import Backend
from recmind_dist.generation.records import Request
from recmind_dist.specs.generation import GenerateSpec

log = logging.getLogger(__name__)

__all__ = ["OpenAIBackend", "is_transient"]

#: Backoff before the a-th retry: ``min(BACKOFF_S * 2 ** (a - 1), BACKOFF_MAX_S)`` seconds.
BACKOFF_S = 0.25
BACKOFF_MAX_S = 4.0


def is_transient(exc: BaseException) -> bool:
    """Worth sending again: connection errors, timeouts, HTTP 429 and 5xx (not other 4xx)."""
    if isinstance(exc, httpx.HTTPStatusError):
        status = exc.response.status_code
        return status == 429 or status >= 500
    return isinstance(exc, (httpx.TimeoutException, httpx.NetworkError,
                            httpx.RemoteProtocolError))


def _log_retry(state: RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome is not None else None
    log.warning("openai request failed (attempt %d), retrying: %s", state.attempt_number, exc)


class OpenAIBackend(Backend):
    """``POST {base_url}/chat/completions``; ``transport``: an ``httpx`` transport to use
    instead of the network (e.g. ``httpx.MockTransport`` in tests)."""

    name = "openai"

    def __init__(self, spec: GenerateSpec, transport: httpx.BaseTransport | None = None
                 ) -> None:
        self.spec = spec
        if spec.choice == "likelihood":
            raise InputError("generate spec", "choice",
                             "backend 'openai' gets no token log-probabilities here, so it "
                             "cannot score candidates by likelihood; use choice: generate")
        base = spec.base_url or os.environ.get("OPENAI_BASE_URL")
        if not base:
            raise InputError("generate spec", "base_url",
                             "backend 'openai' needs base_url (or $OPENAI_BASE_URL)")
        self.base_url = base.rstrip("/")
        self.model_name = spec.model or os.environ.get("OPENAI_MODEL") or ""
        if not self.model_name:
            raise InputError("generate spec", "model",
                             "backend 'openai' needs a model name (or $OPENAI_MODEL)")
        api_key = os.environ.get(spec.api_key_env, "")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.Client(headers=headers, timeout=spec.timeout_s, transport=transport)
        self.errors = 0

    def close(self) -> None:
        self.client.close()

    def _post(self, body: dict[str, Any]) -> httpx.Response:
        resp = self.client.post(f"{self.base_url}/chat/completions", json=body)
        resp.raise_for_status()
        return resp

    def _one(self, prompt: str) -> str | None:
        body = {"model": self.model_name, "messages": [{"role": "user", "content": prompt}],
                "temperature": self.spec.temperature, "top_p": self.spec.top_p,
                "max_tokens": self.spec.max_new_tokens}
        retrying = Retrying(stop=stop_after_attempt(1 + self.spec.http_retries),
                            wait=wait_exponential(multiplier=BACKOFF_S, max=BACKOFF_MAX_S),
                            retry=retry_if_exception(is_transient), before_sleep=_log_retry,
                            reraise=True)
        try:
            data = retrying(self._post, body).json()
            content = data["choices"][0]["message"]["content"]
        except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError) as exc:
            log.warning("openai request failed: %s", exc)
            self.errors += 1
            return None
        return "" if content is None else str(content).strip()

    def generate(self, requests: Sequence[Request]) -> list[str | None]:
        with ThreadPoolExecutor(max_workers=min(self.spec.batch_size, max(len(requests), 1))
                                ) as pool:
            return list(pool.map(self._one, [r.prompt for r in requests]))
