"""Short real training runs on synthetic data."""

import numpy as np
import pytest

from recmind_dist.data.schema import load_dataset
from recmind_dist.data.split import make_split
from recmind_dist.data.synthetic import generate_synthetic
from recmind_dist.eval.evaluator import SplitEvaluator
from recmind_dist.models.registry import build_model
from recmind_dist.specs import EvalSpec, LightGCNSpec, MFSpec, PopularitySpec, SplitSpec, TrainSpec
from recmind_dist.train.loop import seed_everything, train_model


@pytest.fixture(scope="module")
def synth_split(tmp_path_factory):
    out = tmp_path_factory.mktemp("syn") / "ds"
    generate_synthetic(out, n_users=600, n_items=800, n_interactions=24000, n_topics=8, seed=1,
                       zipf_a=0.5)
    return make_split(load_dataset(out), SplitSpec(threshold=None), seed=0)


def _run(spec, data, epochs=25, lr=5e-3, seed=0):
    seed_everything(seed)
    model = build_model(spec, data)
    ev = SplitEvaluator(data, EvalSpec(ks=[20]))
    res = train_model(model, data, TrainSpec(epochs=epochs, lr=lr, patience=100), ev, seed,
                      progress=False)
    return res, model


def test_lightgcn_and_mf_clearly_beat_popularity(synth_split):
    pop, _ = _run(PopularitySpec(), synth_split)
    lgcn, _ = _run(LightGCNSpec(dim=32, layers=2), synth_split, epochs=20, lr=1e-2)
    mf, _ = _run(MFSpec(dim=32), synth_split, epochs=20, lr=1e-2)
    base = pop.best_valid["ndcg_at_20"]
    assert lgcn.best_valid["ndcg_at_20"] > 1.3 * base, (lgcn.best_valid, base)
    assert mf.best_valid["ndcg_at_20"] > base, (mf.best_valid, base)
    # test metrics come from the best-validation epoch's parameters
    assert 1 <= lgcn.best_epoch <= 20
    assert lgcn.history[lgcn.best_epoch - 1]["valid/ndcg_at_20"] == pytest.approx(
        lgcn.best_valid["ndcg_at_20"]
    )


def test_training_is_reproducible(synth_split):
    a, ma = _run(LightGCNSpec(dim=16, layers=1), synth_split, epochs=3)
    b, mb = _run(LightGCNSpec(dim=16, layers=1), synth_split, epochs=3)
    # same seed, same spec: same trajectory. Multi-threaded CPU scatter-adds may sum in another
    # order, so parameters agree to float round-off rather than bit for bit.
    for (ka, va), (kb, vb) in zip(ma.state_dict().items(), mb.state_dict().items(), strict=True):
        assert ka == kb
        np.testing.assert_allclose(va.numpy(), vb.numpy(), rtol=0, atol=1e-5)
    assert a.test.keys() == b.test.keys()
    np.testing.assert_allclose([a.test[k] for k in a.test], [b.test[k] for k in a.test],
                               rtol=0, atol=1e-3)
    c, _ = _run(LightGCNSpec(dim=16, layers=1), synth_split, epochs=3, seed=1)
    assert c.test["ndcg_at_20"] != a.test["ndcg_at_20"]


def test_early_stopping_keeps_best_state(synth_split):
    seed_everything(0)
    model = build_model(LightGCNSpec(dim=16, layers=1), synth_split)
    ev = SplitEvaluator(synth_split, EvalSpec(ks=[20]))
    snapshots = {}  # epoch -> the parameters as that epoch left them (independent of the tracker)

    def snapshot(epoch, _row, m):
        snapshots[epoch] = {k: v.detach().numpy().copy() for k, v in m.named_parameters()}

    # an absurd learning rate makes validation worse after the first epochs
    res = train_model(model, synth_split, TrainSpec(epochs=40, lr=0.5, patience=3), ev, 0,
                      on_epoch=snapshot, progress=False)
    assert res.epochs_run < 40 and "no ndcg_at_20 improvement" in res.stop_reason
    # the best epoch is the first maximum of the validation history, and training stopped
    # `patience` validations after it
    valid = [row["valid/ndcg_at_20"] for row in res.history]
    assert len(valid) == res.epochs_run
    assert res.best_epoch == 1 + int(np.argmax(valid))
    assert res.epochs_run == res.best_epoch + 3
    assert res.best_valid["ndcg_at_20"] == pytest.approx(valid[res.best_epoch - 1])
    # the returned model holds the best epoch's parameters, not the last epoch's
    final = {k: v.detach().numpy() for k, v in model.named_parameters()}
    assert final.keys() == snapshots[res.best_epoch].keys()
    for k, v in snapshots[res.best_epoch].items():
        np.testing.assert_array_equal(final[k], v, err_msg=k)
    assert any(not np.array_equal(final[k], v) for k, v in snapshots[res.epochs_run].items())
    again = ev.evaluate(model, "valid", buckets=False)
    assert again["ndcg_at_20"] == pytest.approx(res.best_valid["ndcg_at_20"])
