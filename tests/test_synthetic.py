"""Synthetic generator: shape, determinism, power laws and the text signal."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from recmind_dist.data import generate_synthetic, load_dataset
from recmind_dist.data.schema import Dataset
from recmind_dist.data.synthetic import THEMES, build_vocabulary
from recmind_dist.errors import InputError


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    path = tmp_path_factory.mktemp("synth") / "ds"
    return load_dataset(generate_synthetic(path, 400, 1000, 12_000, seed=7))


def test_shape_and_columns(synth: Dataset) -> None:
    inter = synth.interactions
    assert (synth.n_users, synth.n_items, len(inter)) == (400, 1000, 12_000)
    assert not inter.duplicated(["user", "item"]).any()
    assert set(np.unique(inter["rating"])) <= {1.0, 2.0, 3.0, 4.0, 5.0}
    assert inter["user"].nunique() == 400  # every user has at least one interaction
    assert synth.items is not None and synth.users is not None
    assert synth.meta["text_columns"] == {
        "items": ["title", "genres", "description"],
        "users": ["age_group", "region", "interests"],
    }
    assert synth.meta["source"] == "synthetic" and synth.meta["generator"]["seed"] == 7


def test_timestamps_increase_within_each_user(synth: Dataset) -> None:
    inter = synth.interactions
    diffs = inter.groupby("user")["timestamp"].diff().dropna()
    assert (diffs > 0).all()


def test_power_laws(synth: Dataset) -> None:
    inter = synth.interactions
    item_deg = np.sort(np.bincount(inter["item"], minlength=synth.n_items))[::-1]
    user_deg = np.sort(np.bincount(inter["user"], minlength=synth.n_users))[::-1]
    # the top 10% of items / users hold far more than 10% of the interactions
    assert item_deg[:100].sum() > 0.3 * len(inter)
    assert user_deg[:40].sum() > 0.2 * len(inter)


def test_same_seed_same_checksum(tmp_path: Path) -> None:
    a = load_dataset(generate_synthetic(tmp_path / "a", 100, 200, 2_000, seed=3))
    b = load_dataset(generate_synthetic(tmp_path / "b", 100, 200, 2_000, seed=3))
    c = load_dataset(generate_synthetic(tmp_path / "c", 100, 200, 2_000, seed=4))
    assert a.checksum == b.checksum
    assert a.items is not None and b.items is not None
    assert a.items.equals(b.items)
    assert a.checksum != c.checksum


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text.lower())) - {"a", "an", "the", "and", "with", "story",
                                                       "about", "along", "way"}  # fmt: skip


def test_text_carries_topic_signal(synth: Dataset) -> None:
    assert synth.items is not None
    words = [_words(t) for t in synth.items["description"]]
    main_genre = synth.items["genres"].str.split(", ").str[0].to_numpy()
    rng = np.random.default_rng(0)
    pairs = rng.integers(0, synth.n_items, size=(4000, 2))
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    same = main_genre[pairs[:, 0]] == main_genre[pairs[:, 1]]

    def jaccard(i: int, j: int) -> float:
        return len(words[i] & words[j]) / len(words[i] | words[j])

    scores = np.array([jaccard(i, j) for i, j in pairs])
    assert same.sum() > 50
    assert scores[same].mean() > 3 * scores[~same].mean()


def test_users_prefer_items_of_their_topics(synth: Dataset) -> None:
    """Interacted items share a genre with the user's interests more often than chance."""
    assert synth.items is not None and synth.users is not None
    user_genres = synth.users["interests"].str.extract(r"\((.*)\)")[0].str.split(", ")
    item_genre = synth.items["genres"].str.split(", ").str[0].to_numpy()
    inter = synth.interactions
    hits = np.array(
        [item_genre[i] in user_genres[u] for u, i in zip(inter["user"], inter["item"], strict=True)]
    )
    rng = np.random.default_rng(1)
    random_items = rng.integers(0, synth.n_items, size=len(inter))
    chance = np.array(
        [item_genre[i] in user_genres[u] for u, i in zip(inter["user"], random_items, strict=True)]
    )
    assert hits.mean() > 1.5 * chance.mean()


def test_vocabulary_words_are_topic_specific() -> None:
    vocab = build_vocabulary(20)
    seen: dict[str, int] = {}
    for k in range(20):
        for word in [*vocab.adjectives[k], *vocab.nouns[k]]:
            assert seen.setdefault(word, k) == k, f"{word} in topics {seen[word]} and {k}"
    assert vocab.genres[0] == THEMES[0][0] and vocab.genres[19] == "Topic 19"


@pytest.mark.parametrize("n_topics", [1, 20])
def test_unusual_topic_counts(tmp_path: Path, n_topics: int) -> None:
    ds = load_dataset(generate_synthetic(tmp_path / "ds", 30, 40, 300, n_topics=n_topics))
    assert len(ds.interactions) == 300


def test_small_catalogue_caps_degrees(tmp_path: Path) -> None:
    ds = load_dataset(generate_synthetic(tmp_path / "ds", 5, 4, 10))
    assert len(ds.interactions) == 5 * 2  # at most n_items // 2 items per user
    # asking for more than fits is an error naming the cause, not a silently smaller dataset
    with pytest.raises(InputError) as exc:
        generate_synthetic(tmp_path / "more", 5, 4, 100)
    assert exc.value.field == "n_interactions" and "at most 2 per user" in str(exc.value)
    assert not (tmp_path / "more").exists()


@pytest.mark.parametrize("field", ["n_users", "n_items", "n_interactions", "n_topics"])
def test_bad_parameters(tmp_path: Path, field: str) -> None:
    args = {"n_users": 10, "n_items": 10, "n_interactions": 10, "n_topics": 2, field: 0}
    with pytest.raises(InputError) as exc:
        generate_synthetic(tmp_path / "ds", **args)
    assert exc.value.field == field
