"""The OpenAI-compatible HTTP backend: a real server on 127.0.0.1, and httpx.MockTransport for
the transport retries (503/429/connection errors retried with backoff, other 4xx not; at most
1 + http_retries sends per format attempt; a transport failure is not re-asked)."""

from __future__ import annotations

import json
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, HTTPServer

import httpx
import pytest
import tenacity
from pydantic import ValidationError
from test_generate import CANDS, HIST

from recmind_dist.errors import InputError
from recmind_dist.generation import Generator, choose_liked_disliked_many
from recmind_dist.specs import GenerateSpec, parse_spec

GOOD = "liked: 1\ndisliked: 0"


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
                               http_retries=1, format_retries=1))
    outs = choose_liked_disliked_many(g, [(HIST, CANDS), (HIST, ["FAIL", "x"])])
    assert outs[0].ok and outs[0].parsed == (1, 0) and outs[0].attempts == 2
    assert outs[0].backend == "openai" and outs[0].model == "tiny"
    assert not outs[1].ok and g.stats["transport_errors"] >= 1
    path, body, auth = seen[0]
    assert path == "/v1/chat/completions" and body["model"] == "tiny" and auth == "Bearer sekrit"
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(InputError, match="base_url"):
        Generator(GenerateSpec(backend="openai", model="x"))


@pytest.fixture
def sleeps(monkeypatch):
    """Backoff waits recorded instead of slept."""
    waited: list[float] = []
    monkeypatch.setattr(tenacity.nap.time, "sleep", waited.append)
    return waited


def chat(content: str) -> httpx.Response:
    return httpx.Response(200, json={"choices": [{"message": {"content": content}}]})


def mock_generator(handler, **spec) -> Generator:
    return Generator(GenerateSpec(backend="openai", base_url="http://llm.test/v1", model="m",
                                  **spec), transport=httpx.MockTransport(handler))


def test_503_then_200_is_retried_with_backoff(sleeps):
    statuses = iter([503, 429, 200])
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(str(request.url))
        status = next(statuses)
        return chat(GOOD) if status == 200 else httpx.Response(status)

    g = mock_generator(handler, http_retries=2)
    (o,) = choose_liked_disliked_many(g, [(HIST, CANDS)])
    assert o.ok and o.parsed == (1, 0) and o.attempts == 1
    assert calls == ["http://llm.test/v1/chat/completions"] * 3
    assert sleeps == [0.25, 0.5] and g.stats["transport_errors"] == 0


def test_connection_error_is_retried(sleeps):
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        if len(calls) == 1:
            raise httpx.ConnectError("connection refused", request=request)
        return chat(GOOD)

    (o,) = choose_liked_disliked_many(mock_generator(handler, http_retries=1), [(HIST, CANDS)])
    assert o.ok and len(calls) == 2 and sleeps == [0.25]


@pytest.mark.parametrize("status", [400, 401, 404, 422])
def test_4xx_is_not_retried(status, sleeps):
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(status, json={"error": "bad request"})

    g = mock_generator(handler, http_retries=3, format_retries=2)
    (o,) = choose_liked_disliked_many(g, [(HIST, CANDS)])
    assert len(calls) == 1 and sleeps == []
    assert not o.ok and o.parsed is None and o.error == "transport error" and o.attempts == 1
    assert g.stats["transport_errors"] == 1 and g.stats["skipped"] == 1
    assert g.backend.errors == 1


def test_transport_failure_is_not_re_asked(sleeps):
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(503)

    g = mock_generator(handler, http_retries=2, format_retries=2)
    (o,) = choose_liked_disliked_many(g, [(HIST, CANDS)])
    assert len(calls) == 3 and not o.ok and o.attempts == 1 and g.stats["retries"] == 0
    assert sleeps == [0.25, 0.5]


@pytest.mark.parametrize("http_retries", [0, 2])
def test_at_most_1_plus_http_retries_sends_per_format_attempt(http_retries, sleeps):
    """Every prompt fails ``http_retries`` times, then answers garbage: each of the
    ``1 + format_retries`` prompts goes out exactly ``1 + http_retries`` times, never more."""
    sent: Counter[str] = Counter()

    def handler(request: httpx.Request) -> httpx.Response:
        prompt = json.loads(request.content)["messages"][0]["content"]
        sent[prompt] += 1
        return httpx.Response(503) if sent[prompt] <= http_retries else chat("no idea")

    g = mock_generator(handler, http_retries=http_retries, format_retries=2)
    (o,) = choose_liked_disliked_many(g, [(HIST, CANDS)])
    assert not o.ok and o.attempts == 3 and o.error is not None and "liked" in o.error
    assert len(sent) == 3 and set(sent.values()) == {1 + http_retries}
    assert sum(sent.values()) == 3 * (1 + http_retries)
    assert g.stats["retries"] == 2 and g.stats["transport_errors"] == 0


def test_malformed_body_is_a_transport_failure(sleeps):
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(200, text="<html>proxy error</html>")

    (o,) = choose_liked_disliked_many(mock_generator(handler), [(HIST, CANDS)])
    assert len(calls) == 1 and not o.ok and o.error == "transport error"


def test_max_retries_is_rejected_naming_the_new_keys():
    with pytest.raises(ValidationError, match="http_retries.*format_retries"):
        GenerateSpec(max_retries=1)
    raw = {"model": {"name": "llmrec", "lm": {"max_retries": 1}}}
    with pytest.raises(InputError, match="http_retries.*format_retries"):
        parse_spec(raw, "job.yaml")
    spec = GenerateSpec()
    assert (spec.http_retries, spec.format_retries) == (2, 2)
