"""Cache and artefact keys go through ``stable_hash`` and keep the values of the private
sha256-of-JSON helpers they replaced (existing caches must still hit)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from recmind_dist.augment.artifact import ARTIFACT_VERSION, artifact_key
from recmind_dist.hashing import stable_hash
from recmind_dist.pipeline.features import feature_cache_keys
from recmind_dist.specs import EmbedSpec, TextSpec


def _old_sorted_h(obj, n: int = 16) -> str:
    """models.features._h / augment.artifact._h before they became stable_hash."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:n]


def test_stable_hash_is_pinned() -> None:
    assert stable_hash({"b": [1, 2], "a": "x"}) == stable_hash({"a": "x", "b": [1, 2]})
    assert stable_hash({"b": [1, 2], "a": "x"}) == hashlib.sha256(
        b'{"a": "x", "b": [1, 2]}').hexdigest()[:16]
    assert stable_hash({"p": Path("/a")}, 8) == hashlib.sha256(b'{"p": "/a"}').hexdigest()[:8]


def test_feature_cache_keys_unchanged() -> None:
    for text, embed in [(TextSpec(), EmbedSpec(model="/models/minilm")),
                        (TextSpec(top_genres=2), EmbedSpec(model="m", max_texts=5))]:
        emb = {"fp": embed.fingerprint(embed.model), "max_texts": embed.max_texts}
        t = text.model_dump(mode="json")
        assert feature_cache_keys("abc123", "split9", text, embed) == (
            _old_sorted_h({"ds": "abc123", "item_template": text.item_template, "embed": emb}),
            _old_sorted_h({"ds": "abc123", "split": "split9", "text": t, "embed": emb}))


def test_item_key_ignores_user_profile_settings() -> None:
    """Item texts come from item_template alone: a user-profile setting re-keys the users only
    (700k cached item vectors survive a change of max_history_titles); item_template re-keys
    the items."""
    embed = EmbedSpec(model="m")
    items, users = feature_cache_keys("ds", "s", TextSpec(), embed)
    for change in ({"max_history_titles": 0}, {"top_genres": 1}, {"user_template": "{age}."}):
        other_items, other_users = feature_cache_keys("ds", "s", TextSpec(**change), embed)
        assert other_items == items and other_users != users, change
    assert feature_cache_keys("ds", "s", TextSpec(item_template="{title}."), embed)[0] != items
    assert feature_cache_keys("ds", "other", TextSpec(), embed)[0] == items  # not the split


def test_artifact_key_unchanged() -> None:
    inputs = {"ds": "abc", "split": "k", "candidates": 3, "base": Path("/runs/1")}
    assert artifact_key(inputs) == _old_sorted_h({"version": ARTIFACT_VERSION, **inputs})


def test_profile_key_list_form_unchanged() -> None:
    """gat_llm.profile_features hashed json.dumps([user key, backend, model]) (no sort_keys,
    no default): a list of strings/None serialises to the same bytes under stable_hash."""
    for parts in (["760976de647cdd9b", "offline", "template"], ["k", "hf", None]):
        old = hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]
        assert stable_hash(parts) == old


def test_default_encoder_key_does_not_depend_on_the_venv() -> None:
    """The bundled MiniLM counts as its hub id: two venvs (checkout, Ray job, fresh clone)
    share one feature cache."""
    from recmind_dist.embed.encoder import MINILM_HUB_ID

    assert feature_cache_keys("abc", "s", TextSpec(), EmbedSpec()) == feature_cache_keys(
        "abc", "s", TextSpec(), EmbedSpec(model=MINILM_HUB_ID))
