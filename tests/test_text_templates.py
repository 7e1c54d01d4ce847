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
