import numpy as np
import pytest

from recmind_dist.data.split import make_split, write_split
from recmind_dist.specs import SplitSpec


def _pairs(a: np.ndarray, data) -> set[tuple[int, int]]:
    return {(int(data.user_ids[u]), int(data.item_ids[i])) for u, i in a}


@pytest.mark.parametrize("protocol", ["random", "temporal", "leave_one_out", "cold_item"])
def test_split_no_leakage_and_deterministic(tiny_dataset, protocol):
    spec = SplitSpec(threshold=None, protocol=protocol, cold_fraction=0.2)
    a = make_split(tiny_dataset, spec, seed=3)
    b = make_split(tiny_dataset, spec, seed=3)
    tr, va, te = _pairs(a.train, a), _pairs(a.valid, a), _pairs(a.test, a)
    assert not (tr & va) and not (tr & te) and not (va & te)
    assert len(tr) + len(va) + len(te) == len(tiny_dataset.interactions)
    for name in ("train", "valid", "test"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert a.key == b.key
    c = make_split(tiny_dataset, spec, seed=4)
    assert c.key != a.key


def test_random_split_ratios_per_user(tiny_dataset):
    data = make_split(tiny_dataset, SplitSpec(threshold=None), seed=0)
    # 12 interactions per user: floor(1.2) = 1 valid, 1 test, 10 train
    assert np.all(np.bincount(data.test[:, 0]) == 1)
    assert np.all(np.bincount(data.valid[:, 0]) == 1)
    assert np.all(np.bincount(data.train[:, 0]) == 10)


def test_temporal_split_puts_latest_in_test(tiny_dataset):
    data = make_split(tiny_dataset, SplitSpec(threshold=None, protocol="temporal"), seed=0)
    df = tiny_dataset.interactions.set_index(["user", "item"])["timestamp"]
    for u in range(5):
        cu = data.user_ids[u]
        t_train = [df[(cu, data.item_ids[i])] for i in data.train[data.train[:, 0] == u, 1]]
        t_test = [df[(cu, data.item_ids[i])] for i in data.test[data.test[:, 0] == u, 1]]
        assert max(t_train) < min(t_test)


def test_cold_item_split_has_no_training_edge(tiny_dataset):
    data = make_split(tiny_dataset, SplitSpec(threshold=None, protocol="cold_item",
                                              cold_fraction=0.25), seed=1)
    assert len(data.cold_items) == 10
    assert not np.isin(data.train[:, 1], data.cold_items).any()
    held = np.concatenate([data.valid[:, 1], data.test[:, 1]])
    assert np.isin(data.cold_items, held).all()


def test_threshold_and_reindex(tiny_dataset):
    data = make_split(tiny_dataset, SplitSpec(threshold=4.0), seed=0)
    kept = tiny_dataset.interactions[tiny_dataset.interactions.rating >= 4]
    assert data.n_items == kept.item.nunique()
    assert data.n_users == kept.user.nunique()
    total = len(data.train) + len(data.valid) + len(data.test)
    assert total == len(kept)


def test_empty_after_filter_is_clear_error(tiny_dataset):
    from recmind_dist.errors import InputError

    with pytest.raises(InputError, match="interactions.parquet.*rating.*no interactions left"):
        make_split(tiny_dataset, SplitSpec(threshold=99.0), seed=0)


def test_split_files_are_plain_parquet(tiny_dataset):
    import pandas as pd

    data = make_split(tiny_dataset, SplitSpec(threshold=None), seed=0)
    out = write_split(data, tiny_dataset.path)
    test = pd.read_parquet(out / "test.parquet")
    assert set(map(tuple, test.to_numpy())) == _pairs(data.test, data)
