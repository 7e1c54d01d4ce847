"""LLMRec augmentation: candidates, implicit triples, pruning, MAE, artefact cache, model."""

from __future__ import annotations

import hashlib
import zlib

import numpy as np
import pytest
import torch

from recmind_dist.augment.candidates import topn_candidates
from recmind_dist.augment.implicit import augment_implicit
from recmind_dist.data.split import make_split
from recmind_dist.generation import Backend, Generator
from recmind_dist.graph.adjacency import normalized_adjacency
from recmind_dist.models.denoise import FeatureMAE, mask_dims, n_pruned, prune_keep_mask
from recmind_dist.models.lightgcn import LightGCN
from recmind_dist.models.llmrec import LLMRec
from recmind_dist.specs import GenerateSpec, JobSpec, LightGCNSpec, LLMRecSpec, SplitSpec


@pytest.fixture
def split(tiny_dataset):
    return make_split(tiny_dataset, SplitSpec(threshold=None), 0)


def _train_keys(data):
    return set(map(tuple, data.train.tolist()))


class ScriptedBackend(Backend):
    """A test double LM: answers by a rule on the prompt; counts its calls."""

    name, model_name = "scripted", "rule-v1"

    def __init__(self, rule):
        self.rule, self.calls = rule, 0

    def generate(self, requests):
        self.calls += len(requests)
        return [self.rule(r) for r in requests]


class FakeEncoder:
    """Deterministic 16-d text vectors (keeps the cache test free of model loading)."""

    def encode(self, texts, batch_size=64):
        out = np.zeros((len(texts), 16), np.float32)
        for k, t in enumerate(texts):
            if t:
                h = hashlib.sha256(t.encode()).digest()
                out[k] = np.frombuffer(h[:16], np.uint8) / 255.0
        return out


def test_candidates_exclude_training_positives(split):
    torch.manual_seed(0)
    adj = normalized_adjacency(split.n_users, split.n_items, split.train)
    model = LightGCN(split.n_users, split.n_items, adj, LightGCNSpec(dim=8, layers=2), 0)
    with torch.no_grad():
        hu, hi = model.representations()
    cands = topn_candidates(hu, hi, split.train, n=10, batch_users=7)  # several user blocks
    assert cands.items.shape == (split.n_users, 10)
    pos = _train_keys(split)
    assert not any((u, int(i)) in pos for u in range(split.n_users) for i in cands.for_user(u))
    # best first, and they really are the best non-positive items
    s = (hu @ hi.T).numpy()
    for u in (0, 5, 17):
        mask = np.array([(u, i) in pos for i in range(split.n_items)])
        best = np.argsort(-np.where(mask, -np.inf, s[u]), kind="stable")[:10]
        assert set(best) == set(cands.items[u])
        assert np.all(np.diff(cands.scores[u]) <= 1e-6)


def test_implicit_triples_never_use_a_positive_and_stay_apart(split):
    torch.manual_seed(0)
    adj = normalized_adjacency(split.n_users, split.n_items, split.train)
    with torch.no_grad():
        hu, hi = LightGCN(split.n_users, split.n_items, adj,
                          LightGCNSpec(dim=8, layers=2), 0).representations()
    cands = topn_candidates(hu, hi, split.train, n=5)
    # corrupt user 0's candidates: its slot 3 is a TRAINING positive the LM then picks
    u0_pos = split.train[split.train[:, 0] == 0, 1][0]
    cands.items[0, 3] = u0_pos
    train_before = split.train.copy()

    def rule(req):
        if req.payload["candidates"][3] == f"Movie {u0_pos}":
            return "I think liked: 0 and disliked: 3"  # user 0 -> picks the positive
        if zlib.crc32("|".join(req.payload["history"]).encode()) % 3 == 0:
            return "garbage without indices"  # unparsable: retried, then skipped
        return "liked: 1\ndisliked: 4"

    backend = ScriptedBackend(rule)
    gen = Generator(GenerateSpec(format_retries=1), backend=backend)
    triples, stats = augment_implicit(gen, split, cands, [f"Movie {i}" for i in
                                                          range(split.n_items)], max_history=20)
    assert stats["prompted"] == split.n_users
    assert stats["ok"] + stats["skipped"] + stats["invalid"] == stats["prompted"]
    assert stats["ok"] == len(triples) > 0 and stats["skipped"] > 0 and stats["invalid"] >= 1
    pos = _train_keys(split)
    for u, i, j in triples[["user", "pos", "neg"]].itertuples(index=False):
        assert (u, j) not in pos and (u, i) not in pos and i != j
        assert i in cands.items[u] and j in cands.items[u]
    assert not ((triples.user == 0) & (triples.neg == u0_pos)).any()
    assert set(triples.backend) == {"scripted"}
    np.testing.assert_array_equal(split.train, train_before)  # E untouched


def test_pruning_drops_exactly_the_top_loss_fraction():
    g = torch.Generator().manual_seed(0)
    losses = torch.rand(103, generator=g)
    losses[10] = losses[11] = 5.0  # ties among the largest
    for rate in (0.0, 0.1, 0.25, 0.5):
        keep = prune_keep_mask(losses, rate)
        k = n_pruned(103, rate)
        assert int((~keep).sum()) == k == int(np.floor(rate * 103))
        if k:
            assert losses[~keep].min() >= losses[keep].max()
    with pytest.raises(ValueError):
        prune_keep_mask(losses, 1.0)


def test_model_prunes_each_epoch_and_keeps_augmented_triples_apart(split):
    rng = np.random.default_rng(0)
    triples = np.stack([rng.integers(0, split.n_users, 40), rng.integers(0, split.n_items, 40),
                        rng.integers(0, split.n_items, 40)], 1)
    adj = normalized_adjacency(split.n_users, split.n_items, split.train)
    fu = rng.normal(size=(split.n_users, 12)).astype(np.float32)
    fi = rng.normal(size=(split.n_items, 12)).astype(np.float32)
    model = LLMRec(split.n_users, split.n_items, adj, triples, fu, fi,
                   LLMRecSpec(dim=8, layers=2, prune_rate=0.25), seed=0)
    adj_before = model.adj.to_dense().clone()
    bs = 128
    n_batches = int(np.ceil(len(split.train) / bs))
    model.on_epoch_start(1, n_batches)
    assert model.last_prune["aug_dropped"] == 10 and len(model.schedule.triples) == 30
    assert model.epoch_metrics() == model.last_prune  # logged by the trainer every epoch
    # the dropped ones are the 10 largest BPR losses under the current model
    from recmind_dist.models.denoise import triple_bpr_losses

    with torch.no_grad():
        hu, hi = model.representations()
        ls = triple_bpr_losses(hu, hi, model.aug)
    assert model.last_prune["aug_loss_dropped"] >= model.last_prune["aug_loss_kept"]
    assert np.isclose(model.last_prune["aug_loss_dropped"], ls.sort(descending=True).values[:10]
                      .mean().item(), rtol=1e-5)
    # every kept triple is visited once over the epoch's E batches, in separate sub-batches
    from recmind_dist.models.base import Batch

    seen = []
    next_share = model.schedule.next_share

    def spy():
        seen.append(next_share())
        return seen[-1]

    model.schedule.next_share = spy
    for _ in range(n_batches):
        b = torch.from_numpy(split.train[:bs])
        batch = Batch(b[:, 0], b[:, 1], b[:, 1])
        _, parts = model.training_loss(batch, 1)
        assert "aug_bpr" in parts and "mae" in parts
    assert sum(len(s) for s in seen) == 30
    assert torch.equal(torch.cat(seen), model.schedule.triples)  # each once, in order
    assert torch.equal(model.adj.to_dense(), adj_before)  # the graph is E only
    # variants (presets resolved by the spec)
    nop = LLMRec(split.n_users, split.n_items, adj, triples, fu, fi,
                 LLMRecSpec(dim=8, variant="no_prune"), seed=0)
    nop.on_epoch_start(1, n_batches)
    assert len(nop.schedule.triples) == 40 and nop.epoch_metrics() == {}
    edges = LLMRec(split.n_users, split.n_items, adj, triples, fu, fi,
                   LLMRecSpec(dim=8, variant="edges_only"), seed=0)
    assert not edges.use_features and not hasattr(edges, "user_proj")


def test_mae_masks_the_right_fraction_and_its_loss_goes_down():
    g = torch.Generator().manual_seed(0)
    idx = mask_dims(50, 40, 0.3, g)
    assert idx.shape == (50, 12)
    assert all(len(set(r.tolist())) == 12 for r in idx)  # distinct dims per row
    torch.manual_seed(0)
    low = torch.randn(200, 6)
    f = torch.nn.functional.normalize(low @ torch.randn(6, 40), dim=1)  # structured features
    f[:5] = 0.0  # nodes without text are ignored
    proj = torch.nn.Linear(40, 16)
    mae = FeatureMAE(40, 16, 0.3)
    opt = torch.optim.Adam([*proj.parameters(), *mae.parameters()], lr=2e-2)
    first, _ = mae(f, proj, g)
    for _ in range(80):
        loss, idx = mae(f, proj, g)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert idx.shape == (195, 12)
    assert loss.item() < 0.5 * first.item()


def _tiny_spec(tiny_dataset, tmp_path, **model):
    return JobSpec.model_validate({
        "seed": 0,
        "data": {"path": str(tiny_dataset.path)},
        "split": {"threshold": None},
        "model": {"name": "llmrec", "dim": 8, "layers": 2, "candidates": 5,
                  "augment_cache": str(tmp_path / "augment"), **model},
        "train": {"epochs": 2, "batch_size": 64, "eval_every": 1, "stop_metric": "ndcg_at_10"},
        "eval": {"ks": [5, 10]},
        "tracking": {"uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "experiment": "t"},
    })


def test_artifact_cache_hit_on_rerun_calls_no_generator(tiny_dataset, tmp_path):
    from recmind_dist.augment.artifact import find_artifact
    from recmind_dist.pipeline import prepare
    from recmind_dist.pipeline.augmentation import ensure_augmentation

    spec = _tiny_spec(tiny_dataset, tmp_path)
    dataset, data = prepare(spec)
    answers = {"liked_disliked": "liked: 0\ndisliked: 1",
               "item_attributes": "director: Jane Doe\ncountry: <country>\nlanguage: French"}
    backend = ScriptedBackend(lambda r: answers.get(r.task) or r.payload.get("facts", ""))
    gen = Generator(GenerateSpec(), backend=backend)
    art = ensure_augmentation(spec, dataset, data, generator=gen, encoder=FakeEncoder())
    calls = 2 * data.n_users + data.n_items  # liked/disliked + profiles + item attributes
    assert not art.hit and backend.calls == calls
    assert art.backend == "scripted" and len(art.triples) == data.n_users
    text = art.items["text"].iloc[0]
    assert "Director: Jane Doe." in text and "Language: French." in text
    assert "Country" not in text  # a placeholder is not an attribute
    assert (art.path / "triples.parquet").exists() and (art.path / "meta.json").exists()
    again = ensure_augmentation(spec, dataset, data, generator=gen, encoder=FakeEncoder())
    assert again.hit and again.key == art.key and backend.calls == calls  # no new call
    # training finds it from (model spec, split) alone
    assert find_artifact(spec.model, data).key == art.key
    # another prompt/backend setting is another artefact
    other = _tiny_spec(tiny_dataset, tmp_path, candidates=6)
    assert find_artifact(other.model, data) is None
    u, i = art.local_features(data)
    assert u.shape == (data.n_users, 16) and i.shape == (data.n_items, 16)


def test_training_makes_a_missing_augmentation_and_leaves_the_global_rng(
        tiny_dataset, tmp_path, monkeypatch):
    """An llmrec spec trains through the ordinary run_training (jobs/train.py's path): its
    artefact is made first when missing, without moving the global RNG (so the model starts
    where it would with the artefact already there), then found."""
    import mlflow

    from recmind_dist.pipeline import augmentation, prepare, run_training

    answers = {"liked_disliked": "liked: 0\ndisliked: 1"}
    backend = ScriptedBackend(lambda r: answers.get(r.task) or r.payload.get("facts", ""))
    made = []
    real = augmentation.ensure_augmentation

    def scripted(spec, dataset, data, progress=False):  # the spec's LM would be the offline MiniLM backend
        made.append(spec.model.variant)
        return real(spec, dataset, data, generator=Generator(GenerateSpec(), backend=backend),
                    encoder=FakeEncoder())

    monkeypatch.setattr(augmentation, "ensure_augmentation", scripted)
    spec = _tiny_spec(tiny_dataset, tmp_path)
    dataset, data = prepare(spec)
    torch.manual_seed(11)
    np.random.seed(11)
    torch_state, np_state = torch.get_rng_state(), np.random.get_state()
    inputs = augmentation.augmentation_inputs(spec, dataset, data)  # trains a base LightGCN
    assert made == ["full"]
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert np.array_equal(np.random.get_state()[1], np_state[1])
    assert inputs.aug_triples.shape == (data.n_users, 3)
    assert inputs.user_features.shape == (data.n_users, 16)
    assert inputs.item_features.shape == (data.n_items, 16)
    again = augmentation.augmentation_inputs(spec, dataset, data)
    assert made == ["full"] and np.array_equal(again.aug_triples, inputs.aug_triples)
    edges = augmentation.augmentation_inputs(
        _tiny_spec(tiny_dataset, tmp_path, variant="edges_only"), dataset, data)
    assert made == ["full"] and edges.user_features is None and edges.item_features is None
    out = run_training(spec, progress=False)
    assert made == ["full"] and out.result.epochs_run == 2
    logged = mlflow.get_run(out.run_id).data.metrics  # the pruning statistics, per epoch
    assert logged["model/aug_kept"] + logged["model/aug_dropped"] == data.n_users


def _tiny_causal_lm():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    words = ["[PAD]", "[UNK]", "<s>", "</s>", "liked", "disliked", ":", "director", "country",
             "language", "the", "movie", "a", "comedy", "drama", "user", "likes", "France",
             *[str(d) for d in range(10)]]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]",
                                     bos_token="<s>", eos_token="</s>")
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(words), hidden_size=32, intermediate_size=64,
                      num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
                      max_position_embeddings=1024, pad_token_id=0, bos_token_id=2,
                      eos_token_id=3)
    return hf_tok, LlamaForCausalLM(cfg).eval()


def test_pipeline_end_to_end_with_tiny_random_hf_causal_lm(tiny_dataset, tmp_path):
    """A real generative model object (random weights: garbage) drives the whole pipeline."""
    import mlflow

    from recmind_dist.pipeline.augmentation import run_llmrec

    spec = _tiny_spec(tiny_dataset, tmp_path, lm={"backend": "hf", "max_new_tokens": 6,
                                                   "batch_size": 16, "format_retries": 1,
                                                   "temperature": 1.0, "top_p": 1.0})
    tok, model = _tiny_causal_lm()
    gen = Generator(spec.model.lm.model_copy(update={"cache_dir": tmp_path / "gen"}),
                    model=model, tokenizer=tok)
    out = run_llmrec(spec, progress=False, generator=gen, encoder=FakeEncoder())
    assert out.result.epochs_run == 2 and np.isfinite(out.result.test["recall_at_10"])
    run = mlflow.get_run(out.run_id)
    assert run.data.tags["augment_backend"] == "hf"
    st = run.data.metrics
    n_users = out.data.n_users
    assert st["augment/users_prompted"] == n_users
    assert st["augment/triples"] + st["augment/skipped"] + st["augment/invalid"] == n_users
    assert gen.stats["generated"] > 0 and gen.stats["skipped"] > 0  # garbage was counted
    assert st["augment/generator_requests"] == gen.stats["requests"]
    arts = mlflow.artifacts.list_artifacts(run_id=out.run_id, artifact_path="augmentation")
    assert {"triples.parquet", "items.parquet", "users.parquet", "meta.json"} <= {
        a.path.split("/")[-1] for a in arts}
