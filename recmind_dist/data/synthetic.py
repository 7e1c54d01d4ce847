"""Synthetic recommendation data with a latent topic structure, at any scale.

Model (all vectorised; 300k users / 700k items / 10M edges take about a minute):

* users and items get topic mixtures ``theta ~ Dirichlet`` (items peakier than users);
* item popularity follows a power law ``pop_i ∝ rank_i^-zipf_a`` (random ranks);
* user degrees follow a Pareto (power-law) distribution scaled to ``n_interactions``;
* an interaction of user ``u`` draws a topic ``k ~ theta_u`` and then an item with
  probability ``∝ pop_i * theta_ik`` - so ``P(i | u) ∝ pop_i * <theta_u, theta_i / Z>``.
  Both draws are one ``np.searchsorted`` into row-offset cumulative tables;
* repeated (user, item) pairs are removed and the missing draws re-sampled (a few rounds);
* ratings 1..5 grow with the affinity ``<theta_u, theta_i>`` (rank based, plus noise);
  each user's timestamps increase;
* item text (title, genres, description) is built from per-topic vocabularies of the
  item's dominant topics, user text (age group, region, interests) from the user's topics,
  so items sharing a topic share words.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from recmind_dist.data.schema import write_dataset
from recmind_dist.errors import InputError
from recmind_dist.io import check_output_dir

logger = logging.getLogger(__name__)

START_TIME = 1_600_000_000  # 2020-09-13, seconds
_USER_ALPHA = 0.3
_ITEM_ALPHA = 0.1
_TOPIC_ROUNDS = 6  # re-draw rounds by topic and popularity, then uniform ones:
_UNIFORM_ROUNDS = 60  # degrees <= n_items // 2, so each uniform draw is new with p >= 1/2
_CHUNK = 1 << 20

# (genre, adjectives, nouns); no word appears under two topics.
THEMES: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...] = (
    ("Space", ("cosmic", "stellar", "orbital", "galactic"),
     ("starship", "planet", "astronaut", "nebula", "galaxy", "rocket", "alien", "asteroid")),
    ("Romance", ("tender", "passionate", "romantic", "heartfelt"),
     ("love", "wedding", "kiss", "sweetheart", "romance", "heart", "date", "valentine")),
    ("Crime", ("gritty", "criminal", "corrupt", "noir"),
     ("detective", "heist", "gangster", "murder", "police", "mob", "robbery", "crime")),
    ("Fantasy", ("magical", "enchanted", "mythical", "ancient"),
     ("wizard", "dragon", "kingdom", "sorcery", "quest", "elf", "castle", "spell")),
    ("War", ("heroic", "brutal", "wartime", "tactical"),
     ("soldier", "battle", "army", "general", "war", "trench", "regiment", "siege")),
    ("Comedy", ("hilarious", "quirky", "goofy", "witty"),
     ("prank", "comedian", "joke", "sitcom", "parody", "farce", "blunder", "laugh")),
    ("Horror", ("haunted", "terrifying", "bloody", "eerie"),
     ("ghost", "zombie", "vampire", "monster", "curse", "nightmare", "demon", "slasher")),
    ("Sports", ("athletic", "competitive", "championship", "underdog"),
     ("team", "coach", "stadium", "football", "boxer", "tournament", "league", "athlete")),
    ("Music", ("melodic", "rhythmic", "soulful", "acoustic"),
     ("band", "concert", "singer", "guitar", "song", "album", "orchestra", "musician")),
    ("Western", ("dusty", "rugged", "frontier", "lawless"),
     ("cowboy", "sheriff", "ranch", "saloon", "desert", "horse", "gunslinger", "prairie")),
    ("Family", ("heartwarming", "playful", "gentle", "cheerful"),
     ("puppy", "family", "kid", "toy", "holiday", "grandma", "friendship", "treehouse")),
    ("Science", ("scientific", "technological", "robotic", "experimental"),
     ("robot", "scientist", "laboratory", "computer", "invention", "virus", "experiment",
      "algorithm")),
    ("History", ("historical", "royal", "imperial", "medieval"),
     ("king", "queen", "empire", "revolution", "dynasty", "knight", "emperor", "pharaoh")),
    ("Mystery", ("mysterious", "puzzling", "secretive", "cryptic"),
     ("clue", "riddle", "conspiracy", "secret", "disappearance", "spy", "cipher", "suspect")),
    ("Nature", ("wild", "tropical", "oceanic", "arctic"),
     ("jungle", "ocean", "wildlife", "mountain", "island", "forest", "whale", "expedition")),
    ("Drama", ("emotional", "tragic", "intimate", "bittersweet"),
     ("sibling", "grief", "memory", "betrayal", "redemption", "marriage", "sacrifice", "letter")),
)  # fmt: skip
AGE_GROUPS: tuple[str, ...] = ("18-24", "25-34", "35-44", "45-54", "55-64", "65+")
REGIONS: tuple[str, ...] = (
    "north", "south", "east", "west", "central", "coastal", "mountain", "islands",
)  # fmt: skip
_SYLLABLES = ("ka", "lo", "mi", "ren", "tas", "vu", "zor", "pel", "qui", "dan", "fey", "gor")


@dataclass(frozen=True)
class Vocabulary:
    """Per-topic genre names, adjectives (K x A) and nouns (K x N) as object arrays."""

    genres: np.ndarray
    adjectives: np.ndarray
    nouns: np.ndarray


def _pseudo_words(topic: int, count: int) -> list[str]:
    """Deterministic made-up words for topics beyond the built-in themes (unique per topic)."""
    rng = np.random.default_rng(10_000 + topic)
    return ["".join(rng.choice(_SYLLABLES, size=3)) + f"{topic}x{j}" for j in range(count)]


def build_vocabulary(n_topics: int) -> Vocabulary:
    """The first 16 topics use :data:`THEMES`; further topics get made-up words."""
    genres, adjectives, nouns = [], [], []
    for k in range(n_topics):
        if k < len(THEMES):
            genre, adj, noun = THEMES[k]
        else:
            genre, adj, noun = (
                f"Topic {k}",
                tuple(_pseudo_words(k, 4)),
                tuple(_pseudo_words(-k - 1, 8)),
            )
        genres.append(genre)
        adjectives.append(adj)
        nouns.append(noun)
    return Vocabulary(
        np.asarray(genres, dtype=object),
        np.asarray(adjectives, dtype=object),
        np.asarray(nouns, dtype=object),
    )


# ============================================================================================
# latent structure


def _check_params(n_users: int, n_items: int, n_interactions: int, n_topics: int) -> None:
    for name, value in (
        ("n_users", n_users),
        ("n_items", n_items),
        ("n_interactions", n_interactions),
        ("n_topics", n_topics),
    ):
        if int(value) < 1:
            raise InputError("generate_synthetic", name, f"must be >= 1, got {value}")
    most = n_users * max(1, n_items // 2)  # users' degrees are capped at n_items // 2
    if n_interactions > most:
        raise InputError("generate_synthetic", "n_interactions",
                         f"{n_interactions} interactions do not fit {n_users} users x {n_items} "
                         f"items (at most {max(1, n_items // 2)} per user, {most} in all)")


def _item_popularity(rng: np.random.Generator, n_items: int, zipf_a: float) -> np.ndarray:
    ranks = rng.permutation(n_items) + 1
    return ranks.astype(np.float64) ** -zipf_a


def _user_degrees(
    rng: np.random.Generator, n_users: int, n_items: int, n_interactions: int, degree_a: float
) -> np.ndarray:
    """Pareto-distributed degrees summing to ``n_interactions``.

    Each user gets at least one interaction (when there are enough) and at most
    ``max(1, n_items // 2)``; what the cap cuts off is handed to the other users.
    """
    cap = max(1, n_items // 2)
    total = min(n_interactions, n_users * cap)
    base = 1 if total >= n_users else 0
    weights = rng.pareto(degree_a, n_users) + 1.0
    degrees = np.full(n_users, base, dtype=np.int64)
    for _ in range(64):  # water-filling: each pass fills users below the cap
        left = total - int(degrees.sum())
        open_users = degrees < cap
        if left <= 0 or not open_users.any():
            break
        share = np.where(open_users, weights, 0.0)
        extra = share / share.sum() * left
        add = np.floor(extra).astype(np.int64)
        remainder = left - int(add.sum())
        if remainder > 0:
            add[np.argsort(-(extra - add), kind="stable")[:remainder]] += 1
        degrees = np.minimum(degrees + add, cap)
    return degrees


def _row_cumulative(weights: np.ndarray) -> np.ndarray:
    """Row-wise cumulative distribution with row offsets: row r spans (r, r + 1]."""
    cum = np.cumsum(weights / weights.sum(axis=1, keepdims=True), axis=1)
    cum[:, -1] = 1.0
    cum += np.arange(len(cum), dtype=np.float64)[:, None]
    return cum.ravel()


def _draw_rows(
    rng: np.random.Generator, table: np.ndarray, rows: np.ndarray, width: int
) -> np.ndarray:
    """For each row index, draw a column from the row's distribution in a flattened table."""
    out = np.empty(len(rows), dtype=np.int64)
    for start in range(0, len(rows), _CHUNK):
        r = rows[start : start + _CHUNK]
        pos = np.searchsorted(table, r + rng.random(len(r)), side="right")
        out[start : start + _CHUNK] = np.minimum(pos - r * width, width - 1)
    return out


@dataclass
class _Latent:
    theta_users: np.ndarray  # (n_users, K) float64
    theta_items: np.ndarray  # (n_items, K) float64
    user_topic_table: np.ndarray  # flattened row-offset cumulative (n_users * K)
    topic_item_table: np.ndarray  # flattened row-offset cumulative (K * n_items)


def _latent(
    rng: np.random.Generator, n_users: int, n_items: int, n_topics: int, zipf_a: float
) -> _Latent:
    theta_u = rng.dirichlet(np.full(n_topics, _USER_ALPHA), size=n_users)
    theta_i = rng.dirichlet(np.full(n_topics, _ITEM_ALPHA), size=n_items)
    # Dirichlet with tiny alpha can underflow to all-zero rows; fall back to one random topic.
    for theta in (theta_u, theta_i):
        empty = ~np.isfinite(theta).all(axis=1) | (theta.sum(axis=1) <= 0)
        if empty.any():
            theta[empty] = np.eye(n_topics)[rng.integers(n_topics, size=int(empty.sum()))]
    popularity = _item_popularity(rng, n_items, zipf_a)
    topic_item = (theta_i * popularity[:, None]).T + 1e-300
    return _Latent(theta_u, theta_i, _row_cumulative(theta_u), _row_cumulative(topic_item))


# ============================================================================================
# interactions


def _sample_pairs(
    rng: np.random.Generator, latent: _Latent, need: np.ndarray, n_items: int, uniform: bool
) -> np.ndarray:
    """Draw ``need[u]`` (user, item) pairs per user; return packed keys ``u * n_items + i``.

    ``uniform`` draws items uniformly instead of by topic and popularity (the last re-draws
    for users whose few likely items are exhausted).
    """
    n_topics = latent.theta_users.shape[1]
    users = np.repeat(np.arange(len(need), dtype=np.int64), need)
    if uniform:
        items = rng.integers(n_items, size=len(users))
    else:
        topics = _draw_rows(rng, latent.user_topic_table, users, n_topics)
        items = _draw_rows(rng, latent.topic_item_table, topics, n_items)
    return users * n_items + items


def _sorted_unique(values: np.ndarray) -> np.ndarray:
    """Sorted distinct values (sort based; numpy's hash-based unique is slower on int64)."""
    ordered = np.sort(values)
    if len(ordered) == 0:
        return ordered
    return ordered[np.concatenate([[True], ordered[1:] != ordered[:-1]])]


def _merge_new(keys: np.ndarray, new: np.ndarray) -> np.ndarray:
    """Sorted union of sorted unique ``keys`` and arbitrary ``new`` keys."""
    new = _sorted_unique(new)
    if len(keys):
        pos = np.minimum(np.searchsorted(keys, new), len(keys) - 1)
        new = new[keys[pos] != new]
    return np.sort(np.concatenate([keys, new]), kind="stable")  # two sorted runs: linear


def _sample_unique_keys(
    rng: np.random.Generator, latent: _Latent, degrees: np.ndarray, n_items: int
) -> np.ndarray:
    """Sorted unique pair keys with ``degrees[u]`` pairs per user (duplicates re-drawn)."""
    keys = np.empty(0, dtype=np.int64)
    need = degrees.copy()
    for round_no in range(_TOPIC_ROUNDS + _UNIFORM_ROUNDS):
        uniform = round_no >= _TOPIC_ROUNDS
        keys = _merge_new(keys, _sample_pairs(rng, latent, need, n_items, uniform))
        have = np.bincount(keys // n_items, minlength=len(degrees))
        need = np.maximum(degrees - have, 0)
        logger.debug("synthetic round %d: %d pairs, %d short", round_no, len(keys), need.sum())
        if not need.any():
            break
    if need.any():
        logger.info("synthetic: %d interactions short of the target after re-draws", need.sum())
    return keys


def _affinity(latent: _Latent, users: np.ndarray, items: np.ndarray) -> np.ndarray:
    out = np.empty(len(users), dtype=np.float64)
    for start in range(0, len(users), _CHUNK):
        sl = slice(start, start + _CHUNK)
        out[sl] = np.einsum(
            "ij,ij->i", latent.theta_users[users[sl]], latent.theta_items[items[sl]]
        )
    return out


def _ratings(rng: np.random.Generator, affinity: np.ndarray) -> np.ndarray:
    """1..5 stars increasing with the affinity's rank (mean about 3.5), plus noise."""
    ranks = np.empty(len(affinity), dtype=np.float64)
    ranks[np.argsort(affinity, kind="stable")] = np.arange(len(affinity))
    quantile = (ranks + 0.5) / len(affinity)
    noisy = 1.0 + 4.0 * quantile**0.6 + rng.normal(0.0, 0.6, len(affinity))
    return np.clip(np.rint(noisy), 1, 5)


def _timestamps(rng: np.random.Generator, users: np.ndarray, n_users: int) -> np.ndarray:
    """Strictly increasing timestamps within each user (rows grouped by user)."""
    counts = np.bincount(users, minlength=n_users)
    user_start = rng.integers(0, 2 * 365 * 86_400, size=n_users)
    gaps = rng.exponential(2 * 86_400, size=len(users)).astype(np.int64) + 1
    cum = np.cumsum(gaps)
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])
    offset = np.repeat(cum[first[counts > 0]] - gaps[first[counts > 0]], counts[counts > 0])
    return START_TIME + user_start[users] + (cum - offset)


def _interactions(
    rng: np.random.Generator, latent: _Latent, degrees: np.ndarray, n_items: int
) -> pd.DataFrame:
    keys = _sample_unique_keys(rng, latent, degrees, n_items)
    users, items = keys // n_items, keys % n_items
    del keys
    # rows grouped by user, in random (= time) order within the user
    order = np.argsort(users + rng.random(len(users)), kind="stable")
    users, items = users[order], items[order]
    ratings = _ratings(rng, _affinity(latent, users, items))
    stamps = _timestamps(rng, users, len(degrees))
    return pd.DataFrame({"user": users, "item": items, "rating": ratings, "timestamp": stamps})


# ============================================================================================
# text


def _top_topics(theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Dominant and second topic per row (the same topic twice when there is only one)."""
    order = np.argsort(-theta, axis=1, kind="stable")
    return order[:, 0], order[:, min(1, theta.shape[1] - 1)]


def _pick(rng: np.random.Generator, table: np.ndarray, topics: np.ndarray) -> np.ndarray:
    """One random word per row from ``table[topic]``."""
    return table[topics, rng.integers(table.shape[1], size=len(topics))]


def _pick_distinct(
    rng: np.random.Generator, table: np.ndarray, topics: np.ndarray, count: int
) -> list[np.ndarray]:
    """``count`` different words per row from ``table[topic]`` (count <= table width)."""
    columns = np.argsort(rng.random((len(topics), table.shape[1])), axis=1)[:, :count]
    return [table[topics, columns[:, j]] for j in range(count)]


def _article(words: np.ndarray) -> np.ndarray:
    """ "An " before a vowel, else "A " (per word)."""
    vowel = np.isin(np.asarray([w[:1] for w in words], dtype=object), list("aeiou"))
    return np.where(vowel, "An ", "A ").astype(object)


def _items_table(rng: np.random.Generator, theta: np.ndarray, vocab: Vocabulary) -> pd.DataFrame:
    first, second = _top_topics(theta)
    strong_second = theta[np.arange(len(theta)), second] >= 0.25
    adj1 = _pick(rng, vocab.adjectives, first)
    noun1, noun2, noun3 = _pick_distinct(rng, vocab.nouns, first, 3)
    adj2, noun4 = _pick(rng, vocab.adjectives, second), _pick(rng, vocab.nouns, second)
    capitalise = np.vectorize(str.capitalize, otypes=[object])
    title = "The " + capitalise(adj1) + " " + capitalise(noun1)
    description = (
        _article(adj1) + adj1 + " " + noun1 + " story about a " + noun2 + " and a " + noun3
        + ", with " + adj2 + " " + noun4 + " along the way."
    )  # fmt: skip
    genres = np.where(
        strong_second, vocab.genres[first] + ", " + vocab.genres[second], vocab.genres[first]
    )
    return pd.DataFrame(
        {"id": np.arange(len(theta), dtype=np.int64), "title": title, "genres": genres,
         "description": description}
    )  # fmt: skip


def _users_table(rng: np.random.Generator, theta: np.ndarray, vocab: Vocabulary) -> pd.DataFrame:
    first, second = _top_topics(theta)
    n = len(theta)
    ages = np.asarray(AGE_GROUPS, dtype=object)
    regions = np.asarray(REGIONS, dtype=object)
    correlated = rng.random(n) < 0.5  # half the users' age group follows their main topic
    age_idx = np.where(correlated, first % len(ages), rng.integers(len(ages), size=n))
    noun1, noun2 = _pick_distinct(rng, vocab.nouns, first, 2)
    interests = (
        "Enjoys " + noun1 + ", " + noun2 + " and " + _pick(rng, vocab.nouns, second) + " stories ("
        + vocab.genres[first] + ", " + vocab.genres[second] + ")"
    )  # fmt: skip
    return pd.DataFrame(
        {"id": np.arange(n, dtype=np.int64), "age_group": ages[age_idx],
         "region": regions[rng.integers(len(regions), size=n)], "interests": interests}
    )  # fmt: skip


def _raw_ids(prefix: str, n: int) -> np.ndarray:
    return np.char.add(prefix, np.arange(n).astype(str)).astype(object)


# ============================================================================================
# entry point


def generate_synthetic(
    out_dir: str | Path,
    n_users: int,
    n_items: int,
    n_interactions: int,
    n_topics: int = 16,
    seed: int = 0,
    zipf_a: float = 0.8,
    degree_a: float = 1.5,
) -> Path:
    """Generate a synthetic dataset and write it as a canonical directory; return its path.

    ``zipf_a`` is the item-popularity exponent and ``degree_a`` the Pareto tail index of user
    degrees. The number of interactions equals ``n_interactions`` unless the catalogue is too
    small for that many distinct pairs (users' degrees are capped at ``n_items // 2``).
    Deterministic in ``seed``. Raw ids are ``u<k>`` / ``i<k>``.
    """
    _check_params(n_users, n_items, n_interactions, n_topics)
    check_output_dir(out_dir)
    rng = np.random.default_rng(seed)
    latent = _latent(rng, n_users, n_items, n_topics, zipf_a)
    degrees = _user_degrees(rng, n_users, n_items, n_interactions, degree_a)
    interactions = _interactions(rng, latent, degrees, n_items)
    vocab = build_vocabulary(n_topics)
    items = _items_table(rng, latent.theta_items, vocab)
    users = _users_table(rng, latent.theta_users, vocab)
    del latent
    params = {
        "n_topics": n_topics, "seed": seed, "zipf_a": zipf_a, "degree_a": degree_a,
        "requested_interactions": n_interactions,
    }  # fmt: skip
    return write_dataset(
        out_dir, interactions, users, items, _raw_ids("u", n_users), _raw_ids("i", n_items),
        source="synthetic", extra_meta={"generator": params},
    )  # fmt: skip
