"""The generation engine: cache -> backend (in-process or Ray tasks) -> parse -> re-ask.

:meth:`Generator.run` looks every prompt up in the cache, generates the misses in chunks of
``ray_chunk`` (Ray tasks that each build the spec's backend when ``ray`` is set and at least
``ray_min_prompts`` prompts miss; otherwise in-process), caches each finished chunk, and
parses every answer with the task's parser. An answer the parser rejects (empty text, wrong
format, out-of-range index) is re-asked up to ``format_retries`` times with a reminder of the
format appended to the prompt (a new prompt, hence a new cache key and a fresh answer even for
greedy decoding); after that, and at once after a transport failure (the backend already
retried it ``http_retries`` times), the request is returned with ``ok=False, parsed=None`` and
counted in :attr:`Generator.stats` (``skipped``). Nothing a model writes can crash a job.

:meth:`Generator.scores` is the likelihood side (``choice: likelihood``): ``log P(answer |
prompt)`` per pair from the backend, cached like texts under
``cache_key(backend, model, prompt, {"score_answer": answer})`` (the score is stored as its
``repr``, which round-trips exactly).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from recmind_dist.generation.backends.base import Backend, build_backend
from recmind_dist.generation.cache import GenerationCache, cache_key
from recmind_dist.generation.records import Output, Request
from recmind_dist.specs.generation import GenerateSpec

log = logging.getLogger(__name__)

__all__ = ["RETRY_NOTE", "Generator", "Parser", "build_generator"]

Parser = Callable[[str, Request], Any]  # returns the parsed value or raises ValueError

RETRY_NOTE = ("\n\nYour previous answer could not be used. Answer again, strictly in the "
              "requested format. (attempt {n})")

TRANSPORT_ERROR = "transport error"


def _ray_generate_chunk(spec_json: str, requests: list[Request]) -> list[str | None]:
    spec = GenerateSpec.model_validate_json(spec_json)
    return build_backend(spec).generate(requests)


class Generator:
    """Runs requests through a backend with caching, format re-asks and counting.

    ``stats``: requests, ok, skipped (unparsable after all re-asks, or a transport failure),
    retries (format re-asks), cache_hits, generated (texts produced by the backend),
    transport_errors, seconds, scored (answer likelihoods computed by the backend).
    """

    def __init__(self, spec: GenerateSpec | None = None, backend: Backend | None = None,
                 **objects: Any) -> None:
        self.spec = spec or GenerateSpec()
        self.backend = backend or build_backend(self.spec, **objects)
        self.cache = GenerationCache(self.spec.cache_dir) if self.spec.cache_dir else None
        self.stats: dict[str, float] = dict.fromkeys(
            ("requests", "ok", "skipped", "retries", "cache_hits", "generated",
             "transport_errors", "seconds", "scored"), 0)
        self.skipped_by_task: dict[str, int] = {}
        #: a prompts/s bar with ETA while misses are generated (set it for a person watching)
        self.progress = False

    @property
    def backend_name(self) -> str:
        return self.backend.name

    @property
    def model_name(self) -> str:
        return self.backend.model_name

    def key(self, prompt: str) -> str:
        params = self.backend.params() if hasattr(self.backend, "params") else {}
        return cache_key(self.backend.name, self.backend.model_name, prompt, params)

    @property
    def likelihood_choice(self) -> bool:
        """Whether candidate choices are scored by likelihood (``choice: likelihood``, unless
        the backend answers choices itself, as the offline one does)."""
        return self.spec.choice == "likelihood" and not self.backend.answers_choices_itself

    def score_key(self, prompt: str, answer: str) -> str:
        return cache_key(self.backend.name, self.backend.model_name, prompt,
                         {"score_answer": answer})

    def scores(self, pairs: Sequence[tuple[str, str]], task: str
               ) -> tuple[list[float], list[bool]]:
        """``log P(answer | prompt)`` per pair (cache first, then the backend in chunks of
        ``ray_chunk``, each chunk cached) and whether each came from the cache."""
        keys = [self.score_key(p, a) for p, a in pairs]
        out: list[float] = [0.0] * len(pairs)
        cached = [False] * len(pairs)
        miss: dict[str, list[int]] = {}
        for i, k in enumerate(keys):
            hit = self.cache.get(k) if self.cache is not None else None
            if hit is not None:
                out[i], cached[i] = float(hit), True
            else:
                miss.setdefault(k, []).append(i)
        self.stats["cache_hits"] += sum(cached)
        todo_keys = list(miss)
        chunk = self.spec.ray_chunk
        for s in range(0, len(todo_keys), chunk):
            part_keys = todo_keys[s: s + chunk]
            part_pairs = [pairs[miss[k][0]] for k in part_keys]
            part = self.backend.score(part_pairs)
            self.stats["scored"] += len(part)
            if self.cache is not None:
                self.cache.put([{"key": k, "backend": self.backend.name,
                                 "model": self.backend.model_name, "task": f"{task}:score",
                                 "prompt": f"{p}\n\n[answer] {a}", "text": repr(float(v))}
                                for k, (p, a), v in zip(part_keys, part_pairs, part,
                                                        strict=True)])
            for k, v in zip(part_keys, part, strict=True):
                for i in miss[k]:
                    out[i] = float(v)
        return out, cached

    def texts(self, requests: Sequence[Request]) -> tuple[list[str | None], list[bool]]:
        """Raw texts (cache first, then the backend); ``None`` = transport failure."""
        keys = [self.key(r.prompt) for r in requests]
        out: list[str | None] = [None] * len(requests)
        cached = [False] * len(requests)
        miss: dict[str, list[int]] = {}
        for i, k in enumerate(keys):
            hit = self.cache.get(k) if self.cache is not None else None
            if hit is not None:
                out[i], cached[i] = hit, True
            else:
                miss.setdefault(k, []).append(i)
        self.stats["cache_hits"] += sum(cached)
        todo = [requests[idx[0]] for idx in miss.values()]
        todo_keys = list(miss)
        if todo:
            use_ray = self.spec.ray and len(todo) >= self.spec.ray_min_prompts
            results = (self._generate_ray(todo, todo_keys) if use_ray else
                       self._generate_local(todo, todo_keys))
            for k, text in zip(todo_keys, results, strict=True):
                for i in miss[k]:
                    out[i] = text
        return out, cached

    def _store(self, reqs: Sequence[Request], keys: Sequence[str],
               texts: Sequence[str | None]) -> None:
        n_fail = sum(t is None for t in texts)
        self.stats["generated"] += len(texts) - n_fail
        self.stats["transport_errors"] += n_fail
        if self.cache is not None:
            self.cache.put([{"key": k, "backend": self.backend.name,
                             "model": self.backend.model_name, "task": r.task,
                             "prompt": r.prompt, "text": t}
                            for r, k, t in zip(reqs, keys, texts, strict=True) if t is not None])

    def _bar(self, total: int) -> Any:
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=f"generate ({self.backend_name})", unit="prompt",
                    disable=not self.progress, leave=False)

    def _generate_local(self, reqs: list[Request], keys: list[str]) -> list[str | None]:
        chunk = self.spec.ray_chunk
        out: list[str | None] = []
        bar = self._bar(len(reqs))
        for s in range(0, len(reqs), chunk):
            part = self.backend.generate(reqs[s: s + chunk])
            self._store(reqs[s: s + chunk], keys[s: s + chunk], part)
            bar.update(len(part))
            out.extend(part)
        return out

    def _generate_ray(self, reqs: list[Request], keys: list[str]) -> list[str | None]:
        import ray

        if not ray.is_initialized():
            ray.init(address=self.spec.ray_address, ignore_reinit_error=True,
                     log_to_driver=False)
        remote = ray.remote(_ray_generate_chunk)
        spec_json = self.spec.model_dump_json()
        chunk = self.spec.ray_chunk
        refs = {}
        for s in range(0, len(reqs), chunk):
            refs[remote.remote(spec_json, reqs[s: s + chunk])] = s
        out: list[str | None] = [None] * len(reqs)
        pending = list(refs)
        bar = self._bar(len(reqs))
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            s = refs[done[0]]
            part = ray.get(done[0])
            self._store(reqs[s: s + chunk], keys[s: s + chunk], part)
            bar.update(len(part))
            out[s: s + len(part)] = part
        return out

    def run(self, requests: Sequence[Request], parser: Parser) -> list[Output]:
        """Generate, parse, re-ask the unparsable (bounded), count and return one Output each."""
        t0 = time.perf_counter()
        n = len(requests)
        self.stats["requests"] += n
        outputs: list[Output | None] = [None] * n
        last: dict[int, tuple[str, str | None, bool, str, int]] = {}
        pending = list(range(n))
        failed: list[int] = []  # transport failures: not re-asked
        for attempt in range(self.spec.format_retries + 1):
            if not pending:
                break
            if attempt:
                self.stats["retries"] += len(pending)
            reqs = [requests[i] if attempt == 0 else
                    Request(requests[i].task,
                            requests[i].prompt + RETRY_NOTE.format(n=attempt + 1),
                            requests[i].payload) for i in pending]
            texts, cached = self.texts(reqs)
            still = []
            for i, r, text, hit in zip(pending, reqs, texts, cached, strict=True):
                key = self.key(r.prompt)
                if text is None:
                    last[i] = ("", TRANSPORT_ERROR, hit, key, attempt + 1)
                    failed.append(i)
                    continue
                try:
                    if not text.strip():
                        raise ValueError("empty answer")
                    parsed = parser(text, r)
                except (ValueError, KeyError, IndexError, TypeError) as exc:
                    last[i] = (text, str(exc) or type(exc).__name__, hit, key, attempt + 1)
                    still.append(i)
                    continue
                outputs[i] = Output(r.task, text, parsed, True, self.backend.name,
                                    self.backend.model_name, attempt + 1, hit, key)
            pending = still
        skipped = sorted(failed + pending)
        for i in skipped:
            text, err, hit, key, attempts = last[i]
            task = requests[i].task
            self.skipped_by_task[task] = self.skipped_by_task.get(task, 0) + 1
            outputs[i] = Output(task, text, None, False, self.backend.name,
                                self.backend.model_name, attempts, hit, key, err)
        self.stats["skipped"] += len(skipped)
        self.stats["ok"] += n - len(skipped)
        self.stats["seconds"] += time.perf_counter() - t0
        if skipped:
            log.warning("%d/%d %s answers skipped (%d unparsable after %d attempts, %d transport "
                        "failures)", len(skipped), n, requests[0].task if requests else "?",
                        len(pending), self.spec.format_retries + 1, len(failed))
        return [o for o in outputs if o is not None]


def build_generator(spec: GenerateSpec | None = None, **objects: Any) -> Generator:
    """A :class:`Generator` over the spec's backend (``objects``: see
    :func:`~recmind_dist.generation.backends.base.build_backend`)."""
    return Generator(spec, **objects)
