"""Implicit conversion, k-core filtering and deterministic train/valid/test splits.

A split is a pure function of (dataset checksum, :class:`SplitSpec`): the same spec and seed
give byte-identical split files. Protocols:

* ``random``  -- per user, shuffle the user's interactions with the seed and cut them by
  ``ratios`` (default 0.8/0.1/0.1); users with too few interactions keep them in train.
* ``temporal`` -- per user, sort by timestamp and cut by ``ratios`` (oldest -> train).
* ``leave_one_out`` -- per user, the latest (or a random one without timestamps) -> test,
  the one before -> valid, the rest -> train.
* ``cold_item`` -- a ``cold_fraction`` of items (chosen with the seed) has all of its
  interactions moved to valid/test (halves); the rest is split per user at random. Cold items
  have no training edge, so a graph model has no signal for them.

Users and items that survive filtering are re-indexed contiguously; ``user_ids[local]`` and
``item_ids[local]`` give the canonical dataset ids.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from recmind_dist.errors import InputError
from recmind_dist.io import atomic_dir
from recmind_dist.specs.data import SplitSpec

log = logging.getLogger(__name__)

@dataclass
class SplitData:
    """Train/valid/test edges in local contiguous ids, plus the maps back to dataset ids."""

    n_users: int
    n_items: int
    train: np.ndarray  # (N, 2) int64 local (user, item)
    valid: np.ndarray
    test: np.ndarray
    user_ids: np.ndarray  # local user -> canonical dataset id
    item_ids: np.ndarray  # local item -> canonical dataset id
    key: str
    seed: int
    cold_items: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    dataset_checksum: str = ""

    @property
    def item_degree(self) -> np.ndarray:
        """Training degree of every local item."""
        return np.bincount(self.train[:, 1], minlength=self.n_items)

    @property
    def user_degree(self) -> np.ndarray:
        return np.bincount(self.train[:, 0], minlength=self.n_users)

    def summary(self) -> dict[str, int]:
        return {
            "n_users": self.n_users,
            "n_items": self.n_items,
            "n_train": len(self.train),
            "n_valid": len(self.valid),
            "n_test": len(self.test),
            "n_cold_items": len(self.cold_items),
        }


def implicit_edges(interactions: pd.DataFrame, threshold: float | None) -> pd.DataFrame:
    """Keep rating >= threshold (when ratings exist), drop duplicate (user, item) pairs."""
    df = interactions
    if threshold is not None and "rating" in df.columns:
        df = df[df["rating"] >= threshold]
    sort_cols = ["user", "item"] + (["timestamp"] if "timestamp" in df.columns else [])
    df = df.sort_values(sort_cols, kind="stable")
    df = df.drop_duplicates(["user", "item"], keep="last")
    return df.reset_index(drop=True)


def kcore_filter(df: pd.DataFrame, k: int) -> pd.DataFrame:
    """Iteratively drop users and items with fewer than ``k`` interactions."""
    if k <= 1:
        return df
    while True:
        ucount = df.groupby("user")["item"].transform("size")
        icount = df.groupby("item")["user"].transform("size")
        keep = (ucount >= k) & (icount >= k)
        if keep.all():
            return df.reset_index(drop=True)
        df = df[keep]


def _per_user_cut(
    users: np.ndarray, order_key: np.ndarray, ratios: tuple[float, float, float]
) -> np.ndarray:
    """Assign 0/1/2 (train/valid/test) per row: rank rows within each user by ``order_key``.

    For a user with n rows: n_valid = floor(n * r_valid), n_test = floor(n * r_test), computed
    so that train keeps at least one row; the last-ranked rows go to test, the ones before to
    valid.
    """
    order = np.lexsort((order_key, users))
    u_sorted = users[order]
    starts = np.r_[0, np.flatnonzero(np.diff(u_sorted)) + 1]
    counts = np.diff(np.r_[starts, len(u_sorted)])
    rank = np.arange(len(u_sorted)) - np.repeat(starts, counts)
    n = np.repeat(counts, counts)
    n_test = np.floor(n * ratios[2] + 1e-9).astype(np.int64)
    n_valid = np.floor(n * ratios[1] + 1e-9).astype(np.int64)
    over = np.maximum(n_test + n_valid - (n - 1), 0)  # keep one training row
    n_valid = np.maximum(n_valid - over, 0)
    n_test = np.minimum(n_test, n - 1 - n_valid)
    part = np.zeros(len(u_sorted), dtype=np.int8)
    part[rank >= n - n_test - n_valid] = 1
    part[rank >= n - n_test] = 2
    out = np.empty_like(part)
    out[order] = part
    return out


def _leave_one_out(users: np.ndarray, order_key: np.ndarray) -> np.ndarray:
    order = np.lexsort((order_key, users))
    u_sorted = users[order]
    ends = np.r_[np.flatnonzero(np.diff(u_sorted)), len(u_sorted) - 1]
    starts = np.r_[0, ends[:-1] + 1]
    counts = ends - starts + 1
    part = np.zeros(len(u_sorted), dtype=np.int8)
    part[ends[counts >= 2]] = 2
    part[ends[counts >= 3] - 1] = 1
    out = np.empty_like(part)
    out[order] = part
    return out


def assign_parts(df: pd.DataFrame, spec: SplitSpec, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Return (part per row in {0,1,2}, cold item canonical ids)."""
    rng = np.random.default_rng(seed)
    users = df["user"].to_numpy()
    shuffle_key = rng.permutation(len(df))
    has_time = "timestamp" in df.columns
    cold = np.zeros(0, dtype=np.int64)
    if spec.protocol == "random":
        part = _per_user_cut(users, shuffle_key, spec.ratios)
    elif spec.protocol == "temporal":
        if not has_time:
            raise InputError("interactions.parquet", "timestamp", "temporal split needs timestamps")
        # stable tie-break by the shuffled key keeps it deterministic
        t = df["timestamp"].to_numpy()
        key = np.lexsort((shuffle_key, t)).argsort()
        part = _per_user_cut(users, key, spec.ratios)
    elif spec.protocol == "leave_one_out":
        key = (
            np.lexsort((shuffle_key, df["timestamp"].to_numpy())).argsort()
            if has_time
            else shuffle_key
        )
        part = _leave_one_out(users, key)
    else:  # cold_item
        items = np.unique(df["item"].to_numpy())
        n_cold = max(1, round(len(items) * spec.cold_fraction))
        cold = np.sort(rng.choice(items, size=n_cold, replace=False))
        is_cold = np.isin(df["item"].to_numpy(), cold)
        warm_ratios = spec.ratios
        part = _per_user_cut(users, shuffle_key, warm_ratios)
        # cold interactions go to valid/test, alternating by a seeded coin
        coin = rng.integers(1, 3, size=len(df)).astype(np.int8)
        part = np.where(is_cold, coin, part)
    return part, cold


def make_split(dataset, spec: SplitSpec, seed: int) -> SplitData:
    """Build the split for ``dataset`` (a :class:`recmind_dist.data.schema.Dataset`)."""
    split_seed = spec.seed if spec.seed is not None else seed
    df = implicit_edges(dataset.interactions, spec.threshold)
    df = kcore_filter(df, spec.kcore)
    if df.empty:
        raise InputError(
            Path(dataset.path) / "interactions.parquet",
            "rating",
            f"no interactions left after filtering (threshold={spec.threshold}, kcore={spec.kcore})",
        )
    part, cold = assign_parts(df, spec, split_seed)
    user_ids = np.unique(df["user"].to_numpy())
    item_ids = np.unique(df["item"].to_numpy())
    lu = np.searchsorted(user_ids, df["user"].to_numpy())
    li = np.searchsorted(item_ids, df["item"].to_numpy())
    pairs = np.stack([lu, li], axis=1).astype(np.int64)
    checksum = str(dataset.checksum)
    data = SplitData(
        n_users=len(user_ids),
        n_items=len(item_ids),
        train=pairs[part == 0],
        valid=pairs[part == 1],
        test=pairs[part == 2],
        user_ids=user_ids.astype(np.int64),
        item_ids=item_ids.astype(np.int64),
        key=spec.key(checksum, split_seed),
        seed=split_seed,
        cold_items=np.searchsorted(item_ids, cold).astype(np.int64),
        dataset_checksum=checksum,
    )
    log.info("split %s: %s", data.key, data.summary())
    return data


def write_split(data: SplitData, dataset_dir: str | Path) -> Path:
    """Write the split as plain Parquet with canonical ids under ``splits/<key>/``."""
    out = Path(dataset_dir) / "splits" / data.key
    if (out / "test.parquet").exists():
        return out
    with atomic_dir(out) as tmp:
        for name in ("train", "valid", "test"):
            pairs = getattr(data, name)
            pd.DataFrame(
                {"user": data.user_ids[pairs[:, 0]], "item": data.item_ids[pairs[:, 1]]}
            ).to_parquet(tmp / f"{name}.parquet", index=False)
        pd.DataFrame({"item": data.item_ids[data.cold_items]}).to_parquet(
            tmp / "cold_items.parquet", index=False
        )
        (tmp / "split.json").write_text(
            json.dumps({"key": data.key, "seed": data.seed, **data.summary()}, indent=2)
        )
    return out
