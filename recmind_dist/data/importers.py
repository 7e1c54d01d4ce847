"""Importers: public / user data files -> the canonical dataset directory.

* :func:`import_recbole_atomic` - RecBole atomic files (``{name}.inter/.item/.user``).
* :func:`import_movielens_raw` - GroupLens ml-100k (``u.data``...) or ml-1m (``ratings.dat``...).
* :func:`import_table` - any CSV / Parquet table with a column mapping.

(Known public datasets by name: :func:`recmind_dist.data.fetch.fetch_dataset`.)

Integer ids follow :func:`recmind_dist.data.schema.encode_ids`: raw ids are strings, ordered
numerically when all of them are integers, else lexicographically; id ``k`` is the k-th raw id.
Only users / items that occur in the interactions get ids; attribute rows for other ids are
dropped (the count is logged and recorded in ``meta.json``).
"""

from __future__ import annotations

import csv
import io
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from recmind_dist.data.schema import encode_ids, validate_interactions, write_dataset
from recmind_dist.errors import InputError
from recmind_dist.io import check_output_dir

logger = logging.getLogger(__name__)

__all__ = [
    "ML1M_OCCUPATIONS",
    "ML100K_GENRES",
    "USER_COLUMNS",
    "RawTables",
    "import_movielens_raw",
    "import_recbole_atomic",
    "import_table",
]

_YEAR_SUFFIX = re.compile(r"^(?P<title>.*?)\s*\((?P<year>\d{4})\)\s*$")

ML100K_GENRES: tuple[str, ...] = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance",
    "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip
ML1M_OCCUPATIONS: tuple[str, ...] = (
    "other", "academic/educator", "artist", "clerical/admin", "college/grad student",
    "customer service", "doctor/health care", "executive/managerial", "farmer", "homemaker",
    "K-12 student", "lawyer", "programmer", "retired", "sales/marketing", "scientist",
    "self-employed", "technician/engineer", "tradesman/craftsman", "unemployed", "writer",
)  # fmt: skip
USER_COLUMNS: tuple[str, ...] = ("age", "gender", "occupation", "zip_code")


# ============================================================================================
# reading helpers


def _read_delimited(
    path: Path,
    sep: str,
    names: list[str] | None = None,
    encoding: str = "utf-8",
    text: str | None = None,
) -> pd.DataFrame:
    """Read a delimited text file (all values as strings, blanks as missing).

    With ``names`` the file has no header and must have exactly that many fields. ``text``
    replaces the file's content (already decoded). Every failure is an InputError naming
    ``path``.
    """
    if text is None and not path.is_file():
        raise InputError(path, None, "required file is missing")
    try:
        df = pd.read_csv(
            io.StringIO(text) if text is not None else path,
            sep=sep,
            header=None if names else 0,
            dtype=str,
            encoding=encoding,
            quoting=csv.QUOTE_NONE,
            keep_default_na=False,
            na_values=[""],
            engine="c",
        )
    except pd.errors.EmptyDataError as exc:
        raise InputError(path, None, "file is empty") from exc
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(path, None, f"cannot parse ({exc})") from exc
    if names:
        if df.shape[1] != len(names):
            raise InputError(
                path, None, f"expected {len(names)} fields per line, found {df.shape[1]}"
            )
        df.columns = names
    return df


def _read_double_colon(path: Path, names: list[str]) -> pd.DataFrame:
    """Read an ml-1m ``::``-separated latin-1 file with the fast C parser."""
    if not path.is_file():
        raise InputError(path, None, "required file is missing")
    text = path.read_bytes().decode("latin-1")
    if "\t" in text:
        raise InputError(path, None, "unexpected tab character in a '::'-separated file")
    return _read_delimited(path, "\t", names=names, text=text.replace("::", "\t"))


def _require(df: pd.DataFrame, path: Path | str, columns: list[str]) -> None:
    for col in columns:
        if col not in df.columns:
            raise InputError(path, col, "required column is missing")


def _raw_id_column(series: pd.Series, path: Path | str, column: str) -> pd.Series:
    """Raw ids as strings; missing/blank ids are an InputError."""
    if pd.api.types.is_float_dtype(series):
        values = series.to_numpy(dtype=np.float64)
        finite = np.isfinite(values)
        if finite.all() and (values == np.round(values)).all():
            series = pd.Series(values.astype(np.int64), index=series.index)
    missing = series.isna()
    as_str = series.astype(str).str.strip()
    missing |= as_str.eq("")
    if missing.any():
        raise InputError(path, column, f"{int(missing.sum())} missing ids")
    return as_str.astype(object)


def _numeric_column(series: pd.Series, path: Path | str, column: str) -> np.ndarray:
    """Parse a numeric column; text that is not a number or a blank is an InputError."""
    values = pd.to_numeric(series, errors="coerce")
    bad = values.isna() & series.notna()
    if bad.any():
        raise InputError(path, column, f"non-numeric value {series[bad].iloc[0]!r}")
    if values.isna().any():
        raise InputError(path, column, f"{int(values.isna().sum())} missing (NaN) values")
    return values.to_numpy(dtype=np.float64)


def _timestamp_column(series: pd.Series, path: Path | str, column: str = "timestamp") -> np.ndarray:
    """Timestamps as int64 seconds: numbers (integral) or date strings / datetimes."""
    if pd.api.types.is_datetime64_any_dtype(series):
        if series.isna().any():
            raise InputError(path, column, "missing (NaT) timestamps")
        return (series.astype("datetime64[s]").astype(np.int64)).to_numpy()
    numeric = pd.to_numeric(series, errors="coerce")
    looks_like_dates = numeric.notna().sum() == 0 and series.notna().all()
    if looks_like_dates and not pd.api.types.is_numeric_dtype(series):
        try:
            parsed = pd.to_datetime(series, utc=True)
        except (ValueError, TypeError) as exc:
            raise InputError(path, column, f"cannot parse dates ({exc})") from exc
        return (parsed.dt.tz_localize(None).astype("datetime64[s]").astype(np.int64)).to_numpy()
    values = _numeric_column(series, path, column)
    if (values != np.round(values)).any():
        raise InputError(path, column, "non-integer timestamps")
    return values.astype(np.int64)


# ============================================================================================
# shared import tail


@dataclass
class RawTables:
    """Interactions with raw (string) ids plus optional attribute tables keyed by raw ``id``."""

    interactions: pd.DataFrame  # columns user, item (raw str), optional rating, timestamp
    users: pd.DataFrame | None
    items: pd.DataFrame | None
    interactions_file: str
    users_file: str | None = None
    items_file: str | None = None


def _encode_attributes(
    table: pd.DataFrame | None, raw_ids: np.ndarray, file: str | None, kind: str
) -> tuple[pd.DataFrame | None, int]:
    """Replace raw ``id`` by the int id; drop rows whose id has no interactions."""
    if table is None:
        return None, 0
    raw = _raw_id_column(table["id"], file or kind, "id")
    dup = raw.duplicated()
    if dup.any():
        raise InputError(file, "id", f"duplicate {kind} id {raw[dup].iloc[0]!r}")
    codes = pd.Index(raw_ids).get_indexer(raw.to_numpy())
    known = codes >= 0
    dropped = int((~known).sum())
    if dropped:
        logger.info("%s: %d %s rows have no interactions; dropped", file, dropped, kind)
    out = table.loc[known].copy()
    out["id"] = codes[known].astype(np.int64)
    return out.sort_values("id").reset_index(drop=True), dropped


def _write_raw_tables(
    raw: RawTables, out_dir: str | Path, source: str, extra_meta: dict[str, Any] | None
) -> Path:
    """Encode raw ids, validate, and write the canonical directory."""
    inter = raw.interactions
    user_codes, user_raw = encode_ids(_raw_id_column(inter["user"], raw.interactions_file, "user"))
    item_codes, item_raw = encode_ids(_raw_id_column(inter["item"], raw.interactions_file, "item"))
    encoded = pd.DataFrame({"user": user_codes, "item": item_codes})
    for col in ("rating", "timestamp"):
        if col in inter.columns:
            encoded[col] = inter[col].to_numpy()
    encoded, n_dup = validate_interactions(encoded, raw.interactions_file)
    users, users_dropped = _encode_attributes(raw.users, user_raw, raw.users_file, "user")
    items, items_dropped = _encode_attributes(raw.items, item_raw, raw.items_file, "item")
    meta = {
        "importer": {
            "duplicates_in_source": n_dup,
            "user_rows_without_interactions": users_dropped,
            "item_rows_without_interactions": items_dropped,
            "id_rule": "raw ids sorted numerically if all integers, else lexicographically",
        },
        **(extra_meta or {}),
    }
    return write_dataset(out_dir, encoded, users, items, user_raw, item_raw, source, meta)


# ============================================================================================
# MovieLens normalisation


def _split_title_year(titles: pd.Series) -> tuple[pd.Series, pd.Series]:
    """ "Toy Story (1995)" -> ("Toy Story", 1995); titles without a year keep year NA."""
    parts = titles.astype(str).str.extract(_YEAR_SUFFIX)
    title = parts["title"].where(parts["title"].notna(), titles)
    year = pd.to_numeric(parts["year"], errors="coerce").astype("Int64")
    return title.astype(object), year


def _normalise_ml_items(items: pd.DataFrame, genres: pd.Series) -> pd.DataFrame:
    """Items as ``id, title, year, genres`` (title without its "(1995)" suffix)."""
    title, year = _split_title_year(items["title"])
    if "year" in items.columns:  # fallback when the title has no "(1995)" suffix
        given = pd.to_numeric(items["year"], errors="coerce").astype("Int64")
        year = year.where(year.notna(), given)
    title = title.replace({"unkonwn": "unknown"})  # RecBole's copy misspells item 267
    return pd.DataFrame(
        {"id": items["id"], "title": title, "year": year, "genres": genres.astype(object)}
    )


def _normalise_ml_users(users: pd.DataFrame) -> pd.DataFrame:
    """Users as ``id, age, gender, occupation, zip_code`` (age int)."""
    out = pd.DataFrame({"id": users["id"]})
    out["age"] = pd.to_numeric(users["age"], errors="coerce").astype("Int64")
    for col in ("gender", "occupation", "zip_code"):
        out[col] = users[col].astype(object)
    return out


# ============================================================================================
# RecBole atomic files


def _read_recbole_file(path: Path, required: list[str]) -> tuple[pd.DataFrame, dict[str, str]]:
    """Read a RecBole atomic file; strip ``:type`` suffixes; return (frame, {field: type})."""
    df = _read_delimited(path, "\t")
    types: dict[str, str] = {}
    for header in df.columns:
        name, _, ftype = str(header).partition(":")
        if name in types:
            raise InputError(path, name, "field appears twice in the header")
        types[name] = ftype or "token"
    df.columns = list(types)
    for name in required:
        if name not in types:
            raise InputError(path, name, "required field is missing from the header")
    return df, types


def _optional_numeric(series: pd.Series, path: Path, column: str) -> pd.Series:
    """Numbers with blanks allowed (NaN); non-numeric text is an InputError."""
    values = pd.to_numeric(series, errors="coerce")
    bad = values.isna() & series.notna()
    if bad.any():
        raise InputError(path, column, f"non-numeric value {series[bad].iloc[0]!r}")
    return values


def _recbole_interactions(path: Path) -> pd.DataFrame:
    df, types = _read_recbole_file(path, ["user_id", "item_id"])
    out = pd.DataFrame({"user": df["user_id"], "item": df["item_id"]})
    if "rating" in types:
        out["rating"] = _numeric_column(df["rating"], path, "rating")
    if "timestamp" in types:
        out["timestamp"] = _timestamp_column(df["timestamp"], path)
    ignored = [f for f in types if f not in ("user_id", "item_id", "rating", "timestamp")]
    if ignored:
        logger.info("%s: ignoring interaction fields %s", path, ignored)
    return out


def _recbole_attributes(path: Path, id_field: str) -> pd.DataFrame | None:
    if not path.exists():
        return None
    df, types = _read_recbole_file(path, [id_field])
    for name, ftype in types.items():
        if ftype == "float":
            df[name] = _optional_numeric(df[name], path, name)
    return df.rename(columns={id_field: "id"})


def _normalise_recbole_movielens(
    items: pd.DataFrame | None, users: pd.DataFrame | None
) -> tuple[pd.DataFrame | None, pd.DataFrame | None]:
    if items is not None:
        items = items.rename(columns={"movie_title": "title", "release_year": "year"})
        genre_field = "class" if "class" in items.columns else "genre"
        if "title" in items.columns and genre_field in items.columns:
            genres = items[genre_field].fillna("").astype(str).str.split().str.join(", ")
            items = _normalise_ml_items(items, genres)
    if users is not None and all(c in users.columns for c in USER_COLUMNS):
        users = _normalise_ml_users(users)
    return items, users


def import_recbole_atomic(src_dir: str | Path, name: str, out_dir: str | Path) -> Path:
    """Import RecBole atomic files ``{name}.inter`` (required), ``.item``, ``.user``.

    Header fields look like ``user_id:token``; the ``:type`` suffix is stripped. ``user_id``
    and ``item_id`` become the id columns; ``rating`` / ``timestamp`` are kept on the
    interactions (other interaction fields are ignored); all other ``.item`` / ``.user`` fields
    are attribute columns. For MovieLens (``name`` starting with ``ml-``) items are normalised
    to ``title, year, genres`` and users to ``age, gender, occupation, zip_code``.
    """
    src = Path(src_dir)
    check_output_dir(out_dir, [src])
    inter_path, item_path, user_path = (src / f"{name}.{ext}" for ext in ("inter", "item", "user"))
    items = _recbole_attributes(item_path, "item_id")
    users = _recbole_attributes(user_path, "user_id")
    if name.startswith("ml-"):
        items, users = _normalise_recbole_movielens(items, users)
    raw = RawTables(
        _recbole_interactions(inter_path), users, items,
        str(inter_path), str(user_path), str(item_path),
    )  # fmt: skip
    return _write_raw_tables(raw, out_dir, f"recbole:{name}", {"importer_name": "recbole_atomic"})


# ============================================================================================
# GroupLens MovieLens raw files


def _ml100k_genre_names(src: Path) -> list[str]:
    genre_file = src / "u.genre"
    if not genre_file.is_file():
        return list(ML100K_GENRES)
    df = _read_delimited(genre_file, "|", names=["name", "index"], encoding="latin-1")
    return df.dropna().sort_values("index", key=lambda s: s.astype(int))["name"].tolist()


def _ml100k_items(src: Path) -> pd.DataFrame:
    path = src / "u.item"
    genres = _ml100k_genre_names(src)
    names = ["id", "title", "release_date", "video_release_date", "imdb_url", *genres]
    df = _read_delimited(path, "|", names=names, encoding="latin-1")
    flags = df[genres].fillna("0").eq("1").to_numpy()
    genre_arr = np.asarray(genres, dtype=object)
    joined = pd.Series([", ".join(genre_arr[row]) for row in flags], index=df.index)
    release_year = df["release_date"].astype(str).str.extract(r"(\d{4})\s*$")[0]
    items = pd.DataFrame({"id": df["id"], "title": df["title"], "year": release_year})
    return _normalise_ml_items(items, joined)


def _ml100k(src: Path) -> RawTables:
    data = src / "u.data"
    inter = _read_delimited(data, "\t", names=["user", "item", "rating", "timestamp"])
    inter["rating"] = _numeric_column(inter["rating"], data, "rating")
    inter["timestamp"] = _timestamp_column(inter["timestamp"], data)
    users = None
    if (src / "u.user").is_file():
        users = _read_delimited(
            src / "u.user", "|", names=["id", *USER_COLUMNS], encoding="latin-1"
        )
        users = _normalise_ml_users(users)
    items = _ml100k_items(src) if (src / "u.item").is_file() else None
    return RawTables(inter, users, items, str(data), str(src / "u.user"), str(src / "u.item"))


def _ml1m_users(path: Path) -> pd.DataFrame:
    df = _read_double_colon(path, ["id", "gender", "age", "occupation", "zip_code"])
    names = {str(code): name for code, name in enumerate(ML1M_OCCUPATIONS)}
    df["occupation"] = df["occupation"].map(lambda code: names.get(code, code))
    return _normalise_ml_users(df)


def _ml1m(src: Path) -> RawTables:
    data = src / "ratings.dat"
    inter = _read_double_colon(data, ["user", "item", "rating", "timestamp"])
    inter["rating"] = _numeric_column(inter["rating"], data, "rating")
    inter["timestamp"] = _timestamp_column(inter["timestamp"], data)
    items = None
    if (src / "movies.dat").is_file():
        movies = _read_double_colon(src / "movies.dat", ["id", "title", "genres"])
        items = _normalise_ml_items(movies, movies["genres"].fillna("").str.replace("|", ", "))
    users = _ml1m_users(src / "users.dat") if (src / "users.dat").is_file() else None
    return RawTables(
        inter, users, items, str(data), str(src / "users.dat"), str(src / "movies.dat")
    )


def import_movielens_raw(src_dir: str | Path, out_dir: str | Path) -> Path:
    """Import GroupLens ml-100k (``u.data``, ``u.item``, ``u.user``) or ml-1m (``ratings.dat``,
    ``movies.dat``, ``users.dat``), detected by which files are present in ``src_dir``.

    Items become ``title`` (without the "(1995)" suffix), ``year`` (from the title, else the
    release date) and ``genres`` ("Action, Comedy"); users ``age, gender, occupation,
    zip_code`` (ml-1m: ``age`` is the dataset's age-group code, occupation codes are named).
    """
    src = Path(src_dir)
    if not src.is_dir():
        raise InputError(src, None, "source directory does not exist")
    check_output_dir(out_dir, [src])
    if (src / "u.data").exists():
        raw, variant = _ml100k(src), "ml-100k"
    elif (src / "ratings.dat").exists():
        raw, variant = _ml1m(src), "ml-1m"
    else:
        raise InputError(
            src, None, "no MovieLens files: expected u.data (ml-100k) or ratings.dat (ml-1m)"
        )
    return _write_raw_tables(
        raw, out_dir, f"grouplens:{variant}", {"importer_name": "movielens_raw"}
    )


# ============================================================================================
# generic CSV / Parquet


def _read_any_table(path: Path, id_columns: list[str]) -> pd.DataFrame:
    """Read CSV/TSV (by suffix) or Parquet; id columns are read as strings from text files."""
    if not path.is_file():
        raise InputError(path, None, "required file is missing")
    if path.suffix.lower() in (".parquet", ".pq"):
        try:
            return pq.read_table(path).to_pandas()
        except (pa.ArrowException, OSError, ValueError) as exc:
            raise InputError(path, None, f"unreadable or corrupt Parquet file ({exc})") from exc
    sep = "\t" if path.suffix.lower() in (".tsv", ".tab") else ","
    try:
        header = pd.read_csv(path, sep=sep, nrows=0).columns
    except pd.errors.EmptyDataError as exc:
        raise InputError(path, None, "file is empty") from exc
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise InputError(path, None, f"cannot parse ({exc})") from exc
    dtypes = {c: str for c in id_columns if c in header}
    try:
        return pd.read_csv(path, sep=sep, dtype=dtypes)
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(path, None, f"cannot parse ({exc})") from exc


def _mapped(mapping: dict[str, str], key: str, required: bool = True) -> str | None:
    value = mapping.get(key)
    if value is None and required:
        raise InputError("column mapping", key, "required key is missing")
    return value


def _table_interactions(path: Path, mapping: dict[str, str]) -> pd.DataFrame:
    user_col, item_col = _mapped(mapping, "user"), _mapped(mapping, "item")
    rating_col = _mapped(mapping, "rating", required=False)
    ts_col = _mapped(mapping, "timestamp", required=False)
    assert user_col is not None and item_col is not None
    df = _read_any_table(path, [user_col, item_col])
    _require(df, path, [c for c in (user_col, item_col, rating_col, ts_col) if c])
    if len(df) == 0:
        raise InputError(path, user_col, "no interactions (empty table)")
    out = pd.DataFrame({"user": df[user_col], "item": df[item_col]})
    if rating_col:
        if df[rating_col].isna().any():
            raise InputError(path, rating_col, f"{int(df[rating_col].isna().sum())} NaN ratings")
        out["rating"] = _numeric_column(df[rating_col], path, rating_col)
    if ts_col:
        out["timestamp"] = _timestamp_column(df[ts_col], path, ts_col)
    return out


def _table_attributes(path: str | Path | None, id_col: str | None, key: str) -> pd.DataFrame | None:
    if path is None:
        return None
    if id_col is None:
        raise InputError(
            "column mapping", key, f"required when a {key.split('_')[0]}s table is given"
        )
    df = _read_any_table(Path(path), [id_col])
    _require(df, path, [id_col])
    if "id" in df.columns and id_col != "id":
        raise InputError(path, "id", "column name 'id' is reserved for the mapped id column")
    return df.rename(columns={id_col: "id"})


def import_table(
    path: str | Path,
    mapping: dict[str, str],
    out_dir: str | Path,
    items_path: str | Path | None = None,
    users_path: str | Path | None = None,
) -> Path:
    """Import a generic CSV / TSV / Parquet interactions table.

    ``mapping`` names the source columns: ``user`` and ``item`` (required), ``rating`` and
    ``timestamp`` (optional; timestamps may be numbers or date strings), and ``item_id_col`` /
    ``user_id_col`` for the optional attribute tables. Every other attribute column is kept.
    """
    path = Path(path)
    check_output_dir(out_dir, [path, items_path, users_path])
    inter = _table_interactions(path, mapping)
    items = _table_attributes(items_path, mapping.get("item_id_col"), "item_id_col")
    users = _table_attributes(users_path, mapping.get("user_id_col"), "user_id_col")
    raw = RawTables(
        inter, users, items, str(path),
        str(users_path) if users_path else None, str(items_path) if items_path else None,
    )  # fmt: skip
    return _write_raw_tables(
        raw, out_dir, f"table:{path.name}", {"importer_name": "table", "mapping": dict(mapping)}
    )
