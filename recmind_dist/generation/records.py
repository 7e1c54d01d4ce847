"""The values that pass through generation: requests, outputs and the tasks' inputs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["ItemInfo", "Output", "ProfileRecord", "Request", "as_item_info"]


@dataclass
class Request:
    """One prompt for an LM backend plus the structured payload the offline backend uses."""

    task: str
    prompt: str
    payload: dict[str, Any] = field(default_factory=dict)


@dataclass
class Output:
    """What a task returns for one request.

    ``parsed`` is the task's parsed answer (None when ``ok`` is False: skipped after
    ``attempts`` tries); ``text`` the raw text of the last attempt; ``backend``/``model`` who
    wrote it; ``cached`` whether that text came from the cache; ``scores`` the per-candidate
    likelihood scores S of a ``choice: likelihood`` answer (None for generated text).
    """

    task: str
    text: str
    parsed: Any
    ok: bool
    backend: str
    model: str
    attempts: int = 1
    cached: bool = False
    key: str = ""
    error: str | None = None
    scores: list[float] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("task", "text", "parsed", "ok", "backend",
                                               "model", "attempts", "cached", "key", "error")}


@dataclass
class ProfileRecord:
    """A node to profile: ``facts`` is its templated text (metadata + training history)."""

    kind: Literal["user", "item"]
    id: int
    facts: str


@dataclass
class ItemInfo:
    """An item as the re-ranker sees it: title, full description and citable attributes."""

    title: str
    text: str = ""
    attrs: dict[str, str] = field(default_factory=dict)

    @property
    def description(self) -> str:
        return self.text or self.title


def as_item_info(x: ItemInfo | str) -> ItemInfo:
    """``x`` itself, or a bare title/description string as an :class:`ItemInfo`."""
    return x if isinstance(x, ItemInfo) else ItemInfo(title=str(x), text=str(x))
