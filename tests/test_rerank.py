"""Re-ranking with justifications: permutation of the top-K, grounded "liked" claims,
before/after metrics, and the ``recommend`` command."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import yaml
from test_generate import BagEncoder
from typer.testing import CliRunner

from recmind_dist.data.split import make_split
from recmind_dist.eval.evaluator import SplitEvaluator
from recmind_dist.generation import Generator
from recmind_dist.models.gat_llm import GATLLM
from recmind_dist.rerank import Reranker, evaluate_rerank, ungrounded_likes
from recmind_dist.specs import EvalSpec, GATLLMSpec, GenerateSpec, SplitSpec


def _setup(ds, weight=0.5):
    data = make_split(ds, SplitSpec(threshold=None), 0)
    model = GATLLM(data.n_users, data.n_items, data.train, None,
                   GATLLMSpec(features="id", dim=8, heads=1))
    gen = Generator(GenerateSpec(offline_rerank_weight=weight), encoder=BagEncoder())
    return data, model, Reranker(gen, ds, data, max_history=5)


LIKED = re.compile(r"because you liked (.+?)(?:, which is also .*)?\.$")


def test_offline_lists_are_permutations_and_only_training_items_are_liked(tiny_dataset):
    data, model, rr = _setup(tiny_dataset)
    ev = SplitEvaluator(data, EvalSpec(ks=[5, 10]))
    res = evaluate_rerank(model, data, ev, rr, k=10, ks=(5, 10))
    assert res["stats"]["users"] == len(np.unique(data.test[:, 0]))
    titles = rr.catalogue_titles
    for r in res["lists"]:
        assert sorted(r.items) == sorted(r.before) and r.backend == "offline" and r.ok
        train_titles = {rr.info(i).title for i in data.train[data.train[:, 0] == r.user, 1]}
        shown = {h.title for h in rr.history_infos(r.user)}
        assert shown <= train_titles
        for item, sentence in zip(r.items, r.justifications, strict=True):
            assert sentence.startswith(rr.info(item).title)  # cites the item itself
            m = LIKED.search(sentence)
            assert m and m.group(1) in train_titles, sentence  # named as liked: a train item
            assert not ungrounded_likes(sentence, sorted(train_titles), titles)
    # Recall@10 of the same 10 items cannot change; both sides are reported
    assert res["before"]["recall_at_10"] == res["after"]["recall_at_10"]
    assert set(res["before"]) == set(res["after"])


def test_weight_zero_keeps_the_model_order(tiny_dataset):
    data, model, rr = _setup(tiny_dataset, weight=0.0)
    ev = SplitEvaluator(data, EvalSpec(ks=[5, 10]))
    res = evaluate_rerank(model, data, ev, rr, k=10, ks=(5, 10))
    assert all(r.items == r.before for r in res["lists"])
    assert res["before"] == res["after"]


class LyingBackend:
    """Claims the user liked an item they never interacted with; omits one candidate."""

    name, model_name = "fake", "liar"

    def __init__(self, claim: str) -> None:
        self.claim = claim

    def generate(self, requests):
        out = []
        for r in requests:
            n = len(r.payload["candidates"])
            lines = [f"{i}: Great pick because you liked {self.claim}." for i in range(n - 1)]
            out.append("\n".join(reversed(lines)))
        return out


def test_ungrounded_llm_claims_are_replaced(tiny_dataset):
    data, _, rr = _setup(tiny_dataset)
    u = 0
    train_items = set(data.train[data.train[:, 0] == u, 1].tolist())
    train_titles = sorted(rr.info(i).title for i in train_items)
    claim = next(rr.info(i).title for i in range(data.n_items) if i not in train_items
                 and not any(rr.info(i).title in t for t in train_titles))
    rr.gen = Generator(GenerateSpec(), backend=LyingBackend(claim))
    topk = np.array([[i for i in range(data.n_items) if i not in train_items][:6]])
    (res,) = rr.rerank([u], topk)
    assert res.items[:5] == topk[0][:5][::-1].tolist() and res.items[5] == topk[0][5]
    assert rr.stats["ungrounded_replaced"] == 5 and rr.stats["filled"] == 6
    for s in res.justifications:
        assert not ungrounded_likes(s, train_titles, rr.catalogue_titles)
        assert f"liked {claim}." not in s


def test_ungrounded_likes_unit():
    cat = ["Heat", "Toy Story", "Scream"]
    assert ungrounded_likes("Scream: you liked Heat.", ["Heat"], cat) == []
    assert ungrounded_likes("Heat: because you liked Toy Story.", ["Heat"], cat) == ["Toy Story"]
    assert ungrounded_likes("Scream is a horror movie.", [], cat) == []


def test_recommend_command(tiny_dataset, tmp_path, monkeypatch):
    from recmind_dist.cli import app

    monkeypatch.chdir(tmp_path)
    spec = {"name": "tiny", "seed": 1, "data": {"source": None, "path": str(tiny_dataset.path)},
            "split": {"threshold": None},
            "model": {"name": "gat_llm", "features": "id", "dim": 8, "heads": 1},
            "train": {"epochs": 2, "batch_size": 64, "lr": 0.01, "stop_metric": "ndcg_at_10"},
            "eval": {"ks": [5, 10]},
            "tracking": {"uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "experiment": "tiny"}}
    p = Path(tmp_path / "spec.yaml")
    p.write_text(yaml.safe_dump(spec))
    runner = CliRunner()
    res = runner.invoke(app, ["train", "--config", str(p), "--no-progress"])
    assert res.exit_code == 0, res.output
    run_id = res.output.split("RUN_ID=")[1].split()[0]
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    res = runner.invoke(app, ["recommend", "--run", run_id, "--user", "u3", "--k", "4",
                              "--tracking-uri", uri, "--cache-dir", str(tmp_path / "gen")])
    assert res.exit_code == 0, res.output
    assert "because you liked Movie" in res.output and "offline" in res.output
    assert list((tmp_path / "gen").glob("part-*.parquet"))
    res = runner.invoke(app, ["recommend", "--run", run_id, "--user", "nobody", "--no-rerank",
                              "--tracking-uri", uri])
    assert res.exit_code == 2 and "user" in res.output
    assert "no such raw user id in the dataset" in res.output
