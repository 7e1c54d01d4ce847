"""Shared fixtures: tiny datasets written the way importers write them."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

CHECKOUT = Path(__file__).resolve().parents[1]
TOOL_CACHES = ("__pycache__", ".pytest_cache", ".ruff_cache")
_checkout_before = pytest.StashKey[set]()


def checkout_entries() -> set[str] | None:
    """Untracked and ignored paths of the checkout (``git status --ignored``, folders
    collapsed), minus interpreter/tool caches; None outside a git checkout."""
    import subprocess

    try:
        out = subprocess.run(["git", "status", "--porcelain", "--ignored"], cwd=CHECKOUT,
                             capture_output=True, text=True, timeout=60, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    paths = {line[3:] for line in out.splitlines() if line[:2] in ("??", "!!")}
    return {p for p in paths if not any(c in p for c in TOOL_CACHES)}


def pytest_sessionstart(session: pytest.Session) -> None:
    session.config.stash[_checkout_before] = checkout_entries()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """The test session leaves the checkout as it found it: no ``mlruns/``, ``mlflow.db``,
    run folders or caches written into the repository (tests write under tmp paths)."""
    before = session.config.stash.get(_checkout_before, None)
    after = checkout_entries()
    if before is None or after is None:
        return
    new = sorted(after - before)
    if new:
        session.config.get_terminal_writer().line(
            "\nerror: the tests left new files in the checkout " + str(CHECKOUT) + ": "
            + ", ".join(new), red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def random_interactions(n_users: int, n_items: int, per_user: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        items = rng.choice(n_items, size=per_user, replace=False)
        for t, i in enumerate(items):
            rows.append((u, int(i), float(rng.integers(1, 6)), 1000 * u + t))
    return pd.DataFrame(rows, columns=["user", "item", "rating", "timestamp"])


@pytest.fixture
def tiny_dataset(tmp_path: Path):
    """A canonical dataset directory: 30 users, 40 items, 12 ratings each, with item text."""
    from recmind_dist.data.schema import load_dataset, write_dataset

    inter = random_interactions(30, 40, 12)
    items = pd.DataFrame({"id": np.arange(40), "title": [f"Movie {i}" for i in range(40)],
                          "genres": ["Drama" if i % 2 else "Comedy" for i in range(40)]})
    out = write_dataset(
        tmp_path / "tiny", inter, None, items,
        np.array([f"u{i}" for i in range(30)], dtype=object),
        np.array([f"i{i}" for i in range(40)], dtype=object), source="test",
    )
    return load_dataset(out)


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised 2-layer BERT (hidden 32) with MiniLM's tokenizer, saved to disk."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from recmind_dist.embed.encoder import default_model_path

    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("tiny_bert")
    cfg = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2,
                     num_attention_heads=2, intermediate_size=64, max_position_embeddings=128)
    BertModel(cfg).save_pretrained(d)
    AutoTokenizer.from_pretrained(default_model_path()).save_pretrained(d)
    return d
