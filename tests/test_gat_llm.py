"""GAT-LLM: spec variants, feature wiring, hard negatives (never positives), training."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recmind_dist.data.split import SplitData
from recmind_dist.errors import InputError
from recmind_dist.models.base import Batch
from recmind_dist.models.gat_llm import GATLLM, bipartite_edge_index
from recmind_dist.models.inputs import ModelInputs, NodeFeatures
from recmind_dist.models.registry import build_model, needed_inputs
from recmind_dist.specs import GATLLMSpec, parse_spec


def _data(n_users=40, n_items=60, per_user=8, seed=0) -> SplitData:
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):  # two taste groups: even users like low items, odd high items
        lo, hi = (0, n_items // 2) if u % 2 == 0 else (n_items // 2, n_items)
        rows += [(u, int(i)) for i in rng.choice(np.arange(lo, hi), per_user, replace=False)]
    pairs = np.array(rows, np.int64)
    rng.shuffle(pairs)
    n = len(pairs)
    return SplitData(n_users, n_items, pairs[: int(0.8 * n)], pairs[int(0.8 * n): int(0.9 * n)],
                     pairs[int(0.9 * n):], np.arange(n_users), np.arange(n_items), "k", 0)


def _features(data: SplitData, d=8) -> NodeFeatures:
    rng = np.random.default_rng(1)
    group_u = (np.arange(data.n_users) % 2)[:, None]
    group_i = (np.arange(data.n_items) >= data.n_items // 2)[:, None]
    base = rng.normal(size=(2, d))
    u = base[group_u[:, 0]] + 0.1 * rng.normal(size=(data.n_users, d))
    i = base[group_i[:, 0].astype(int)] + 0.1 * rng.normal(size=(data.n_items, d))
    return NodeFeatures(u, i, np.ones(data.n_users, bool), np.ones(data.n_items, bool))


def test_spec_variants_and_errors():
    s = parse_spec({"model": {"name": "gat_llm", "features": "id", "alpha": 0}}, "t")
    assert isinstance(s.model, GATLLMSpec) and not needed_inputs(s.model)
    assert needed_inputs(parse_spec({"model": {"name": "gat_llm"}}, "t").model)
    with pytest.raises(InputError, match="model"):
        parse_spec({"model": {"name": "gat_llm", "dim": 30, "heads": 4}}, "t")
    with pytest.raises(InputError, match="model.gat_llm.features"):
        parse_spec({"model": {"name": "gat_llm", "features": "both"}}, "t")
    data = _data()
    with pytest.raises(InputError, match="model.features"):
        build_model(parse_spec({"model": {"name": "gat_llm"}}, "t").model, data)


def test_edge_index_both_directions():
    ei = bipartite_edge_index(3, np.array([[0, 1], [2, 0]]))
    assert ei.tolist() == [[0, 2, 4, 3], [4, 3, 0, 2]]


@pytest.mark.parametrize("features", ["text", "id", "text_id"])
def test_forward_shapes_and_loss_parts(features):
    data = _data()
    spec = parse_spec({"model": {"name": "gat_llm", "features": features, "dim": 16,
                                 "heads": 2, "layers": 2}}, "t").model
    m = build_model(spec, data, ModelInputs(features=_features(data)), "cpu")
    u, i = m.representations()
    assert u.shape == (40, 16) and i.shape == (60, 16)
    b = Batch(torch.tensor([0, 1]), torch.tensor([3, 40]), torch.tensor([50, 2]))
    loss, parts = m.training_loss(b, 1)
    loss.backward()
    assert set(parts) == {"bpr", "cos", "reg"} and np.isfinite(float(loss))
    if features != "id":
        assert m.proj.weight.grad is not None and m.convs[0].lin.weight.grad is not None


def test_hard_negatives_exclude_positives_and_top_ranks():
    data = _data()
    m = GATLLM(data.n_users, data.n_items, data.train, None, GATLLMSpec(
        features="id", dim=8, heads=1, hard_negative_ratio=1.0, hard_negative_pool=10,
        hard_negative_skip=2, hard_negative_start=1, hard_negative_refresh=1))
    m.on_epoch_start(1, 1)
    assert m.hard_items.shape == (40, 10)
    pos = {(int(u), int(i)) for u, i in data.train}
    with torch.no_grad():
        hu, hi = m.representations()
    scores = hu @ hi.T
    for u in range(data.n_users):
        assert not any((u, int(j)) in pos for j in m.hard_items[u])
        s = scores[u].clone()
        s[[i for (uu, i) in pos if uu == u]] = -torch.inf
        top2 = set(s.topk(2).indices.tolist())
        assert not top2 & set(m.hard_items[u].tolist())  # skipped likely false negatives
    users = torch.as_tensor(data.train[:, 0])
    batch = Batch(users, torch.as_tensor(data.train[:, 1]), torch.zeros_like(users))
    neg = m.mix_negatives(batch)  # ratio 1: every negative is a mined one
    assert not any((int(u), int(j)) in pos for u, j in zip(users, neg, strict=True))
    m.hn_ratio = 0.0
    assert torch.equal(m.mix_negatives(batch), batch.neg)


def test_training_learns_groups_with_text_features():
    from recmind_dist.eval.evaluator import SplitEvaluator
    from recmind_dist.specs import EvalSpec, TrainSpec
    from recmind_dist.train.loop import seed_everything, train_model

    data = _data(per_user=10)
    seed_everything(0)
    spec = parse_spec({"model": {"name": "gat_llm", "features": "text", "dim": 16,
                                 "hard_negative_start": 2, "hard_negative_refresh": 2}}, "t")
    m = build_model(spec.model, data, ModelInputs(features=_features(data)), "cpu")
    ev = SplitEvaluator(data, EvalSpec(ks=[10]))
    before = ev.evaluate(m, "test")["recall_at_10"]
    r = train_model(m, data, TrainSpec(epochs=6, batch_size=64, lr=0.02, stop_metric="ndcg_at_10"),
                    ev, 0, progress=False)
    assert r.test["recall_at_10"] > max(before, 10 / 30 * 0.9)  # ~random within the group
    assert "train/cos" in r.history[-1]


def test_lm_written_profiles_become_features(tiny_dataset, tmp_path):
    from recmind_dist.data.split import make_split
    from recmind_dist.generation import Generator
    from recmind_dist.pipeline.features import profile_features
    from recmind_dist.specs import GenerateSpec, SplitSpec

    class Writer:  # a "generative LM": rewrites every other profile, garbage for the rest
        name, model_name = "fake", "writer"

        def generate(self, requests):
            return [f"A fan of {r.payload['facts'][:12]} things." if r.payload["id"] % 2 else
                    "###" for r in requests]

    data = make_split(tiny_dataset, SplitSpec(threshold=None), 0)
    gen = Generator(GenerateSpec(format_retries=0), backend=Writer())
    f = profile_features(tiny_dataset, data, gen, cache_root=tmp_path)
    assert f.user_vec.shape == (data.n_users, 384) and f.item_has_text.all()
    assert f.info["profiles_backend"] == "fake" and f.info["profiles_fallback"] == 35
    assert gen.stats["skipped"] == 35  # 15 users + 20 items answered "###": facts kept
    again = profile_features(tiny_dataset, data, gen, cache_root=tmp_path)  # cached vectors
    assert np.array_equal(again.item_vec, f.item_vec) and "profiles_fallback" not in again.info


def test_pipeline_uses_lm_written_profiles_when_the_spec_names_a_generator(tiny_dataset, tmp_path):
    """`model.profiles` routes GAT-LLM features through profile_features (offline backend)."""
    from recmind_dist.data.split import make_split
    from recmind_dist.pipeline import model_inputs
    from recmind_dist.specs import parse_spec

    spec = parse_spec({
        "data": {"source": None, "path": str(tiny_dataset.path), "cache_dir": str(tmp_path)},
        "split": {"threshold": None},
        "model": {"name": "gat_llm", "profiles": {"backend": "offline",
                                                  "cache_dir": str(tmp_path / "gen")}},
    }, "test")
    data = make_split(tiny_dataset, spec.split, spec.seed)
    feats = model_inputs(spec, tiny_dataset, data).features
    assert feats.info["profiles_backend"] == "offline"
    assert feats.item_vec.shape[0] == data.n_items and feats.item_has_text.all()
    plain = parse_spec({**spec.model_dump(mode="json"),
                        "model": {"name": "gat_llm"}}, "test")
    assert "profiles_backend" not in model_inputs(plain, tiny_dataset, data).features.info
