"""Node text for the frozen/LoRA language-model towers: item descriptions and user profiles.

Both builders take plain pandas DataFrames / numpy arrays (no dependency on the dataset loader)
and return ``DataFrame(id int64, text str, has_text bool)`` with one row per requested id,
sorted by id. A node with nothing to say gets ``text == ""`` and ``has_text == False``; the
embedding job gives such nodes a zero vector and downstream models use their fallback path.

Templates are Python format strings over the table's columns. Missing values (None, NaN, NA,
empty/blank strings) are dropped *gracefully* at three levels, in this order:

1. a bracketed group ``( ... {field} ... )`` with a missing field is removed
   (``"{title} ({year})."`` -> ``"Toy Story."``);
2. a whitespace-delimited word glued to a missing field is removed, keeping its outer
   punctuation (``"A {age}-year-old {gender} {occupation}."`` -> ``"A male writer."``);
3. a sentence whose fields are all missing is removed (``"Genres: {genres}."`` disappears).

If every field of a template is missing the result is no text at all.

:func:`training_texts` is the one place that turns a dataset and its split into the node
texts every consumer uses (embedding cache, LoRA tower, LLMRec side information, re-ranking,
LM-written profiles): one item description per dataset item and one profile per dataset user
summarising the split's TRAINING edges only.
"""

from __future__ import annotations

import logging
import math
import re
import string
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from recmind_dist.errors import InputError
from recmind_dist.specs.text import TextSpec, template_fields

if TYPE_CHECKING:
    from recmind_dist.data.schema import Dataset
    from recmind_dist.data.split import SplitData

log = logging.getLogger(__name__)

__all__ = [
    "TextSpec",
    "build_item_texts",
    "build_user_texts",
    "item_texts",
    "render_template",
    "template_fields",
    "training_pairs",
    "training_texts",
    "training_user_texts",
]

_SENT = "\x00"  # sentinel framing field slots inside a template while we cut clauses


def _is_missing(v: Any) -> bool:
    if v is None or v is pd.NA or v is pd.NaT:
        return True
    if isinstance(v, float) and math.isnan(v):
        return True
    if isinstance(v, np.floating) and np.isnan(v):
        return True
    return bool(isinstance(v, str) and not v.strip())


def _fmt_value(v: Any, spec: str) -> str:
    """Render one value; integral floats (years read back as float64 because of NaN) lose '.0'."""
    if isinstance(v, (float, np.floating)) and float(v).is_integer() and not spec:
        v = int(v)
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, str):
        v = v.strip()
    try:
        return format(v, spec)
    except (ValueError, TypeError):
        return str(v)


_WS = re.compile(r"\s+")


def _cleanup(s: str) -> str:
    s = s.replace("()", "").replace("[]", "")
    s = _WS.sub(" ", s).strip()
    s = re.sub(r"\s+([.,;:!?)\]])", r"\1", s)  # no space before closing punctuation
    s = re.sub(r"([(\[])\s+", r"\1", s)
    s = re.sub(r"([,;:])(?=[.!?])", "", s)  # dangling ", ." -> "."
    s = re.sub(r"\.{2,}", ".", s)
    s = re.sub(r"^[\s.,;:!?]+", "", s)  # no leading punctuation
    return s.strip()


def render_template(template: str, values: dict[str, Any]) -> str:
    """Fill ``template`` from ``values`` dropping clauses whose fields are missing.

    Returns ``""`` when every field is missing (or the template has no fields and renders empty).
    """
    parsed = list(string.Formatter().parse(template))
    slots: list[tuple[str, str]] = []  # (name, spec)
    marked = []
    for literal, name, spec, _conv in parsed:
        marked.append(literal.replace(_SENT, ""))
        if name is not None:  # conversions (!r/!s) are ignored: values go through format()
            marked.append(f"{_SENT}{len(slots)}{_SENT}")
            slots.append((name, spec or ""))
    if not slots:
        return _cleanup(template)
    rendered = [None if _is_missing(values.get(n)) else _fmt_value(values.get(n), sp)
                for n, sp in slots]
    if all(r is None for r in rendered):
        return ""
    slot_re = re.compile(f"{_SENT}(\\d+){_SENT}")

    def missing_in(chunk: str) -> bool:
        return any(rendered[int(i)] is None for i in slot_re.findall(chunk))

    def _word(m: re.Match) -> str:
        w = m.group(0)
        if not missing_in(w):
            return w
        lead = re.match(r"^[(\[\"']*", w).group(0)
        trail = re.search(r"[.,;:!?)\]\"']*$", w).group(0)
        return lead + trail

    kept = []
    for sent in re.split(r"(?<=[.!?;])\s+", "".join(marked)):
        ids = [int(i) for i in slot_re.findall(sent)]
        if ids and all(rendered[i] is None for i in ids):
            continue  # 3. whole sentence missing
        # 1. bracket groups with a missing slot (with the space before them)
        sent = re.sub(r"\s*\([^()]*\)", lambda m: "" if missing_in(m.group(0)) else m.group(0),
                      sent)
        # 2. words glued to a missing slot, keeping outer punctuation
        sent = re.sub(r"\S*" + _SENT + r"\d+" + _SENT + r"\S*", _word, sent)
        kept.append(sent)
    s = slot_re.sub(lambda m: rendered[int(m.group(1))] or "", " ".join(kept))
    return _cleanup(s)


# --------------------------------------------------------------------------------------------
# builders
# --------------------------------------------------------------------------------------------


def _check_id_table(df: pd.DataFrame, name: str) -> pd.DataFrame:
    if "id" not in df.columns:
        raise InputError(name, "id", "missing 'id' column")
    if df["id"].isna().any():
        raise InputError(name, "id", "null ids")
    if df["id"].duplicated().any():
        dup = df.loc[df["id"].duplicated(), "id"].iloc[0]
        raise InputError(name, "id", f"duplicate id {dup}")
    return df


def _render_table(df: pd.DataFrame | None, template: str, ids: np.ndarray, name: str,
                  field_name: str) -> list[str]:
    """Render ``template`` for every id in ``ids`` ("" where the id has no row)."""
    if df is None or len(df) == 0:
        return [""] * len(ids)
    _check_id_table(df, name)
    fields = template_fields(template)
    absent = [f for f in fields if f not in df.columns]
    if fields and len(absent) == len(fields):
        raise InputError(name, field_name,
                         f"template uses {fields} but the table has columns {list(df.columns)}")
    if absent:
        log.warning("%s: columns %s used by %s are absent; those clauses are dropped",
                    name, absent, field_name)
    present = [f for f in dict.fromkeys(fields) if f in df.columns]
    sub = df.set_index(df["id"].astype(np.int64))[present]
    records = sub.to_dict("index")
    out = []
    for i in ids.tolist():
        row = records.get(int(i))
        out.append("" if row is None else render_template(template, row))
    return out


def _as_ids(ids: Iterable[int] | int | None, df: pd.DataFrame | None, name: str) -> np.ndarray:
    if ids is None:
        if df is None:
            raise InputError(name, "id", "no table and no ids: cannot know which nodes exist")
        return np.sort(df["id"].to_numpy(dtype=np.int64))
    if isinstance(ids, (int, np.integer)):
        return np.arange(int(ids), dtype=np.int64)
    arr = np.unique(np.asarray(list(ids) if not isinstance(ids, np.ndarray) else ids,
                               dtype=np.int64))
    return arr


def _frame(ids: np.ndarray, texts: list[str]) -> pd.DataFrame:
    return pd.DataFrame({
        "id": ids.astype(np.int64),
        "text": pd.Series(texts, dtype=object).astype(str),
        "has_text": np.array([bool(t) for t in texts], dtype=bool),
    })


def build_item_texts(items_df: pd.DataFrame | None, spec: TextSpec | None = None,
                     item_ids: Iterable[int] | int | None = None) -> pd.DataFrame:
    """One description per item from ``spec.item_template``.

    Args:
        items_df: ``id`` + attribute columns (canonical ``items.parquet``), or None.
        spec: text spec (defaults: MovieLens).
        item_ids: all item ids that need a row (an int ``n`` means ``range(n)``); defaults to
            the ids in ``items_df``. Ids without an ``items_df`` row get no text.

    Returns:
        ``DataFrame(id int64, text str, has_text bool)`` sorted by id.
    """
    spec = spec or TextSpec()
    ids = _as_ids(item_ids, items_df, "items")
    texts = _render_table(items_df, spec.item_template, ids, "items", "item_template")
    out = _frame(ids, texts)
    log.info("item texts: %d/%d with text", int(out.has_text.sum()), len(out))
    return out


def _pairs(train_pairs: Any) -> tuple[np.ndarray, np.ndarray]:
    if train_pairs is None:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    if isinstance(train_pairs, pd.DataFrame):
        if not {"user", "item"} <= set(train_pairs.columns):
            raise InputError("train_pairs", "user/item", "DataFrame needs 'user' and 'item'")
        return (train_pairs["user"].to_numpy(np.int64), train_pairs["item"].to_numpy(np.int64))
    if isinstance(train_pairs, np.ndarray) and train_pairs.ndim == 2:
        if train_pairs.shape[1] != 2:
            raise InputError("train_pairs", "shape", f"expected (N, 2), got {train_pairs.shape}")
        return train_pairs[:, 0].astype(np.int64), train_pairs[:, 1].astype(np.int64)
    if isinstance(train_pairs, Sequence) and len(train_pairs) == 2:
        u, i = (np.asarray(a, dtype=np.int64) for a in train_pairs)
        if u.shape != i.shape:
            raise InputError("train_pairs", "shape", "user and item arrays differ in length")
        return u, i
    raise InputError("train_pairs", None,
                     "expected (users, items) arrays, an (N, 2) array or a user/item DataFrame")


def _split_genres(v: Any, sep: str) -> list[str]:
    if _is_missing(v):
        return []
    if isinstance(v, (list, tuple, np.ndarray)):
        return [str(g).strip() for g in v if not _is_missing(g)]
    return [g.strip() for g in str(v).split(sep) if g.strip()]


def build_user_texts(users_df: pd.DataFrame | None, train_pairs: Any,
                     items_df: pd.DataFrame | None, spec: TextSpec | None = None,
                     user_ids: Iterable[int] | int | None = None) -> pd.DataFrame:
    """One profile per user: demographics + a summary of the user's TRAINING interactions.

    Only ``train_pairs`` are read, so validation/test items can never leak into a profile.
    The summary is deterministic:

    * top genres: genre counts over the user's distinct train items, highest count first,
      ties by genre name; ``spec.top_genres`` of them;
    * titles: the user's distinct train items ordered by training popularity (number of train
      users) descending, ties by item id ascending; ``spec.max_history_titles`` of them.

    Args:
        users_df: ``id`` + demographic columns, or None (profiles from history only).
        train_pairs: canonical ``(user_ids, item_ids)`` arrays, an ``(N, 2)`` array or a
            DataFrame with ``user``/``item`` columns.
        items_df: items table with ``spec.title_column`` / ``spec.genres_column`` (optional).
        spec: text spec.
        user_ids: all user ids that need a row (int ``n`` = ``range(n)``); defaults to the
            users in ``users_df`` plus the users in ``train_pairs``.

    Returns:
        ``DataFrame(id int64, text str, has_text bool)`` sorted by id.
    """
    spec = spec or TextSpec()
    u, it = _pairs(train_pairs)
    if user_ids is None:
        base = users_df["id"].to_numpy(np.int64) if users_df is not None else np.zeros(0, np.int64)
        ids = np.unique(np.concatenate([base, u]))
    else:
        ids = _as_ids(user_ids, users_df, "users")
    demo = _render_table(users_df, spec.user_template, ids, "users", "user_template")

    titles: dict[int, str] = {}
    genres: dict[int, list[str]] = {}
    if items_df is not None and len(items_df):
        _check_id_table(items_df, "items")
        iid = items_df["id"].to_numpy(np.int64)
        if spec.title_column in items_df.columns:
            for k, v in zip(iid.tolist(), items_df[spec.title_column].tolist(), strict=True):
                if not _is_missing(v):
                    titles[k] = str(v).strip()
        if spec.genres_column in items_df.columns:
            for k, v in zip(iid.tolist(), items_df[spec.genres_column].tolist(), strict=True):
                genres[k] = _split_genres(v, spec.genre_separator)

    hist_sentences: dict[int, str] = {}
    if len(u):
        pairs = pd.DataFrame({"user": u, "item": it}).drop_duplicates()
        pop = pairs.groupby("item").size()
        pairs["pop"] = pop.reindex(pairs["item"]).to_numpy()
        pairs = pairs.sort_values(["user", "pop", "item"], ascending=[True, False, True],
                                  kind="stable")
        for user, grp in pairs.groupby("user", sort=False):
            items = grp["item"].tolist()
            parts = []
            if spec.top_genres and genres:
                cnt = Counter(g for i in items for g in genres.get(i, []))
                top = sorted(cnt.items(), key=lambda kv: (-kv[1], kv[0]))[: spec.top_genres]
                if top:
                    parts.append(render_template(spec.user_genres_template,
                                                 {"genres": ", ".join(g for g, _ in top)}))
            if spec.max_history_titles and titles:
                chosen = [titles[i] for i in items if i in titles][: spec.max_history_titles]
                if chosen:
                    parts.append(render_template(spec.user_titles_template,
                                                 {"titles": "; ".join(chosen)}))
            hist_sentences[int(user)] = " ".join(p for p in parts if p)

    texts = [" ".join(p for p in (d, hist_sentences.get(int(i), "")) if p)
             for d, i in zip(demo, ids.tolist(), strict=True)]
    out = _frame(ids, texts)
    log.info("user texts: %d/%d with text", int(out.has_text.sum()), len(out))
    return out


# --------------------------------------------------------------------------------------------
# a dataset and its split -> node texts
# --------------------------------------------------------------------------------------------


def training_pairs(data: SplitData) -> tuple[np.ndarray, np.ndarray]:
    """Canonical ``(user ids, item ids)`` of ``data``'s TRAINING edges."""
    return data.user_ids[data.train[:, 0]], data.item_ids[data.train[:, 1]]


def item_texts(dataset: Dataset, text_spec: TextSpec) -> pd.DataFrame:
    """``(id, text, has_text)`` of every dataset item ``0..n_items-1`` from
    ``text_spec.item_template`` (item texts do not depend on the split)."""
    return build_item_texts(dataset.items, text_spec, item_ids=dataset.n_items)


def training_user_texts(dataset: Dataset, data: SplitData, text_spec: TextSpec) -> pd.DataFrame:
    """``(id, text, has_text)`` of every dataset user ``0..n_users-1``: demographics plus a
    summary of the user's TRAINING edges in ``data`` (no validation/test item can appear)."""
    return build_user_texts(dataset.users, training_pairs(data), dataset.items, text_spec,
                            user_ids=dataset.n_users)


def training_texts(dataset: Dataset, data: SplitData, text_spec: TextSpec
                   ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(item texts, training-only user profiles) of a dataset and its split, canonical ids.

    The frames the embedding cache embeds (``recmind_dist.pipeline.features``); callers that
    need one of them call :func:`item_texts` / :func:`training_user_texts` directly.
    """
    return item_texts(dataset, text_spec), training_user_texts(dataset, data, text_spec)
