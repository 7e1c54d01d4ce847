"""Node text templates: clause dropping, missing rows, leakage-free user profiles."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from recmind_dist.errors import InputError
from recmind_dist.specs import TextSpec
from recmind_dist.text import build_item_texts, build_user_texts, render_template

ITEM_T = TextSpec().item_template
USER_T = TextSpec().user_template


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"title": "Toy Story", "year": 1995.0, "genres": "Animation, Comedy"},
         "Toy Story (1995). Genres: Animation, Comedy."),
        ({"title": "Toy Story", "year": float("nan"), "genres": "Animation"},
         "Toy Story. Genres: Animation."),
        ({"title": "Toy Story", "year": 1995, "genres": None}, "Toy Story (1995)."),
        ({"title": "Toy Story", "year": pd.NA, "genres": "  "}, "Toy Story."),
        ({"title": None, "year": None, "genres": None}, ""),
        ({"title": " ", "year": float("nan"), "genres": ""}, ""),
    ],
)
def test_item_template_drops_missing_clauses(values: dict, expected: str) -> None:
    assert render_template(ITEM_T, values) == expected


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"age": 24, "gender": "M", "occupation": "technician"}, "A 24-year-old M technician."),
        ({"age": None, "gender": "F", "occupation": "writer"}, "A F writer."),
        ({"age": 30, "gender": "F", "occupation": None}, "A 30-year-old F."),
        ({"age": None, "gender": None, "occupation": None}, ""),
    ],
)
def test_user_template_drops_missing_words(values: dict, expected: str) -> None:
    assert render_template(USER_T, values) == expected


def _items() -> pd.DataFrame:
    return pd.DataFrame({
        "id": np.array([0, 1, 2, 3, 5], np.int64),
        "title": ["Alpha", "Beta", None, "Delta", "Heldout Zyzzyva"],
        "year": [1990.0, np.nan, np.nan, 2001.0, 1999.0],
        "genres": ["Drama, Comedy", "Drama", None, "Action, Drama", "Noirpunk"],
    })


def test_build_item_texts_missing_rows_and_fields() -> None:
    out = build_item_texts(_items(), TextSpec(), item_ids=7)
    assert list(out.columns) == ["id", "text", "has_text"]
    assert out["id"].tolist() == list(range(7)) and out["id"].dtype == np.int64
    t = dict(zip(out.id, out.text, strict=True))
    h = dict(zip(out.id, out.has_text, strict=True))
    assert t[0] == "Alpha (1990). Genres: Drama, Comedy."
    assert t[1] == "Beta. Genres: Drama."
    assert (t[2], h[2]) == ("", False)  # all fields missing
    assert (t[4], h[4]) == ("", False)  # no row for id 4
    assert (t[6], h[6]) == ("", False)
    assert h[0] and h[1] and h[3]


def test_build_item_texts_defaults_to_table_ids_and_none_table() -> None:
    out = build_item_texts(_items())
    assert out["id"].tolist() == [0, 1, 2, 3, 5]
    none = build_item_texts(None, item_ids=[3, 1])
    assert none["id"].tolist() == [1, 3] and not none["has_text"].any()


def test_template_columns_absent_is_input_error() -> None:
    spec = TextSpec(item_template="{name} by {author}")
    with pytest.raises(InputError, match="item_template"):
        build_item_texts(_items(), spec)
    # a partially unknown template just drops the unknown clause
    spec = TextSpec(item_template="{title}. Director: {director}.")
    assert build_item_texts(_items(), spec).text.iloc[0] == "Alpha."


def test_duplicate_item_ids_rejected() -> None:
    df = pd.DataFrame({"id": [1, 1], "title": ["a", "b"]})
    with pytest.raises(InputError, match="duplicate"):
        build_item_texts(df)


def test_text_spec_forbids_extra_and_bad_format() -> None:
    with pytest.raises(ValidationError):
        TextSpec(unknown=1)
    with pytest.raises(ValidationError):
        TextSpec(item_template="{title")


def _users() -> pd.DataFrame:
    return pd.DataFrame({
        "id": np.array([0, 1, 2], np.int64),
        "age": [24, np.nan, np.nan],
        "gender": ["M", "F", None],
        "occupation": ["engineer", None, None],
    })


def test_user_profiles_use_train_only_no_leakage() -> None:
    items = _items()
    # user 0 trains on 0,1,3; the held-out item 5 ("Heldout Zyzzyva", genre "Noirpunk")
    # exists only in valid/test and must not appear in any profile.
    train = (np.array([0, 0, 0, 1]), np.array([0, 1, 3, 1]))
    out = build_user_texts(_users(), train, items, TextSpec(), user_ids=4)
    text = " ".join(out.text)
    assert "Zyzzyva" not in text and "Noirpunk" not in text
    t = dict(zip(out.id, out.text, strict=True))
    # genre counts over user 0's train items: Drama 3, Action 1, Comedy 1 -> ties by name
    assert t[0] == ("A 24-year-old M engineer. Top genres: Drama, Action, Comedy. "
                    "Liked: Beta; Alpha; Delta.")  # Beta has 2 train users -> first
    assert t[1] == "A F. Top genres: Drama. Liked: Beta."
    assert out.set_index("id").loc[2, "has_text"] is np.False_  # nothing known
    assert out.set_index("id").loc[3, "text"] == ""  # no row, no history
    # the same user with the held-out item in its "history" would mention it (sanity)
    leaky = build_user_texts(_users(), (np.array([0]), np.array([5])), items)
    assert "Zyzzyva" in leaky.text.iloc[0]


def test_user_profiles_deterministic_and_limited() -> None:
    items = pd.DataFrame({"id": np.arange(10), "title": [f"T{i}" for i in range(10)],
                          "genres": ["A, B, C, D"] * 10})
    u = np.zeros(10, np.int64)
    i = np.arange(10)
    spec = TextSpec(max_history_titles=2, top_genres=1)
    a = build_user_texts(None, (u, i), items, spec)
    b = build_user_texts(None, np.stack([u[::-1], i[::-1]], 1), items, spec)
    assert a.equals(b)
    assert a.text.iloc[0] == "Top genres: A. Liked: T0; T1."
    df_pairs = pd.DataFrame({"user": u, "item": i})
    assert build_user_texts(None, df_pairs, items, spec).equals(a)


def test_user_profiles_bad_pairs() -> None:
    with pytest.raises(InputError):
        build_user_texts(None, np.zeros((3, 3)), None)


# -- training_texts: the one builder of a dataset's node texts ---------------------------------


def _ml100k_like(tmp_path):
    """A small dataset imported from GroupLens ml-100k-format raw files (titles with and
    without a year, multi-genre flags, demographics, ratings 1-5)."""
    from recmind_dist.data.importers import ML100K_GENRES, import_movielens_raw
    from recmind_dist.data.schema import load_dataset

    rng = np.random.default_rng(7)
    n_users, n_items = 40, 60
    src = tmp_path / "ml-100k"
    src.mkdir()
    rows = [f"{u + 1}\t{i + 1}\t{int(rng.integers(1, 4 if u % 10 == 9 else 6))}"
            f"\t{880000000 + 97 * u + i}"  # every 10th user rates 1-3 only: not in the split
            for u in range(n_users) for i in rng.choice(n_items, 15, replace=False)]
    (src / "u.data").write_text("\n".join(rows) + "\n")
    items = []
    for i in range(n_items):
        flags = "|".join("1" if f else "0" for f in rng.random(len(ML100K_GENRES)) < 0.15)
        title, date = (("unknown", "") if i % 17 == 0 else
                       (f"Film Number {i}, The ({1950 + i})", f"01-Jan-{1950 + i}"))
        items.append(f"{i + 1}|{title}|{date}||http://x/{i}|{flags}")
    (src / "u.item").write_text("\n".join(items) + "\n", encoding="latin-1")
    occupations = ["writer", "engineer", "student", "other"]
    users = [f"{u + 1}|{18 + u}|{'MF'[u % 2]}|{occupations[u % 4]}|{10000 + u}"
             for u in range(n_users)]
    (src / "u.user").write_text("\n".join(users) + "\n", encoding="latin-1")
    return load_dataset(import_movielens_raw(src, tmp_path / "ds"))


def test_training_texts_equal_the_old_builders(tmp_path) -> None:
    """Same frames, byte for byte, as the per-module builders they replace (so cached vectors
    and their keys stay valid)."""
    from recmind_dist.data.split import make_split
    from recmind_dist.specs import SplitSpec
    from recmind_dist.text.templates import (
        item_texts,
        training_pairs,
        training_texts,
        training_user_texts,
    )

    ds = _ml100k_like(tmp_path)
    data = make_split(ds, SplitSpec(), 3)
    assert data.n_users < ds.n_users  # the rating threshold drops some users from the split
    spec = TextSpec()
    items, users = training_texts(ds, data, spec)
    # the old builders: models.features._item_texts/_user_texts, embed.job.dataset_texts
    pairs = (data.user_ids[data.train[:, 0]], data.item_ids[data.train[:, 1]])
    old_items = build_item_texts(ds.items, spec, item_ids=int(ds.meta["n_items"]))
    old_users = build_user_texts(ds.users, pairs, ds.items, spec,
                                 user_ids=int(ds.meta["n_users"]))
    assert items.equals(old_items) and users.equals(old_users)
    assert items.text.tolist() == old_items.text.tolist()  # str equality, not just frame equality
    assert users.text.tolist() == old_users.text.tolist()
    assert item_texts(ds, spec).equals(items) and training_user_texts(ds, data, spec).equals(users)
    assert all(np.array_equal(a, b) for a, b in zip(training_pairs(data), pairs, strict=True))
    # augment.attributes.user_profiles built profiles for the split's users only: same texts
    local = build_user_texts(ds.users, pairs, ds.items, spec, user_ids=data.user_ids)
    by_id = dict(zip(users.id.tolist(), users.text.tolist(), strict=True))
    assert all(by_id[i] == t for i, t in zip(local.id.tolist(), local.text.tolist(), strict=True))
    # what the texts look like (the fixture is realistic, not empty)
    assert items.has_text.all() and users.has_text.all()
    assert items.text.iloc[1] == ("Film Number 1, The (1951). Genres: unknown, Documentary, "
                                  "Fantasy, Film-Noir, Thriller.")
    assert users.text.iloc[0].startswith("A 18-year-old M writer. Top genres: ")
    assert users.text.iloc[9] == "A 27-year-old F engineer."  # outside the split: no history
