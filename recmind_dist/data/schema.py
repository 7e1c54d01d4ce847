"""The canonical dataset directory: validation, writing and loading.

Layout (see ``docs/architecture.md``)::

    <dataset>/
      interactions.parquet   user int64, item int64, [rating float64], [timestamp int64]
      users.parquet          id int64 + attribute columns            (optional)
      items.parquet          id int64 + attribute columns            (optional)
      id_map.parquet         kind ("user"/"item"), id int64, raw_id string
      meta.json              source, counts, checksum, text_columns, importer details

Every problem found while reading raises :class:`~recmind_dist.errors.InputError` naming the
file and the column. Writers go through :func:`recmind_dist.io.atomic_dir`, so a directory is
either complete or absent.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from recmind_dist.errors import InputError
from recmind_dist.io import atomic_dir

logger = logging.getLogger(__name__)

INTERACTIONS_FILE = "interactions.parquet"
USERS_FILE = "users.parquet"
ITEMS_FILE = "items.parquet"
ID_MAP_FILE = "id_map.parquet"
META_FILE = "meta.json"

ID_COLUMNS: tuple[str, str] = ("user", "item")
OPTIONAL_COLUMNS: tuple[str, str] = ("rating", "timestamp")
INTERACTION_COLUMNS: tuple[str, ...] = ID_COLUMNS + OPTIONAL_COLUMNS
FORMAT_VERSION = 1
CHECKSUM_ALGORITHM = "sha256/sorted-columns/v1"
_RESERVED_META_KEYS = frozenset(
    {
        "format_version",
        "source",
        "n_users",
        "n_items",
        "n_interactions",
        "checksum",
        "checksum_algorithm",
        "text_columns",
        "columns",
        "n_duplicates_dropped",
    }
)


@dataclass
class Dataset:
    """A loaded canonical dataset directory.

    ``user_raw_ids[i]`` is the raw (source) id of integer user ``i``; likewise for items.
    """

    path: Path
    interactions: pd.DataFrame
    users: pd.DataFrame | None
    items: pd.DataFrame | None
    user_raw_ids: np.ndarray
    item_raw_ids: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n_users(self) -> int:
        """Number of users (the id range is ``[0, n_users)``)."""
        return len(self.user_raw_ids)

    @property
    def n_items(self) -> int:
        """Number of items (the id range is ``[0, n_items)``)."""
        return len(self.item_raw_ids)

    @property
    def checksum(self) -> str:
        """sha256 of the interactions content (see :func:`interactions_checksum`)."""
        stored = self.meta.get("checksum")
        return str(stored) if stored else interactions_checksum(self.interactions)


# --------------------------------------------------------------------------------------------
# checksum


def has_duplicates(values: np.ndarray, is_sorted: bool = False) -> bool:
    """Whether a 1-d array repeats a value (sort based: faster than hashing for int64)."""
    ordered = values if is_sorted else np.sort(values)
    return bool(np.any(ordered[1:] == ordered[:-1]))


def _sort_order(df: pd.DataFrame) -> np.ndarray | None:
    """Row order sorting by (user, item[, rating, timestamp]); None when already sorted."""
    user = df["user"].to_numpy(dtype=np.int64)
    item = df["item"].to_numpy(dtype=np.int64)
    if len(user) == 0:
        return None
    span = int(item.max()) + 1 if len(item) else 1
    if int(user.max()) < np.iinfo(np.int64).max // max(span, 1):
        key = user * span + item
        if np.all(key[1:] > key[:-1]):
            return None  # strictly increasing: already sorted and no duplicate pairs
        order = np.argsort(key, kind="stable")
        if not has_duplicates(key[order], is_sorted=True):
            return order
    keys = [df[c].to_numpy() for c in reversed(INTERACTION_COLUMNS) if c in df.columns]
    return np.lexsort(keys)


def interactions_checksum(df: pd.DataFrame) -> str:
    """Deterministic sha256 of the interactions *content* (not of the Parquet file bytes).

    Rows are sorted by (user, item) (then rating, timestamp to break ties); each present
    column of ``user, item, rating, timestamp`` is hashed as little-endian int64/float64
    bytes, prefixed by its name. Row order in the file and Parquet encoding do not matter.
    """
    order = _sort_order(df)
    digest = hashlib.sha256(CHECKSUM_ALGORITHM.encode())
    for col in INTERACTION_COLUMNS:
        if col not in df.columns:
            continue
        dtype = np.dtype("<f8") if col == "rating" else np.dtype("<i8")
        arr = df[col].to_numpy(dtype=dtype)
        if order is not None:
            arr = arr[order]
        digest.update(f"{col}:{dtype.str}:{len(arr)}\0".encode())
        digest.update(np.ascontiguousarray(arr).tobytes())
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------
# validation


def _example(values: pd.Series) -> str:
    return repr(values.iloc[0]) if len(values) else "?"


def _as_int_column(series: pd.Series, source: str, column: str) -> np.ndarray:
    """Return ``series`` as int64, or raise InputError for missing / non-integer values."""
    missing = series.isna()
    if missing.any():
        raise InputError(source, column, f"{int(missing.sum())} missing (NaN/null) values")
    if pd.api.types.is_bool_dtype(series):
        raise InputError(source, column, "must hold integers, found booleans")
    if pd.api.types.is_integer_dtype(series):
        return series.to_numpy(dtype=np.int64)
    if pd.api.types.is_float_dtype(series):
        values = series.to_numpy(dtype=np.float64)
        bad = ~np.isfinite(values) | (values != np.round(values))
        if bad.any():
            raise InputError(source, column, f"non-integer values, e.g. {_example(series[bad])}")
        return values.astype(np.int64)
    raise InputError(
        source, column, f"must hold integers, got dtype {series.dtype} (e.g. {_example(series)})"
    )


def _check_non_negative(values: np.ndarray, source: str, column: str) -> None:
    negative = values < 0
    if negative.any():
        raise InputError(
            source,
            column,
            f"{int(negative.sum())} negative ids, e.g. {int(values[negative][0])}",
        )


def _as_rating_column(series: pd.Series, source: str) -> np.ndarray:
    if not (pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)):
        raise InputError(
            source, "rating", f"must be numeric, got dtype {series.dtype} (e.g. {_example(series)})"
        )
    values = series.to_numpy(dtype=np.float64, na_value=np.nan)
    bad = ~np.isfinite(values)
    if bad.any():
        raise InputError(source, "rating", f"{int(bad.sum())} NaN/infinite ratings")
    return values


def _drop_duplicate_pairs(df: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Keep one row per (user, item): the latest by timestamp if present, else the last."""
    user = df["user"].to_numpy()
    item = df["item"].to_numpy()
    span = int(item.max()) + 1
    if int(user.max()) < np.iinfo(np.int64).max // span:
        key = user * span + item
    else:  # id range too large for a packed int64 key: let pandas hash the pairs
        key = pd.MultiIndex.from_arrays([user, item]).factorize()[0]
    if not has_duplicates(key):
        return df, 0
    n = len(df)
    order = np.arange(n)
    if "timestamp" in df.columns:
        order = np.argsort(df["timestamp"].to_numpy(), kind="stable")
    reversed_order = order[::-1]
    _, first_in_reversed = np.unique(key[reversed_order], return_index=True)
    keep = np.sort(reversed_order[first_in_reversed])
    return df.iloc[keep].reset_index(drop=True), n - len(keep)


def validate_interactions(df: pd.DataFrame, source: str | Path) -> tuple[pd.DataFrame, int]:
    """Validate and normalise an interactions table with integer ids.

    Checks: required columns ``user``/``item``; no unexpected columns; ids are non-missing,
    non-negative integers; ratings (if present) finite numbers; timestamps (if present)
    integers. Exact duplicate (user, item) pairs are de-duplicated, keeping the latest by
    timestamp when present (ties and no timestamp: the last row).

    Returns the normalised frame (int64 / float64 columns, canonical order) and the number of
    duplicate rows dropped (also logged). Raises :class:`InputError` naming ``source``.
    """
    source = str(source)
    for col in ID_COLUMNS:
        if col not in df.columns:
            raise InputError(source, col, "required column is missing")
    unexpected = [c for c in df.columns if c not in INTERACTION_COLUMNS]
    if unexpected:
        raise InputError(
            source, str(unexpected[0]), f"unexpected column; allowed: {list(INTERACTION_COLUMNS)}"
        )
    if len(df) == 0:
        raise InputError(source, "user", "no interactions (empty table)")
    out: dict[str, np.ndarray] = {}
    for col in ID_COLUMNS:
        out[col] = _as_int_column(df[col], source, col)
        _check_non_negative(out[col], source, col)
    if "rating" in df.columns:
        out["rating"] = _as_rating_column(df["rating"], source)
    if "timestamp" in df.columns:
        out["timestamp"] = _as_int_column(df["timestamp"], source, "timestamp")
    clean, dropped = _drop_duplicate_pairs(pd.DataFrame(out, copy=False))
    if dropped:
        logger.warning("%s: dropped %d duplicate (user, item) rows", source, dropped)
    return clean, dropped


def _validate_raw_ids(raw_ids: np.ndarray, source: str, kind: str) -> np.ndarray:
    raw = np.asarray(raw_ids, dtype=object)
    series = pd.Series(raw, dtype=object)
    if series.isna().any():
        raise InputError(source, f"{kind} raw_id", "missing raw ids")
    as_str = series.astype(str)
    if as_str.duplicated().any():
        dup = as_str[as_str.duplicated()].iloc[0]
        raise InputError(source, f"{kind} raw_id", f"duplicate raw id {dup!r}")
    return as_str.to_numpy(dtype=object)


def _validate_attribute_table(table: pd.DataFrame, n: int, source: str, kind: str) -> pd.DataFrame:
    """Check an users/items table: int ``id`` column, unique, within ``[0, n)``."""
    if "id" not in table.columns:
        raise InputError(source, "id", "required column is missing")
    ids = _as_int_column(table["id"], source, "id")
    _check_non_negative(ids, source, "id")
    unknown = ids >= n
    if unknown.any():
        raise InputError(
            source,
            "id",
            f"{int(unknown.sum())} rows for {kind} ids not in id_map (n_{kind}s={n}), "
            f"e.g. {int(ids[unknown][0])}",
        )
    dup = pd.Series(ids).duplicated()
    if dup.any():
        raise InputError(source, "id", f"duplicate {kind} id {int(ids[dup.to_numpy()][0])}")
    out = table.copy()
    out["id"] = ids
    return out.reset_index(drop=True)


def _check_ids_in_range(df: pd.DataFrame, n_users: int, n_items: int, source: str) -> None:
    for col, n in (("user", n_users), ("item", n_items)):
        values = df[col].to_numpy()
        bad = values >= n
        if bad.any():
            raise InputError(
                source,
                col,
                f"{int(bad.sum())} ids outside [0, {n}) given by id_map, e.g. {int(values[bad][0])}",
            )


def text_columns(table: pd.DataFrame | None) -> list[str]:
    """Names of the string-valued attribute columns of a users/items table."""
    if table is None:
        return []
    return [
        str(c)
        for c in table.columns
        if c != "id"
        and (pd.api.types.is_string_dtype(table[c]) or pd.api.types.is_object_dtype(table[c]))
    ]


# --------------------------------------------------------------------------------------------
# writing


def _id_map_table(user_raw_ids: np.ndarray, item_raw_ids: np.ndarray) -> pa.Table:
    n_u, n_i = len(user_raw_ids), len(item_raw_ids)
    kinds = pa.DictionaryArray.from_arrays(
        pa.array(np.concatenate([np.zeros(n_u, np.int8), np.ones(n_i, np.int8)])),
        pa.array(["user", "item"]),
    ).cast(pa.string())
    ids = np.concatenate([np.arange(n_u, dtype=np.int64), np.arange(n_i, dtype=np.int64)])
    raw = pa.array(np.concatenate([user_raw_ids, item_raw_ids]), type=pa.string())
    return pa.table({"kind": kinds, "id": pa.array(ids), "raw_id": raw})


def _interactions_table(df: pd.DataFrame) -> pa.Table:
    return pa.table({c: pa.array(df[c].to_numpy()) for c in df.columns})


def _build_meta(
    source: str,
    interactions: pd.DataFrame,
    users: pd.DataFrame | None,
    items: pd.DataFrame | None,
    n_users: int,
    n_items: int,
    dropped: int,
    extra_meta: dict[str, Any] | None,
) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "source": source,
        "n_users": n_users,
        "n_items": n_items,
        "n_interactions": len(interactions),
        "checksum": interactions_checksum(interactions),
        "checksum_algorithm": CHECKSUM_ALGORITHM,
        "columns": {
            "interactions": [str(c) for c in interactions.columns],
            "users": [str(c) for c in users.columns] if users is not None else None,
            "items": [str(c) for c in items.columns] if items is not None else None,
        },
        "text_columns": {"users": text_columns(users), "items": text_columns(items)},
        "n_duplicates_dropped": int(dropped),
    }
    for key, value in (extra_meta or {}).items():
        if key in _RESERVED_META_KEYS:
            raise ValueError(f"extra_meta key {key!r} is reserved")
        meta[key] = value
    return meta


def write_dataset(
    out_dir: str | Path,
    interactions: pd.DataFrame,
    users: pd.DataFrame | None,
    items: pd.DataFrame | None,
    user_raw_ids: np.ndarray | list[str],
    item_raw_ids: np.ndarray | list[str],
    source: str,
    extra_meta: dict[str, Any] | None = None,
) -> Path:
    """Validate and write a canonical dataset directory atomically; return its path.

    ``interactions`` holds integer ids in ``[0, len(*_raw_ids))``; duplicate (user, item)
    pairs are dropped (see :func:`validate_interactions`). ``extra_meta`` is merged into
    ``meta.json`` (reserved keys such as ``checksum`` may not be overridden). An existing
    directory at ``out_dir`` is replaced only once the new one is complete.
    """
    out_dir = Path(out_dir)
    where = f"{out_dir / INTERACTIONS_FILE} (being written)"
    clean, dropped = validate_interactions(interactions, where)
    user_raw = _validate_raw_ids(np.asarray(user_raw_ids, dtype=object), where, "user")
    item_raw = _validate_raw_ids(np.asarray(item_raw_ids, dtype=object), where, "item")
    _check_ids_in_range(clean, len(user_raw), len(item_raw), where)
    if users is not None:
        users = _validate_attribute_table(users, len(user_raw), str(out_dir / USERS_FILE), "user")
    if items is not None:
        items = _validate_attribute_table(items, len(item_raw), str(out_dir / ITEMS_FILE), "item")
    meta = _build_meta(
        source, clean, users, items, len(user_raw), len(item_raw), dropped, extra_meta
    )
    with atomic_dir(out_dir) as tmp:
        pq.write_table(_interactions_table(clean), tmp / INTERACTIONS_FILE)
        pq.write_table(_id_map_table(user_raw, item_raw), tmp / ID_MAP_FILE)
        if users is not None:
            pq.write_table(pa.Table.from_pandas(users, preserve_index=False), tmp / USERS_FILE)
        if items is not None:
            pq.write_table(pa.Table.from_pandas(items, preserve_index=False), tmp / ITEMS_FILE)
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True, default=str) + "\n")
    logger.info(
        "wrote %s: %d users, %d items, %d interactions",
        out_dir,
        meta["n_users"],
        meta["n_items"],
        meta["n_interactions"],
    )
    return out_dir


# --------------------------------------------------------------------------------------------
# loading


def _read_parquet(path: Path) -> pa.Table:
    if not path.is_file():
        raise InputError(path, None, "required file is missing")
    try:
        return pq.read_table(path)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise InputError(path, None, f"unreadable or corrupt Parquet file ({exc})") from exc


def _require_columns(table: pa.Table, path: Path, columns: tuple[str, ...]) -> None:
    for col in columns:
        if col not in table.column_names:
            raise InputError(path, col, "required column is missing")


def _arrow_int_column(table: pa.Table, path: Path, col: str) -> np.ndarray:
    column = table.column(col)
    if column.null_count:
        raise InputError(path, col, f"{column.null_count} missing (null/NaN) values")
    if not pa.types.is_integer(column.type):
        raise InputError(path, col, f"must be an integer column, got {column.type}")
    values = column.to_numpy().astype(np.int64, copy=False)
    _check_non_negative(values, str(path), col)
    return values


def _arrow_rating_column(table: pa.Table, path: Path) -> np.ndarray:
    column = table.column("rating")
    if not (pa.types.is_floating(column.type) or pa.types.is_integer(column.type)):
        raise InputError(path, "rating", f"must be a float column, got {column.type}")
    values = column.to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
    bad = ~np.isfinite(values)
    if column.null_count or bad.any():
        raise InputError(path, "rating", f"{int(max(bad.sum(), column.null_count))} NaN ratings")
    return values


def _read_interactions(path: Path) -> pd.DataFrame:
    table = _read_parquet(path)
    _require_columns(table, path, ID_COLUMNS)
    if table.num_rows == 0:
        raise InputError(path, "user", "no interactions (empty table)")
    data: dict[str, np.ndarray] = {c: _arrow_int_column(table, path, c) for c in ID_COLUMNS}
    if "rating" in table.column_names:
        data["rating"] = _arrow_rating_column(table, path)
    if "timestamp" in table.column_names:
        data["timestamp"] = _arrow_int_column(table, path, "timestamp")
    clean, dropped = validate_interactions(pd.DataFrame(data, copy=False), path)
    if dropped:
        logger.warning("%s: %d duplicate (user, item) rows ignored on load", path, dropped)
    return clean


def _read_id_map(path: Path) -> tuple[np.ndarray, np.ndarray]:
    table = _read_parquet(path)
    _require_columns(table, path, ("kind", "id", "raw_id"))
    if table.column("raw_id").null_count:
        raise InputError(path, "raw_id", "missing raw ids")
    ids = _arrow_int_column(table, path, "id")
    kinds = np.asarray(table.column("kind").to_pylist(), dtype=object)
    raw = np.asarray(table.column("raw_id").cast(pa.string()).to_pylist(), dtype=object)
    unknown = ~np.isin(kinds, ["user", "item"])
    if unknown.any():
        raise InputError(path, "kind", f"must be 'user' or 'item', found {kinds[unknown][0]!r}")
    out = []
    for kind in ("user", "item"):
        mask = kinds == kind
        order = np.argsort(ids[mask], kind="stable")
        kind_ids = ids[mask][order]
        if not np.array_equal(kind_ids, np.arange(len(kind_ids))):
            raise InputError(path, "id", f"{kind} ids must be contiguous 0..n-1 without gaps")
        out.append(raw[mask][order])
    return out[0], out[1]


def _read_attribute_table(path: Path, n: int, kind: str) -> pd.DataFrame | None:
    if not path.exists():
        return None
    table = _read_parquet(path)
    _require_columns(table, path, ("id",))
    _arrow_int_column(table, path, "id")
    return _validate_attribute_table(table.to_pandas(), n, str(path), kind)


def _read_meta(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise InputError(path, None, "required file is missing")
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(path, None, f"unreadable JSON ({exc})") from exc
    if not isinstance(meta, dict):
        raise InputError(path, None, "must hold a JSON object")
    for key in ("source", "n_users", "n_items", "n_interactions", "checksum"):
        if key not in meta:
            raise InputError(path, key, "required field is missing")
    return meta


def _check_meta(meta: dict[str, Any], path: Path, dataset: Dataset, verify_checksum: bool) -> None:
    actual = {
        "n_users": dataset.n_users,
        "n_items": dataset.n_items,
        "n_interactions": len(dataset.interactions),
    }
    for key, value in actual.items():
        if meta.get(key) != value:
            raise InputError(path, key, f"says {meta.get(key)!r} but the files hold {value}")
    if verify_checksum:
        checksum = interactions_checksum(dataset.interactions)
        if checksum != meta["checksum"]:
            raise InputError(
                path,
                "checksum",
                f"does not match the content of {INTERACTIONS_FILE} (modified or corrupt?)",
            )


def load_dataset(path: str | Path, verify_checksum: bool = True) -> Dataset:
    """Read and validate a canonical dataset directory.

    Raises :class:`InputError` (file, column, message) for a missing directory or file, an
    unreadable/corrupt Parquet file, missing columns, wrong dtypes, missing/negative/out-of-range
    ids, NaN ratings, attribute rows for ids absent from ``id_map``, empty interactions, counts
    that disagree with ``meta.json`` and (with ``verify_checksum``) a checksum mismatch.
    """
    path = Path(path)
    if not path.is_dir():
        raise InputError(path, None, "dataset directory does not exist")
    meta = _read_meta(path / META_FILE)
    user_raw, item_raw = _read_id_map(path / ID_MAP_FILE)
    interactions = _read_interactions(path / INTERACTIONS_FILE)
    _check_ids_in_range(interactions, len(user_raw), len(item_raw), str(path / INTERACTIONS_FILE))
    dataset = Dataset(
        path=path,
        interactions=interactions,
        users=_read_attribute_table(path / USERS_FILE, len(user_raw), "user"),
        items=_read_attribute_table(path / ITEMS_FILE, len(item_raw), "item"),
        user_raw_ids=user_raw,
        item_raw_ids=item_raw,
        meta=meta,
    )
    _check_meta(meta, path / META_FILE, dataset, verify_checksum)
    return dataset


# --------------------------------------------------------------------------------------------
# raw id encoding (shared by importers)


def _sorted_unique_raw(values: np.ndarray) -> np.ndarray:
    """Unique raw ids, numeric order if all parse as integers, else lexicographic."""
    uniq = pd.unique(pd.Series(values, dtype=object).astype(str))
    uniq_arr = np.asarray(uniq, dtype=object)
    numeric = pd.to_numeric(pd.Series(uniq_arr), errors="coerce")
    if not numeric.isna().any() and (numeric == np.floor(numeric)).all():
        order = np.lexsort((uniq_arr.astype(str), numeric.to_numpy(dtype=np.float64)))
    else:
        order = np.argsort(uniq_arr.astype(str), kind="stable")
    return uniq_arr[order]


def encode_ids(raw: pd.Series | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Map raw ids to contiguous int64 ids.

    Rule (deterministic, independent of row order): the raw ids are compared as strings;
    when *all* of them parse as integers they are ordered numerically (ties such as "01"/"1"
    broken by the string), otherwise lexicographically. Id ``k`` is the k-th raw id in that
    order. Returns ``(codes, raw_ids)`` with ``raw_ids[codes] == raw``.
    """
    as_str = pd.Series(np.asarray(raw, dtype=object)).astype(str)
    raw_ids = _sorted_unique_raw(as_str.to_numpy(dtype=object))
    codes = pd.Index(raw_ids).get_indexer(as_str)
    return codes.astype(np.int64), raw_ids
