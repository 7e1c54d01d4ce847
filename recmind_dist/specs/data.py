"""Where interactions come from (:class:`DataSpec`) and how they are split (:class:`SplitSpec`)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from recmind_dist.hashing import stable_hash
from recmind_dist.specs.base import Spec


class SyntheticSpec(Spec):
    """Generated data with latent topics (see :mod:`recmind_dist.data.synthetic`)."""

    n_users: int = Field(2000, gt=0)
    n_items: int = Field(3000, gt=0)
    n_interactions: int = Field(60000, gt=0)
    n_topics: int = Field(16, gt=0)
    seed: int = 0


class TableSpec(Spec):
    """A generic CSV/Parquet interaction log with a column mapping."""

    path: Path
    user: str = "user_id"
    item: str = "item_id"
    rating: str | None = None
    timestamp: str | None = None
    items_path: Path | None = None
    item_id_col: str = "item_id"
    users_path: Path | None = None
    user_id_col: str = "user_id"


class DataSpec(Spec):
    """Where the interactions come from: a known name, a canonical dir, a table or synthetic."""

    source: str | None = Field("ml-100k", description="known dataset name to fetch and cache")
    path: Path | None = Field(None, description="an existing canonical dataset directory")
    table: TableSpec | None = None
    synthetic: SyntheticSpec | None = None
    cache_dir: Path = Path("data")


Protocol = Literal["random", "temporal", "leave_one_out", "cold_item"]


class SplitSpec(Spec):
    """How interactions become implicit train/valid/test edges."""

    threshold: float | None = Field(
        4.0, description="keep interactions with rating >= threshold (None keeps all)"
    )
    kcore: int = Field(0, ge=0, description="iteratively drop users/items with < k interactions")
    protocol: Protocol = "random"
    ratios: tuple[float, float, float] = (0.8, 0.1, 0.1)
    cold_fraction: float = Field(0.1, gt=0, lt=1, description="share of items held out (cold_item)")
    seed: int | None = Field(None, description="split seed; None uses the run seed")

    @model_validator(mode="after")
    def _ratios_sum_to_one(self) -> SplitSpec:
        if any(r < 0 for r in self.ratios) or abs(sum(self.ratios) - 1.0) > 1e-6:
            raise ValueError(f"split.ratios must be non-negative and sum to 1, got {self.ratios}")
        return self

    def key(self, dataset_checksum: str, seed: int) -> str:
        return stable_hash(
            {"ds": dataset_checksum, "spec": self.model_dump(exclude={"seed"}), "seed": seed}
        )


