"""Canonical dataset directory: write / load round trip and every validation error."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recmind_dist.data import schema
from recmind_dist.data.schema import (
    Dataset,
    interactions_checksum,
    load_dataset,
    validate_interactions,
    write_dataset,
)
from recmind_dist.errors import InputError


def _interactions() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user": [0, 0, 1, 2, 2],
            "item": [0, 1, 1, 2, 0],
            "rating": [5.0, 3.0, 4.0, 1.0, 2.0],
            "timestamp": [10, 20, 30, 40, 50],
        }
    )


def _write(path: Path, **overrides: object) -> Path:
    args: dict[str, object] = {
        "interactions": _interactions(),
        "users": pd.DataFrame({"id": [0, 1, 2], "bio": ["a", "b", "c"]}),
        "items": pd.DataFrame({"id": [0, 1, 2], "title": ["x", "y", "z"], "year": [1, 2, 3]}),
        "user_raw_ids": ["u1", "u2", "u3"],
        "item_raw_ids": ["i1", "i2", "i3"],
        "source": "test",
    }
    args.update(overrides)
    return write_dataset(path, **args)  # type: ignore[arg-type]


@pytest.fixture()
def dataset_dir(tmp_path: Path) -> Path:
    return _write(tmp_path / "ds")


def _expect(exc: pytest.ExceptionInfo[InputError], file: str, field: str | None) -> None:
    assert file in str(exc.value), str(exc.value)
    if field is not None:
        assert exc.value.field == field, str(exc.value)
        assert field in str(exc.value)


# -- round trip ------------------------------------------------------------------------------


def test_round_trip(dataset_dir: Path) -> None:
    ds = load_dataset(dataset_dir)
    assert isinstance(ds, Dataset)
    assert (ds.n_users, ds.n_items, len(ds.interactions)) == (3, 3, 5)
    assert list(ds.user_raw_ids) == ["u1", "u2", "u3"]
    assert ds.interactions["user"].dtype == np.int64
    assert ds.interactions["rating"].dtype == np.float64
    assert ds.meta["text_columns"] == {"users": ["bio"], "items": ["title"]}
    assert ds.meta["source"] == "test"
    assert ds.checksum == interactions_checksum(_interactions())
    assert ds.items is not None and list(ds.items["title"]) == ["x", "y", "z"]


def test_checksum_ignores_row_order_but_not_content() -> None:
    df = _interactions()
    shuffled = df.sample(frac=1.0, random_state=3).reset_index(drop=True)
    assert interactions_checksum(df) == interactions_checksum(shuffled)
    changed = df.copy()
    changed.loc[0, "rating"] = 4.0
    assert interactions_checksum(changed) != interactions_checksum(df)


def test_optional_files_and_columns(tmp_path: Path) -> None:
    inter = _interactions()[["user", "item"]]
    path = _write(tmp_path / "ds", interactions=inter, users=None, items=None)
    ds = load_dataset(path)
    assert ds.users is None and ds.items is None
    assert list(ds.interactions.columns) == ["user", "item"]


# -- validate_interactions -------------------------------------------------------------------


def test_duplicates_keep_latest_and_are_counted(caplog: pytest.LogCaptureFixture) -> None:
    df = pd.DataFrame(
        {"user": [0, 0, 1, 0], "item": [1, 1, 2, 1], "rating": [1.0, 5.0, 3.0, 2.0],
         "timestamp": [5, 9, 1, 7]}
    )
    with caplog.at_level(logging.WARNING):
        clean, dropped = validate_interactions(df, "x.csv")
    assert dropped == 2
    assert "dropped 2 duplicate" in caplog.text
    assert clean.loc[clean["user"] == 0, "rating"].tolist() == [5.0]  # latest timestamp wins


def test_duplicates_without_timestamp_keep_last() -> None:
    df = pd.DataFrame({"user": [0, 0], "item": [1, 1], "rating": [1.0, 4.0]})
    clean, dropped = validate_interactions(df, "x.csv")
    assert dropped == 1 and clean["rating"].tolist() == [4.0]


def test_write_dataset_records_dropped_duplicates(tmp_path: Path) -> None:
    inter = pd.concat([_interactions(), _interactions().iloc[:2]], ignore_index=True)
    ds = load_dataset(_write(tmp_path / "ds", interactions=inter))
    assert len(ds.interactions) == 5 and ds.meta["n_duplicates_dropped"] == 2


@pytest.mark.parametrize(
    ("frame", "field", "words"),
    [
        (pd.DataFrame({"user": [0.5, 1.0], "item": [0, 1]}), "user", "non-integer"),
        (pd.DataFrame({"user": ["a", "b"], "item": [0, 1]}), "user", "integers"),
        (pd.DataFrame({"user": [0, 1], "item": [0, -3]}), "item", "negative"),
        (pd.DataFrame({"user": [0, None], "item": [0, 1]}), "user", "missing"),
        (pd.DataFrame({"user": [0, 1], "item": [0, 1], "rating": [1.0, np.nan]}), "rating", "NaN"),
        (pd.DataFrame({"user": [0], "item": [0], "rating": ["good"]}), "rating", "numeric"),
        (pd.DataFrame({"user": pd.Series([], dtype=int), "item": pd.Series([], dtype=int)}),
         "user", "empty"),
        (pd.DataFrame({"user": [0]}), "item", "missing"),
        (pd.DataFrame({"user": [0], "item": [0], "extra": [1]}), "extra", "unexpected"),
    ],
)
def test_validate_interactions_errors(frame: pd.DataFrame, field: str, words: str) -> None:
    with pytest.raises(InputError) as exc:
        validate_interactions(frame, "ratings.csv")
    _expect(exc, "ratings.csv", field)
    assert words in str(exc.value)


def test_write_rejects_ids_outside_raw_id_range(tmp_path: Path) -> None:
    with pytest.raises(InputError) as exc:
        _write(tmp_path / "ds", item_raw_ids=["i1", "i2"])
    _expect(exc, "interactions.parquet", "item")
    assert not (tmp_path / "ds").exists()


def test_write_rejects_attribute_rows_for_unknown_ids(tmp_path: Path) -> None:
    items = pd.DataFrame({"id": [0, 1, 7], "title": ["x", "y", "z"]})
    with pytest.raises(InputError) as exc:
        _write(tmp_path / "ds", items=items)
    _expect(exc, "items.parquet", "id")


# -- atomic write ----------------------------------------------------------------------------


def test_failed_write_leaves_no_partial_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = {"n": 0}
    real = pq.write_table

    def failing_write(table: pa.Table, where: Path) -> None:
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("disk full")
        real(table, where)

    monkeypatch.setattr(schema.pq, "write_table", failing_write)
    with pytest.raises(OSError, match="disk full"):
        _write(tmp_path / "ds")
    assert list(tmp_path.iterdir()) == []  # neither the target nor a temp dir remains


def test_failed_rewrite_keeps_the_old_directory(
    dataset_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = load_dataset(dataset_dir).checksum

    def failing_write(table: pa.Table, where: Path) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(schema.pq, "write_table", failing_write)
    with pytest.raises(OSError):
        _write(dataset_dir, interactions=_interactions().iloc[:3])
    monkeypatch.undo()
    assert load_dataset(dataset_dir).checksum == before
    assert [p.name for p in dataset_dir.parent.iterdir()] == [dataset_dir.name]


# -- load_dataset errors ---------------------------------------------------------------------


def _overwrite_interactions(path: Path, table: pa.Table) -> None:
    pq.write_table(table, path / "interactions.parquet")


def test_load_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(InputError) as exc:
        load_dataset(tmp_path / "nope")
    _expect(exc, "nope", None)


@pytest.mark.parametrize("name", ["interactions.parquet", "id_map.parquet", "meta.json"])
def test_load_missing_file(dataset_dir: Path, name: str) -> None:
    (dataset_dir / name).unlink()
    with pytest.raises(InputError) as exc:
        load_dataset(dataset_dir)
    _expect(exc, name, None)
    assert "missing" in str(exc.value)


def test_load_missing_column(dataset_dir: Path) -> None:
    _overwrite_interactions(dataset_dir, pa.table({"user": [0, 1]}))
    with pytest.raises(InputError) as exc:
        load_dataset(dataset_dir)
    _expect(exc, "interactions.parquet", "item")


@pytest.mark.parametrize(
    ("table", "field", "words"),
    [
        (pa.table({"user": [0.0, 1.5], "item": [0, 1]}), "user", "integer"),
        (pa.table({"user": ["a", "b"], "item": [0, 1]}), "user", "integer"),
        (pa.table({"user": [0, 1], "item": [0, -1]}), "item", "negative"),
        (pa.table({"user": pa.array([0, None], pa.int64()), "item": [0, 1]}), "user", "missing"),
        (pa.table({"user": [0, 1], "item": [0, 1], "rating": [1.0, float("nan")]}),
         "rating", "NaN"),
        (pa.table({"user": [0, 9], "item": [0, 1]}), "user", "outside"),
        (pa.table({"user": pa.array([], pa.int64()), "item": pa.array([], pa.int64())}),
         "user", "empty"),
    ],
)
def test_load_bad_interactions(dataset_dir: Path, table: pa.Table, field: str, words: str) -> None:
    _overwrite_interactions(dataset_dir, table)
    with pytest.raises(InputError) as exc:
        load_dataset(dataset_dir)
    _expect(exc, "interactions.parquet", field)
    assert words in str(exc.value)


def test_load_text_rows_for_unknown_ids(dataset_dir: Path) -> None:
    pq.write_table(pa.table({"id": [0, 5], "title": ["a", "b"]}), dataset_dir / "items.parquet")
    with pytest.raises(InputError) as exc:
        load_dataset(dataset_dir)
    _expect(exc, "items.parquet", "id")
    assert "not in id_map" in str(exc.value)


@pytest.mark.parametrize("name", ["interactions.parquet", "users.parquet", "id_map.parquet"])
def test_load_corrupt_parquet(dataset_dir: Path, name: str) -> None:
    (dataset_dir / name).write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(InputError) as exc:
        load_dataset(dataset_dir)
    _expect(exc, name, None)
    assert "corrupt" in str(exc.value)


def test_load_corrupt_meta(dataset_dir: Path) -> None:
    (dataset_dir / "meta.json").write_text("{not json")
    with pytest.raises(InputError) as exc:
        load_dataset(dataset_dir)
    _expect(exc, "meta.json", None)


def test_load_checksum_mismatch(dataset_dir: Path) -> None:
    _overwrite_interactions(
        dataset_dir,
        pa.table({"user": [0, 0, 1, 2, 2], "item": [0, 1, 1, 2, 0],
                  "rating": [5.0, 3.0, 4.0, 1.0, 1.0], "timestamp": [10, 20, 30, 40, 50]}),
    )
    with pytest.raises(InputError) as exc:
        load_dataset(dataset_dir)
    _expect(exc, "meta.json", "checksum")
    assert load_dataset(dataset_dir, verify_checksum=False).n_users == 3


def test_load_id_map_gap(dataset_dir: Path) -> None:
    table = pa.table({"kind": ["user", "user", "item"], "id": [0, 2, 0], "raw_id": ["a", "b", "c"]})
    pq.write_table(table, dataset_dir / "id_map.parquet")
    with pytest.raises(InputError) as exc:
        load_dataset(dataset_dir)
    _expect(exc, "id_map.parquet", "id")
