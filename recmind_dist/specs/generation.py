"""Which generative LM backend writes text, and how (:class:`GenerateSpec`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from recmind_dist.specs.base import Spec


class GenerateSpec(Spec):
    """Which generative backend writes text, how it samples, and where outputs are cached."""

    backend: Literal["offline", "hf", "openai"] = Field(
        "offline", description="offline: templates + encoder similarity (no generative model); "
        "hf: local/hub causal LM; openai: OpenAI-compatible HTTP endpoint")
    model: str | None = Field(
        None, description="hf: local path or hub id; openai: model name (else $OPENAI_MODEL); "
        "offline: the sentence encoder (None = bundled MiniLM)")
    base_url: str | None = Field(
        None, description="openai: e.g. http://host:8000/v1 (else $OPENAI_BASE_URL)")
    api_key_env: str = Field("OPENAI_API_KEY", description="env var holding the API key")
    temperature: float = Field(0.0, ge=0, description="0 = greedy decoding")
    top_p: float = Field(1.0, gt=0, le=1)
    max_new_tokens: int = Field(96, gt=0)
    batch_size: int = Field(8, gt=0, description="prompts per generate call / parallel requests")
    http_retries: int = Field(
        2, ge=0, description="openai: transport retries of one request (connection errors, "
        "timeouts, HTTP 429 and 5xx; never other 4xx) with exponential backoff, so a request "
        "goes out at most 1 + http_retries times per format attempt")
    format_retries: int = Field(
        2, ge=0, description="re-asks of an answer the task's parser rejects (the prompt gets "
        "a reminder of the format); a transport failure is not re-asked")
    timeout_s: float = Field(120.0, gt=0, description="openai: per-request timeout")
    cache_dir: Path | None = Field(None, description="Parquet cache directory; None = no cache")
    device: str | None = Field(None, description="hf/offline torch device; None = cuda if any")
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    seed: int = Field(0, description="hf sampling seed (per batch: seed + batch index)")
    ray: bool = Field(False, description="fan generation out over Ray tasks")
    ray_address: str | None = Field(None, description="Ray cluster; None = start/attach local")
    ray_min_prompts: int = Field(512, gt=0, description="use Ray only above this many misses")
    ray_chunk: int = Field(256, gt=0, description="prompts per Ray task (and per cache part)")
    choice: Literal["generate", "likelihood"] = Field(
        "generate", description="how an LM chooses among candidates (liked/disliked, re-rank "
        "order): generate = parse its free answer; likelihood = score the log-probability of "
        "the answer naming each candidate, averaged over candidate-order permutations (hf "
        "only; offline keeps its similarity answer; openai refuses)")
    choice_permutations: int = Field(
        4, gt=0, description="likelihood: candidate orders per prompt (cyclic shifts of a "
        "seeded random order; >= the number of candidates puts each in every position once)")
    offline_rerank_weight: float = Field(
        0.3, ge=0, le=1,
        description="offline re-ranking: weight of the encoder-similarity order against the "
        "recommender's order (reciprocal-rank fusion); 0 keeps the order, 1 = similarity only")

    @model_validator(mode="before")
    @classmethod
    def _no_max_retries(cls, raw: Any) -> Any:
        if isinstance(raw, dict) and "max_retries" in raw:
            raise ValueError(
                "max_retries was split in two: set http_retries (transport retries of one "
                "HTTP request) and/or format_retries (re-asks of an unparsable answer)")
        return raw
