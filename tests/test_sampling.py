import numpy as np
import pytest

from recmind_dist.sampling import NegativeSampler


def test_negatives_are_never_positives():
    rng = np.random.default_rng(0)
    n_users, n_items = 50, 30
    # dense users (25 of 30 items) stress the rejection loop
    pairs = np.array([(u, i) for u in range(n_users) for i in rng.choice(n_items, 25, False)])
    sampler = NegativeSampler(n_items, pairs)
    users = np.repeat(np.arange(n_users), 200)
    neg = sampler.sample(users, rng)
    pos = {(int(u), int(i)) for u, i in pairs}
    assert not any((int(u), int(j)) in pos for u, j in zip(users, neg, strict=True))
    assert neg.min() >= 0 and neg.max() < n_items
    # every non-positive item of user 0 is reachable
    assert set(neg[users == 0]) == set(range(n_items)) - {i for u, i in pos if u == 0}


def test_sampler_is_seedable():
    pairs = np.array([[0, 1], [1, 2], [2, 0]])
    s = NegativeSampler(10, pairs)
    users = np.arange(3).repeat(10)
    a = s.sample(users, np.random.default_rng(5))
    b = s.sample(users, np.random.default_rng(5))
    np.testing.assert_array_equal(a, b)


def test_user_with_every_item_is_an_error():
    with pytest.raises(ValueError, match="every item"):
        NegativeSampler(2, np.array([[0, 0], [0, 1]]))
