"""RecMind: gate, fallback, exact reduction to LightGCN, phases, probe, cold items."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from recmind_dist.data.split import SplitData
from recmind_dist.eval.gate_probe import gate_summary, probe_report
from recmind_dist.graph.adjacency import normalized_adjacency, normalized_degree
from recmind_dist.graph.propagate import layer_mean, lightgcn_layers
from recmind_dist.losses import bpr_loss
from recmind_dist.models.base import Batch
from recmind_dist.models.inputs import ModelInputs, NodeFeatures
from recmind_dist.models.lightgcn import LightGCN
from recmind_dist.models.recmind import RecMind
from recmind_dist.models.registry import build_model
from recmind_dist.models.simgcl import batch_contrastive
from recmind_dist.pipeline.features import align_to_local
from recmind_dist.specs import EvalSpec, LightGCNSpec, RecMindSpec, TrainSpec, parse_spec

NU, NI, D_LM = 20, 30, 12
OLD_STATE = Path(__file__).parent / "data" / "recmind_state_b433d43.pt"


def _data(seed: int = 0) -> SplitData:
    rng = np.random.default_rng(seed)
    pairs = np.unique(np.stack([rng.integers(0, NU, 200), rng.integers(0, NI - 3, 200)], 1), axis=0)
    return SplitData(NU, NI, pairs, pairs[:5], pairs[5:10], np.arange(NU), np.arange(NI),
                     key="t", seed=seed)  # items NI-3.. have no edges


def _features(seed: int = 0, no_text_users=(1, 4), no_text_items=(0, 7, 29)) -> NodeFeatures:
    rng = np.random.default_rng(seed)
    uv, iv = rng.normal(size=(NU, D_LM)), rng.normal(size=(NI, D_LM))
    uh, ih = np.ones(NU, bool), np.ones(NI, bool)
    uh[list(no_text_users)] = False
    ih[list(no_text_items)] = False
    uv[~uh] = 0
    iv[~ih] = 0
    return NodeFeatures(uv, iv, uh, ih)


def _model(data: SplitData | None = None, seed: int = 0, **kw) -> RecMind:
    data = data or _data()
    torch.manual_seed(seed)
    spec = RecMindSpec(dim=8, layers=2, **kw)
    model = build_model(spec, data, ModelInputs(features=_features()), "cpu")
    assert isinstance(model, RecMind)
    return model


def _batch(data: SplitData, seed: int = 0) -> Batch:
    rng = np.random.default_rng(seed)
    e = data.train[rng.permutation(len(data.train))[:64]]
    return Batch(torch.from_numpy(e[:, 0]), torch.from_numpy(e[:, 1]),
                 torch.from_numpy(rng.integers(0, NI, len(e))))


def _gammas(model: RecMind) -> torch.Tensor:
    return model.probes()["gate"]


def _z(model: RecMind) -> torch.Tensor:
    """The language view z of every node with the current ID table."""
    return model.language(model.embedding.weight, model.deg_norm)


def test_spec_parses_and_defaults_documented():
    spec = parse_spec({"model": {"name": "recmind", "variant": "late_fusion"}}, "t")
    assert isinstance(spec.model, RecMindSpec) and spec.model.variant == "late_fusion"
    for name, f in RecMindSpec.model_fields.items():
        if name != "name":
            assert f.description, f"RecMindSpec.{name} needs a documented default"


def test_gate_shapes_and_range():
    model = _model()
    g = _gammas(model)
    assert g.shape == (NU + NI, 3)
    iso = model.isolated.ravel()
    assert iso.sum() == 3 and torch.all(g[iso] == 1.0)  # pinned: no training edge
    assert torch.all((g[~iso] > 0) & (g[~iso] < 1))
    views = model.forward_views()
    assert [x.shape for x in views.gammas] == [(NU + NI, 1)] * 3
    assert views.h.shape == (NU + NI, 8)
    # the gate depends on the node: push its weights and γ varies across nodes
    with torch.no_grad():
        model.gate.w_d.fill_(3.0)
    g = _gammas(model)[~iso]
    assert g[:, 0].std() > 0 and torch.all((g > 0) & (g < 1))


def test_fallback_used_exactly_for_nodes_without_text():
    model = _model()
    has = model.language.has_text
    expected_fb = [1, 4, NU + 0, NU + 7, NU + 29]
    assert torch.nonzero(~has).ravel().tolist() == expected_fb
    assert model.feature_summary() == {"users_fallback": 2.0, "items_fallback": 3.0}
    z = _z(model)
    with torch.no_grad():
        lv = model.language
        z_text = torch.nn.functional.normalize(lv.proj(lv.text_vec), dim=1) * lv.z_scale
        fb_in = torch.cat([model.embedding.weight, model.deg_norm[:, None]], 1)
        z_fb = lv.fallback(fb_in)
    assert torch.allclose(z[has], z_text[has])
    assert torch.allclose(z[~has], z_fb[~has])
    # changing the fallback MLP moves exactly the no-text rows
    with torch.no_grad():
        model.language.fallback[2].bias.add_(1.0)
    z2 = _z(model)
    changed = (z2 - z).abs().sum(1) > 0
    assert changed.tolist() == (~has).tolist()
    # fallback=zero: z = 0 there
    z0 = _z(_model(fallback="zero"))
    assert torch.all(z0[~has] == 0) and torch.all(z0[has].abs().sum(1) > 0)


def test_fixed_zero_gate_and_no_alignment_reduce_exactly_to_lightgcn():
    data = _data()
    torch.manual_seed(3)
    lgcn = LightGCN(NU, NI, normalized_adjacency(NU, NI, data.train),
                    LightGCNSpec(dim=8, layers=2, reg=1e-4), seed=3)
    rm = _model(data, seed=3, variant="fixed_gate", fixed_gamma=0.0, lambda_align=0.0,
                warm_negatives=False)  # the toy graph has items without training edges
    assert torch.equal(rm.embedding.weight, lgcn.embedding.weight)  # same init from the seed
    for a, b in zip(rm.representations(), lgcn.representations(), strict=True):
        assert torch.equal(a, b)
    batch = _batch(data)
    rm.on_epoch_start(1, 1)
    l_rm, parts_rm = rm.training_loss(batch, 1)
    l_lg, parts_lg = lgcn.training_loss(batch, 1)
    assert "align" not in parts_rm and parts_rm["warmup"] == 0.0
    assert torch.equal(l_rm, l_lg)
    assert parts_rm["bpr"] == parts_lg["bpr"] and parts_rm["reg"] == parts_lg["reg"]
    l_rm.backward()
    l_lg.backward()
    # same gradient up to the order in which autograd sums the paths into E⁰ (float round-off)
    g_rm, g_lg = rm.embedding.weight.grad, lgcn.embedding.weight.grad
    assert torch.allclose(g_rm, g_lg, rtol=1e-5, atol=1e-9)
    assert (g_rm - g_lg).abs().max() <= 1e-6 * g_lg.abs().max()


def test_lambda_zero_drops_alignment_and_warmup():
    rm = _model(lambda_align=0.0, warmup_epochs=5)
    assert rm.spec.warmup_epochs == 0
    rm.on_epoch_start(1, 1)
    _, parts = rm.training_loss(_batch(_data()), 1)
    assert set(parts) == {"bpr", "reg", "warmup"}
    assert _model(variant="no_align").spec.lambda_align == 0.0
    assert _model(variant="no_warmup").spec.warmup_epochs == 0


def _recmind(spec: RecMindSpec, data: SplitData, seed: int = 0) -> RecMind:
    """RecMind built from its spec and the split's arrays alone (no factory in between)."""
    torch.manual_seed(seed)
    return RecMind(NU, NI, normalized_adjacency(NU, NI, data.train), _features(),
                   np.concatenate([data.user_degree, data.item_degree]),
                   normalized_degree(NU, NI, data.train), spec, None, seed)


def test_settings_are_read_from_the_spec_not_the_variant_label():
    """Every behaviour follows the spec's resolved settings (gate, readout, lambda_align,
    warmup_epochs, isolated_text_only, late_fusion); ``variant`` is a label the model never
    reads."""
    data = _data()
    batch = _batch(data)
    # gate = fixed: no gate parameters, γ ≡ fixed_gamma everywhere (edgeless nodes unpinned)
    fixed = _recmind(RecMindSpec(dim=8, layers=2, variant="fixed_gate", fixed_gamma=0.3), data)
    assert fixed.spec.gate == "fixed" and not fixed.spec.isolated_text_only
    assert list(fixed.gate.parameters()) == [] and fixed.pinned() is None
    assert torch.all(_gammas(fixed) == 0.3)
    # the same settings without the preset label: the same model
    explicit = _recmind(RecMindSpec(dim=8, layers=2, gate="fixed", fixed_gamma=0.3), data)
    assert explicit.spec.variant == "full"
    for a, b in zip(fixed.representations(), explicit.representations(), strict=True):
        assert torch.equal(a, b)
    # a label that disagrees with the settings changes nothing: "llm_only" on full settings
    full = _recmind(RecMindSpec(dim=8, layers=2), data)
    relabelled = _recmind(RecMindSpec(dim=8, layers=2).model_copy(
        update={"variant": "llm_only"}), data)
    assert len(list(relabelled.gate.parameters())) == 4
    for a, b in zip(full.representations(), relabelled.representations(), strict=True):
        assert torch.equal(a, b)
    for m in (full, relabelled):
        m.on_epoch_start(1, 1)
    torch.manual_seed(7)
    l_full, p_full = full.training_loss(batch, 1)
    torch.manual_seed(7)
    l_rel, p_rel = relabelled.training_loss(batch, 1)
    assert torch.equal(l_full, l_rel) and p_full == p_rel and set(p_rel) == {"align", "warmup"}

    # readout = late (gate none): no gate, no probe; h = [g ‖ z] or (g + z)/2, g LightGCN's
    late = _recmind(RecMindSpec(dim=8, layers=2, variant="late_fusion"), data)
    assert list(late.gate.parameters()) == [] and late.probes() == {}
    g = layer_mean(lightgcn_layers(late.adj, late.embedding.weight, 2))
    z = _z(late)
    torch.testing.assert_close(torch.cat(late.representations()), torch.cat([g, z], 1))
    mean = _recmind(RecMindSpec(dim=8, layers=2, variant="late_fusion", late_fusion="mean"),
                    data)
    torch.testing.assert_close(torch.cat(mean.representations()), 0.5 * (g + z))

    # lambda_align = 0 (no_align): no alignment term or warm-up; queues and keys untouched
    no_align = _recmind(RecMindSpec(dim=8, layers=2, variant="no_align"), data)
    assert no_align.spec.lambda_align == 0 and not no_align.in_warmup(1)
    key = no_align.alignment.key_proj.proj.weight.detach().clone()
    _, parts = no_align.training_loss(batch, 1)
    assert set(parts) == {"bpr", "reg", "warmup"} and parts["warmup"] == 0.0
    assert all(len(q) == 0 for q in no_align.alignment.queues.values())
    assert torch.equal(no_align.alignment.key_proj.proj.weight, key)

    # readout = language (llm_only): h = z, BPR on z alone, no alignment
    llm = _recmind(RecMindSpec(dim=8, layers=2, variant="llm_only"), data)
    z = _z(llm).detach()
    torch.testing.assert_close(torch.cat(llm.representations()), z)
    _, parts = llm.training_loss(batch, 1)
    keep = llm.item_warm[batch.neg]
    u, i, j = z[batch.users[keep]], z[NU + batch.pos[keep]], z[NU + batch.neg[keep]]
    assert set(parts) == {"bpr", "reg", "warmup"}
    assert parts["bpr"] == pytest.approx(float(bpr_loss((u * i).sum(-1), (u * j).sum(-1))),
                                         rel=1e-6)

    # warmup_epochs: T_w epochs of alignment only, then joint (no_warmup: joint from epoch 1)
    assert [full.in_warmup(e) for e in (1, 3, 4)] == [True, True, False]
    no_warmup = _recmind(RecMindSpec(dim=8, layers=2, variant="no_warmup"), data)
    _, parts = no_warmup.training_loss(batch, 1)
    assert {"bpr", "reg", "align"} <= set(parts) and parts["warmup"] == 0.0


def test_model_keeps_no_copies_of_its_settings():
    """A setting has one home, ``model.spec`` (shared by the components): nothing the model
    could read instead and let drift."""
    model = _model()
    assert model.language.spec is model.spec and model.gate.spec is model.spec
    assert model.alignment.spec is model.spec
    settings = set(RecMindSpec.model_fields) - {"name"}
    copies = {(path or "model", key) for path, module in model.named_modules()
              for key in vars(module) if key in settings or key in (
                  "variant", "gate_mode", "n_layers", "fixed_gamma", "lambda_align")}
    assert not copies, copies
    assert not any(hasattr(model, a) for a in ("gammas", "gate_probe", "gather"))


def test_warmup_is_alignment_only_then_joint():
    data = _data()
    rm = _model(data, warmup_epochs=2, lambda_align=0.5, queue_size=16)
    batch = _batch(data)
    rm.on_epoch_start(1, 1)
    assert rm.phase == "warmup"
    loss, parts = rm.training_loss(batch, 1)
    assert set(parts) == {"align", "warmup"} and parts["warmup"] == 1.0
    assert loss.item() == pytest.approx(parts["align"])
    # the BPR term is absent: the loss does not depend on the negatives at all
    other = Batch(batch.users, batch.pos, (batch.neg + 1) % NI)
    rm.alignment.queues.apply(lambda m: m.reset() if hasattr(m, "reset") else None)
    rm_b = _model(data, warmup_epochs=2, lambda_align=0.5, queue_size=16)
    rm_b.load_state_dict(rm.state_dict())
    rm_c = _model(data, warmup_epochs=2, lambda_align=0.5, queue_size=16)
    rm_c.load_state_dict(rm.state_dict())
    torch.manual_seed(5)  # the same random choice of aligned nodes for both
    la, _ = rm_b.training_loss(batch, 1)
    torch.manual_seed(5)
    lb, _ = rm_c.training_loss(other, 1)
    assert torch.equal(la, lb)
    rm.on_epoch_start(3, 1)
    assert rm.phase == "joint"
    loss, parts = rm.training_loss(batch, 3)
    assert {"bpr", "reg", "align"} <= set(parts) and parts["warmup"] == 0.0
    assert loss.item() == pytest.approx(parts["bpr"] + parts["reg"] + 0.5 * parts["align"],
                                        rel=1e-5)


def test_language_only_alignment_leaves_graph_side_untouched():
    data = _data()
    rm = _model(data, warmup_epochs=1, align_grad="language")
    loss, parts = rm.training_loss(_batch(data), 1)
    assert set(parts) == {"align", "warmup"}
    loss.backward()
    grad = rm.embedding.weight.grad
    # E⁰ gets alignment gradient only through the fallback MLP of the no-text nodes
    has = rm.language.has_text
    assert torch.all(grad[has] == 0) and grad[~has].abs().sum() > 0
    assert rm.language.proj.proj.weight.grad.abs().sum() > 0


def test_language_view_has_fixed_norm():
    rm = _model()
    z = _z(rm)
    norms = z[rm.language.has_text].norm(dim=1)
    assert torch.allclose(norms, rm.language.z_scale.detach().expand_as(norms), rtol=1e-5)


def test_fixed_norm_rows_gradient():
    """z = s·u/‖u‖ (one node, backward written out) against finite differences, and its
    value against the plain formula."""
    from recmind_dist.models.language_view import _RowsAtNorm

    torch.manual_seed(2)
    u = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    s = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    torch.testing.assert_close(_RowsAtNorm.apply(u, s), s * u / u.norm(dim=1, keepdim=True))
    assert torch.autograd.gradcheck(_RowsAtNorm.apply, (u, s))


def test_queues_fill_and_key_encoder_follows_momentum():
    data = _data()
    rm = _model(data, warmup_epochs=0, queue_size=8, momentum=0.5)
    opt = torch.optim.Adam([p for p in rm.parameters() if p.requires_grad], lr=0.1)
    key_proj, proj = rm.alignment.key_proj, rm.language.proj
    w0 = key_proj.proj.weight.detach().clone()
    for step in range(3):
        loss, _ = rm.training_loss(_batch(data, step), 1)
        opt.zero_grad()
        loss.backward()
        opt.step()
    for q in rm.alignment.queues.values():
        assert len(q) == 8
    assert not any(p.requires_grad for p in key_proj.parameters())
    # the key encoder moved towards the (trained) online projection, but lags behind it
    assert not torch.equal(key_proj.proj.weight, w0)
    assert not torch.equal(key_proj.proj.weight, proj.proj.weight)
    before = key_proj.proj.weight.detach().clone()
    rm.training_loss(_batch(data, 9), 1)
    assert torch.allclose(key_proj.proj.weight, 0.5 * before + 0.5 * proj.proj.weight)


def _saved_before_split() -> tuple[dict, RecMind]:
    """The state dict b433d43 saved (flat keys) and a fresh model of the same spec."""
    saved = torch.load(OLD_STATE, weights_only=True)
    spec = dict(saved["spec"])
    assert (spec.pop("dim"), spec.pop("layers")) == (8, 2)
    return saved, _model(_data(), **spec)


def test_state_dict_saved_before_the_component_split_loads():
    """A run logged at b433d43 (keys proj., key_proj., queues., gate_w_*, text_vec, ...)
    loads strictly into the components and scores exactly as it did then."""
    saved, model = _saved_before_split()
    old = saved["state_dict"]
    assert {"gate_w_e", "z_scale", "proj.proj.weight", "queues.z.buf"} <= set(old)
    model.load_state_dict(old)  # strict: no missing or unexpected keys
    model.eval()
    with torch.no_grad():
        users, items = model.representations()
    assert torch.equal(users, saved["users"]) and torch.equal(items, saved["items"])
    assert torch.equal(model.gate.w_e, old["gate_w_e"])
    assert torch.equal(model.alignment.key_proj.proj.weight, old["key_proj.proj.weight"])
    for view in ("z", "g"):
        queue = model.alignment.queues[view]
        assert torch.equal(queue.buf, old[f"queues.{view}.buf"])
        assert len(queue) == int(old[f"queues.{view}.count"]) > 0
    # and the new layout round-trips
    fresh = _saved_before_split()[1]
    fresh.load_state_dict(model.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(),
                                                 model.state_dict().values(), strict=True))


def test_state_dict_with_per_type_queues_still_loads():
    """A run logged before the grouped queues (one ring per node type and view, flat keys)
    loads: both upgrades apply in turn."""
    saved, model = _saved_before_split()
    state = saved["state_dict"]
    old = {k: v for k, v in state.items() if not k.startswith("queues.")}
    for view in ("z", "g"):
        for g, kind in enumerate(("user", "item")):
            old[f"queues.{kind}_{view}.buf"] = state[f"queues.{view}.buf"][g].clone()
            old[f"queues.{kind}_{view}.ptr"] = state[f"queues.{view}.ptr"].clone()
            old[f"queues.{kind}_{view}.count"] = state[f"queues.{view}.count"].clone()
    model.load_state_dict(old)  # strict: no missing or unexpected keys
    reference = _saved_before_split()[1]
    reference.load_state_dict(state)
    for view in ("z", "g"):
        got, want = model.alignment.queues[view], reference.alignment.queues[view]
        assert torch.equal(got.contents(), want.contents())
        assert len(got) == len(want) > 0
    model.eval()
    with torch.no_grad():
        assert torch.equal(model.representations()[1], saved["items"])


@pytest.mark.parametrize("variant", ["late_fusion", "llm_only", "fixed_gate", "no_warmup"])
def test_variants_train_and_score(variant):
    data = _data()
    rm = _model(data, variant=variant)
    u, i = rm.representations()
    width = 16 if variant == "late_fusion" else 8
    assert u.shape == (NU, width) and i.shape == (NI, width)
    loss, parts = rm.training_loss(_batch(data), 10)
    loss.backward()
    assert np.isfinite(loss.item()) and "bpr" in parts
    probe = probe_report(rm.probes(), NU, rm.node_degree.numpy(), 3, 0.2, None, variant)
    assert (probe == {}) == (variant in ("late_fusion", "llm_only"))
    if variant == "llm_only":
        assert torch.equal(u, _z(rm)[:NU])


def test_gate_probe_buckets_and_plot(tmp_path):
    rm = _model()
    png = tmp_path / "gate.png"
    gamma = _gammas(rm).numpy()
    degree = rm.node_degree.numpy()
    probe = probe_report(rm.probes(), NU, degree, 3, 0.2, png, "RecMind gate")
    assert png.exists() and png.stat().st_size > 1000
    # items with degree buckets, users without: exactly these two summaries
    expected = gate_summary(gamma[NU:], degree[NU:], 3, 0.2, prefix="gate/item")
    expected.update(gate_summary(gamma[:NU], degree[:NU], None, None, prefix="gate/user"))
    assert probe == expected
    assert probe["gate/item/all/l1/mean"] == pytest.approx(float(gamma[NU:, 1].mean()))
    assert probe["gate/user/all/mean"] == pytest.approx(float(gamma[:NU].mean()))
    for bucket in ("all", "cold", "tail", "head", "deg0"):
        for layer in range(3):
            v = probe[f"gate/item/{bucket}/l{layer}/mean"]
            assert 0 < v <= 1
            assert f"gate/item/{bucket}/l{layer}/median" in probe
    assert probe["gate/item/deg0/n"] == 3.0
    assert probe["gate/item/deg0/l0/mean"] == 1.0  # isolated nodes: h = z
    assert "gate/user/all/mean" in probe


def test_align_to_local():
    ids = np.array([5, 2, 9])
    vec = np.array([[5.0], [2.0], [9.0]], np.float32)
    has = np.array([True, True, False])
    out, h = align_to_local(ids, vec, has, np.array([9, 2, 7, 5]))
    assert out.ravel().tolist() == [0.0, 2.0, 0.0, 5.0]
    assert h.tolist() == [False, True, False, True]


def _bow_features(ds, data: SplitData) -> NodeFeatures:
    """Bag-of-words vectors of the synthetic item/user texts (no LM in tests)."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    items = ds.items.set_index("id").loc[data.item_ids]
    users = ds.users.set_index("id").loc[data.user_ids]
    item_text = (items["title"] + " " + items["genres"] + " " + items["description"]).tolist()
    user_text = users["interests"].tolist()
    vec = TfidfVectorizer().fit(item_text + user_text)
    iv = vec.transform(item_text).toarray()
    uv = vec.transform(user_text).toarray()
    return NodeFeatures(uv, iv, np.ones(len(uv), bool), np.ones(len(iv), bool))


def test_recmind_ranks_unseen_items_better_than_lightgcn(tmp_path):
    from recmind_dist.data.schema import load_dataset
    from recmind_dist.data.split import make_split
    from recmind_dist.data.synthetic import generate_synthetic
    from recmind_dist.eval.evaluator import SplitEvaluator
    from recmind_dist.specs import SplitSpec
    from recmind_dist.train.loop import seed_everything, train_model

    ds = load_dataset(generate_synthetic(tmp_path / "syn", 200, 300, 6000, 8, seed=1))
    data = make_split(ds, SplitSpec(threshold=None, protocol="cold_item", cold_fraction=0.2), 0)
    ev = SplitEvaluator(data, EvalSpec(ks=[20]))
    train = TrainSpec(epochs=8, lr=1e-2, batch_size=1024, eval_every=4, patience=10,
                      num_threads=1)
    feats = _bow_features(ds, data)
    results = {}
    for name, spec in (("lightgcn", {"name": "lightgcn", "dim": 32, "layers": 2}),
                       ("recmind", {"name": "recmind", "dim": 32, "layers": 2,
                                    "warmup_epochs": 2, "queue_size": 256})):
        seed_everything(0)
        model = build_model(parse_spec({"model": spec}, "t").model, data, ModelInputs(features=feats), "cpu")
        res = train_model(model, data, train, ev, 0, progress=False)
        results[name] = res.test["unseen/recall_at_20"]
    print(results)
    assert results["recmind"] > results["lightgcn"] + 0.05, results


def test_lora_encoder_trains_adapters_end_to_end(tiny_bert):
    """encoder: lora -- at init z equals the precomputed path's (LoRA's B = 0), a step moves
    only LoRA + RecMind weights (base LM bit-identical), and the epoch refresh re-encodes."""
    from recmind_dist.embed.encoder import TextEncoder

    data = _data()
    rng = np.random.default_rng(0)
    words = ["war", "love", "space", "crime", "comedy", "west", "noir", "ghost"]
    texts = [" ".join(rng.choice(words, 4)) for _ in range(NU + NI)]
    texts[1] = texts[NU + 7] = ""  # no text: fallback rows
    frozen = TextEncoder(tiny_bert, normalize=False, max_length=32, dtype="float32")
    vec = frozen.encode(texts)
    has = np.array([bool(t) for t in texts])
    feats = NodeFeatures(vec[:NU], vec[NU:], has[:NU], has[NU:], {"lm": str(tiny_bert)},
                         user_text=texts[:NU], item_text=texts[NU:])
    spec = RecMindSpec(dim=8, layers=2, encoder="lora", lora_nodes=8, lora_max_length=32,
                       text_pca=0, warmup_epochs=0)
    torch.manual_seed(0)
    model = build_model(spec, data, ModelInputs(features=feats), "cpu")
    torch.manual_seed(0)
    ref = build_model(spec.model_copy(update={"encoder": "precomputed"}), data,
                      ModelInputs(features=feats))
    lv = model.language
    torch.testing.assert_close(lv.text_vec, ref.language.text_vec, atol=1e-5, rtol=1e-4)
    assert torch.equal(lv.has_text, ref.language.has_text)

    base = {n: p.detach().clone() for n, p in lv.text_tower.named_parameters()
            if "lora_" not in n}
    lora = {n: p.detach().clone() for n, p in lv.text_tower.named_parameters()
            if "lora_" in n}
    assert lora and all(p.requires_grad for n, p in lv.text_tower.named_parameters()
                        if "lora_" in n)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=0.05)
    model.train()
    model.on_epoch_start(1, 3)
    for s in range(3):
        loss, _ = model.training_loss(_batch(data, s), 1)
        opt.zero_grad()
        loss.backward()
        opt.step()
    named = dict(lv.text_tower.named_parameters())
    assert all(torch.equal(named[n], p) for n, p in base.items())  # frozen LM untouched
    assert any(not torch.equal(named[n], p) for n, p in lora.items())  # adapters trained
    before = lv.text_vec.clone()
    model.on_epoch_start(2, 3)  # refresh with the trained adapters
    assert not torch.allclose(lv.text_vec, before)
    assert torch.equal(lv.text_vec[1], torch.zeros_like(lv.text_vec[1]))


def test_unseen_items_scored_at_the_warm_item_norm():
    """isolated_norm: warm_mean -- an item with no training edge keeps z's direction and gets
    the mean ‖h‖ of the items with edges; z keeps its own norm."""
    warm = _model(isolated_norm="warm_mean")
    plain = _model(isolated_norm="z")
    _, hw = warm.representations()
    _, hp = plain.representations()
    iso = ~warm.item_warm
    assert int(iso.sum()) == 3
    norm = hw[~iso].norm(dim=1).mean()
    torch.testing.assert_close(hw[iso].norm(dim=1), norm.expand(3))
    torch.testing.assert_close(F.normalize(hw[iso], dim=1), F.normalize(hp[iso], dim=1))
    assert torch.equal(hw[~iso], hp[~iso])  # items with edges untouched
    assert not torch.allclose(hp[iso].norm(dim=1), norm.expand(3))


def test_cold_dropout_scores_dropped_items_with_their_language_view():
    """cold_dropout = p: each BPR positive/negative is represented by z with probability p
    (p → 1: the BPR term is exactly BPR(h_u·z_i, h_u·z_j)); p = 0 leaves the loss unchanged;
    inactive where an edgeless item is not scored with z (fixed gate)."""
    data = _data()
    batch = _batch(data)
    ep = 1  # no_align: no warm-up, epoch 1 is joint
    _, base = _model(variant="no_align", cold_dropout=0.0).training_loss(batch, ep)
    views0 = _model(variant="no_align", cold_dropout=0.0).forward_views()
    keep0 = _model().item_warm[batch.neg]  # warm negatives only, as in training_loss
    h = views0.h
    u0, i0, j0 = (h[batch.users[keep0]], h[NU + batch.pos[keep0]], h[NU + batch.neg[keep0]])
    assert base["bpr"] == pytest.approx(float(bpr_loss((u0 * i0).sum(-1), (u0 * j0).sum(-1))),
                                        rel=1e-6)  # p = 0: plain BPR on h

    model = _model(variant="no_align", cold_dropout=0.999999)
    _, parts = model.training_loss(batch, ep)
    views = model.forward_views()
    keep = model.item_warm[batch.neg]
    u = views.h[batch.users[keep]]
    zi = views.z[NU + batch.pos[keep]]
    zj = views.z[NU + batch.neg[keep]]
    expected = float(bpr_loss((u * zi).sum(-1), (u * zj).sum(-1)))
    assert parts["bpr"] == pytest.approx(expected, rel=1e-5)
    assert abs(parts["bpr"] - base["bpr"]) > 1e-5  # h and z scores differ

    half = _model(variant="no_align", cold_dropout=0.5)
    v = half.forward_views()
    torch.manual_seed(3)
    drop = half.cold_drop(len(batch.pos), batch.pos.device)
    s_pos, s_neg = half._bpr_scores(v.h, v.z, batch.users, batch.pos, batch.neg, NU, drop)
    u = v.h[batch.users]  # users are never dropped
    for got, items in ((s_pos, batch.pos), (s_neg, batch.neg)):
        with_h = (u * v.h[NU + items]).sum(-1)
        with_z = (u * v.z[NU + items]).sum(-1)
        from_h = torch.isclose(got, with_h, rtol=1e-6, atol=1e-7)
        from_z = torch.isclose(got, with_z, rtol=1e-6, atol=1e-7)
        assert bool((from_h | from_z).all()) and 0 < int(from_z.sum()) < len(got)

    _, fixed = _model(variant="fixed_gate", cold_dropout=0.9).training_loss(batch, 10)
    _, fixed0 = _model(variant="fixed_gate", cold_dropout=0.0).training_loss(batch, 10)
    assert fixed["bpr"] == fixed0["bpr"]


def test_fused_gated_propagation_matches_the_autograd_loop():
    """The learned gate runs as one autograd node on a sparse Â; the loop over autograd ops
    (kept for a partitioned Â) gives the same h, states and gates, and the same gradients."""

    class Wrapped:  # not a tensor: forward_views takes the loop
        def __init__(self, adj: torch.Tensor) -> None:
            self.adj = adj

        def propagate(self, x: torch.Tensor) -> torch.Tensor:
            from recmind_dist.graph.propagate import propagate
            return propagate(self.adj, x)

    fused, loop = _model(), _model()
    loop.adj = Wrapped(loop.adj)
    with torch.no_grad():
        for m in (fused, loop):  # a gate that is not flat at the start
            m.gate.w_e.normal_(0, 0.5)
            m.gate.w_z.normal_(0, 0.5)
    loop.load_state_dict(fused.state_dict())
    vf, vl = fused.forward_views(), loop.forward_views()
    torch.testing.assert_close(vf.h, vl.h, rtol=1e-6, atol=1e-7)
    for a, b in zip(vf.layers + vf.gammas, vl.layers + vl.gammas, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    w = torch.randn_like(vf.h)
    (vf.h * w).sum().backward()
    (vl.h * w).sum().backward()
    for (name, p), q in zip(fused.named_parameters(), loop.parameters(), strict=True):
        if p.grad is not None or q.grad is not None:
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-6, msg=name)


def test_xsimgcl_backbone_adds_the_cross_layer_term_on_the_gated_states():
    """backbone=xsimgcl with ε = 0: the same loss as the lightgcn backbone plus
    λ_cl · cl(h, E^{l*}) built from the lightgcn-backbone model's own views; with ε > 0 the
    training pass is perturbed (a different loss) while evaluation stays clean."""
    data, batch = _data(), _batch(_data())
    kw = {"warmup_epochs": 0, "cold_dropout": 0.0}
    base = _model(data, seed=4, **kw)
    xs0 = _model(data, seed=4, backbone="xsimgcl", cl_eps=0.0, cl_lambda=0.5, cl_layer=2, **kw)
    xs = _model(data, seed=4, backbone="xsimgcl", cl_eps=0.2, cl_lambda=0.5, cl_layer=2, **kw)
    for m in (base, xs0, xs):
        m.on_epoch_start(1, 1)
    torch.manual_seed(0)  # the alignment's node subset comes from the global generator
    l_base, _ = base.training_loss(batch, 1)
    views = base.forward_views()
    cl = batch_contrastive(views.h, views.layers[2], batch, NU, xs0.spec.cl_tau)
    torch.manual_seed(0)
    l_x0, parts_x0 = xs0.training_loss(batch, 1)
    assert parts_x0["cl"] == pytest.approx(float(cl), rel=1e-6)
    torch.testing.assert_close(l_x0, l_base + 0.5 * cl, rtol=1e-6, atol=1e-7)
    torch.manual_seed(0)
    l_x, _ = xs.training_loss(batch, 1)
    assert abs(float(l_x) - float(l_x0)) > 1e-4  # the noise changes the training pass
    for a, b in zip(xs.representations(), base.representations(), strict=True):
        torch.testing.assert_close(a, b)  # evaluation: the clean propagation
    l_x.backward()
    assert xs.gate.w_e.grad.abs().sum() > 0 and xs.embedding.weight.grad.abs().sum() > 0


def test_simgcl_backbone_contrasts_two_perturbed_passes_and_resumes_its_noise():
    data, batch = _data(), _batch(_data())
    m = _model(data, seed=5, backbone="simgcl", cl_eps=0.1, cl_lambda=0.1, warmup_epochs=0)
    m.on_epoch_start(1, 1)
    z = _z(m)
    state = {k: v.clone() for k, v in m.state_dict().items()}  # rng state before the draws
    a, b = m.perturbed_mean(z), m.perturbed_mean(z)
    clean = m.forward_views().h
    assert not torch.allclose(a, b)  # two independent noise draws
    warm = torch.from_numpy(np.concatenate([data.user_degree, data.item_degree]) > 0)
    # every row with a non-zero propagated state moves, by at most ε per layer
    assert ((a - clean)[warm].norm(dim=1) > 0).all()
    assert ((a - clean).norm(dim=1) <= 0.1 * 2 / 3 + 1e-6).all()
    m.load_state_dict(state)  # a resumed run draws the same noise
    torch.testing.assert_close(m.perturbed_mean(z), a)
    _, parts = m.training_loss(batch, 1)
    assert {"bpr", "reg", "align", "cl"} <= set(parts)


def test_readout_without_layer0_is_the_mean_of_the_propagated_fused_states():
    """readout_layer0=false: h = mean of Ẽ^1..Ẽ^L (the fused kernel and the autograd loop of
    a fixed gate agree with the states they return); an edgeless pinned item's h is still z."""
    data = _data()
    m = _model(data, seed=6, readout_layer0=False)
    v = m.forward_views()
    fused = [torch.lerp(e, v.z, g) for e, g in zip(v.layers, v.gammas, strict=True)]
    torch.testing.assert_close(v.h, torch.stack(fused[1:]).mean(0))
    cold = NU + NI - 1  # items NI-3.. have no training edge
    torch.testing.assert_close(v.h[cold], v.z[cold])
    f = _model(data, seed=6, readout_layer0=False, variant="fixed_gate")
    vf = f.forward_views()
    fused = [torch.lerp(e, vf.z, 0.1) for e in vf.layers]
    torch.testing.assert_close(vf.h, torch.stack(fused[1:]).mean(0))
