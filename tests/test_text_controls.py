"""Language-view controls: shuffled texts keep the vectors but not who they describe; random
vectors keep shape, norms and has_text but nothing of the texts."""

from __future__ import annotations

import numpy as np
import pytest

from recmind_dist.errors import InputError
from recmind_dist.models.inputs import NodeFeatures
from recmind_dist.models.text_controls import apply_text_control
from recmind_dist.specs import parse_spec


def _features() -> NodeFeatures:
    rng = np.random.default_rng(0)
    uhas, ihas = rng.random(20) > 0.3, rng.random(30) > 0.3
    uv = rng.normal(size=(20, 8)) * uhas[:, None]
    iv = rng.normal(size=(30, 8)) * ihas[:, None]
    return NodeFeatures(uv, iv, uhas, ihas, user_text=[f"u{i}" for i in range(20)],
                        item_text=[f"i{i}" for i in range(30)])


def test_none_is_identity():
    f = _features()
    assert apply_text_control(f, "none", 1) is f


def test_shuffled_permutes_each_type_consistently():
    f = _features()
    g = apply_text_control(f, "shuffled", 1)
    for vec, has, text, vec0, has0, text0 in (
        (g.user_vec, g.user_has_text, g.user_text, f.user_vec, f.user_has_text, f.user_text),
        (g.item_vec, g.item_has_text, g.item_text, f.item_vec, f.item_has_text, f.item_text),
    ):
        perm = np.array([int(t[1:]) for t in text])  # which node's text each node now holds
        assert sorted(perm) == list(range(len(perm))) and (perm != np.arange(len(perm))).any()
        np.testing.assert_array_equal(vec, vec0[perm])
        np.testing.assert_array_equal(has, has0[perm])
    again = apply_text_control(f, "shuffled", 1)
    np.testing.assert_array_equal(again.item_vec, g.item_vec)  # seeded
    assert not np.array_equal(apply_text_control(f, "shuffled", 2).item_vec, g.item_vec)


def test_random_keeps_shape_norms_and_mask_only():
    f = _features()
    g = apply_text_control(f, "random", 1)
    for vec, vec0, has in ((g.user_vec, f.user_vec, f.user_has_text),
                           (g.item_vec, f.item_vec, f.item_has_text)):
        assert vec.shape == vec0.shape and vec.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(vec, axis=1), np.linalg.norm(vec0, axis=1),
                                   rtol=1e-5, atol=1e-6)
        assert not vec[~has].any()
        cos = (vec[has] * vec0[has]).sum(1) / np.linalg.norm(vec0[has], axis=1) ** 2
        assert np.abs(cos).mean() < 0.5  # unrelated directions
    np.testing.assert_array_equal(g.user_has_text, f.user_has_text)


def test_spec_refuses_random_vectors_with_the_lora_encoder():
    with pytest.raises(InputError, match="text_control"):
        parse_spec({"model": {"name": "recmind", "encoder": "lora", "text_control": "random"}},
                   "t")
