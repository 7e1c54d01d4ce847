"""Generation backends: ``offline`` (templates + encoder similarity), ``hf`` (a causal LM) and
``openai`` (an OpenAI-compatible HTTP endpoint); :func:`build_backend` picks the spec's."""

from recmind_dist.generation.backends.base import Backend, build_backend
from recmind_dist.generation.backends.hf import HFBackend
from recmind_dist.generation.backends.offline import OFFLINE_VERSION, OfflineBackend
from recmind_dist.generation.backends.openai import OpenAIBackend

__all__ = ["OFFLINE_VERSION", "Backend", "HFBackend", "OfflineBackend", "OpenAIBackend",
           "build_backend"]
