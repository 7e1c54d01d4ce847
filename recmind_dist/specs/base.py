"""The base class of every spec: pydantic, unknown keys are errors."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Spec(BaseModel):
    """A validated settings section. ``extra="forbid"``: a typo is an error naming the key."""

    model_config = ConfigDict(extra="forbid")
