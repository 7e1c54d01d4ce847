"""Embedding job: output contract, resume after a crash, Ray == local, dataset entry point."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recmind_dist.embed.job import run_embedding_job
from recmind_dist.embed.shards import FAIL_AFTER_ENV, read_embeddings
from recmind_dist.errors import InputError
from recmind_dist.specs import EmbedSpec

N = 53


def _texts() -> dict[str, pd.DataFrame]:
    rng = np.random.default_rng(0)
    ids = rng.permutation(np.arange(0, 2 * N, 2))  # unsorted, sparse ids
    words = ["drama", "comedy", "space", "love", "war", "noir", "heist", "robot"]
    texts = [" ".join(rng.choice(words, size=int(rng.integers(1, 30)))) for _ in ids]
    items = pd.DataFrame({"id": ids, "text": texts, "has_text": True})
    items.loc[items.id == 10, ["text", "has_text"]] = ["", False]
    users = pd.DataFrame({"id": np.arange(7), "text": [f"user {i} likes noir" for i in range(7)],
                          "has_text": [True] * 6 + [False]})
    return {"items": items, "users": users}


def _spec(model: Path, **kw) -> EmbedSpec:
    kw.setdefault("dtype", "float32")  # exact comparisons across batchings need fp32
    return EmbedSpec(model=str(model), batch_size=8, shard_rows=kw.pop("shard_rows", 10), **kw)


def test_local_output_contract(tiny_bert: Path, tmp_path: Path) -> None:
    texts = _texts()
    res = run_embedding_job(texts, _spec(tiny_bert), tmp_path, backend="local", progress=False)
    assert res.shards_total == 6 + 1 and res.shards_computed == 7 and res.dim == 32
    assert res.n_encoded == N - 1 + 6 and res.n_tokens > 0 and res.texts_per_s > 0
    tbl = pq.read_table(res.paths["items"])
    assert tbl.schema.field("vector").type == pa.list_(pa.float32(), 32)
    ids, vecs, has = read_embeddings(res.paths["items"])
    assert (ids == np.sort(texts["items"].id.to_numpy())).all()  # every node, sorted by id
    assert not has[ids == 10][0] and (vecs[ids == 10] == 0).all()  # no text -> zero vector
    np.testing.assert_allclose(np.linalg.norm(vecs[has], axis=1), 1.0, atol=1e-5)
    meta = json.loads(tbl.schema.metadata[b"recmind.embeddings"])
    assert meta["pooling"] == "mean" and meta["dim"] == 32
    manifest = json.loads((tmp_path / "embeddings" / "manifest.json").read_text())
    assert manifest["counts"]["users"] == {"rows": 7, "with_text": 6}
    # rerun: nothing recomputed
    again = run_embedding_job(texts, _spec(tiny_bert), tmp_path, backend="local", progress=False)
    assert again.shards_skipped == 7 and again.n_encoded == 0
    # float16 output and max_texts
    half = run_embedding_job(texts, _spec(tiny_bert, output_dtype="float16", max_texts=5),
                             tmp_path / "h", backend="local", progress=False)
    assert pq.read_table(half.paths["items"]).schema.field("vector").type == \
        pa.list_(pa.float16(), 32)
    i16, v16, _ = read_embeddings(half.paths["items"])
    assert len(i16) == 5
    np.testing.assert_allclose(v16, vecs[:5], atol=2e-3)


def test_bad_texts_are_input_errors(tiny_bert: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="'text'"):
        run_embedding_job({"items": pd.DataFrame({"id": [1]})}, _spec(tiny_bert), tmp_path,
                          backend="local")
    with pytest.raises(InputError, match="duplicate"):
        run_embedding_job({"items": pd.DataFrame({"id": [1, 1], "text": ["a", "b"]})},
                          _spec(tiny_bert), tmp_path, backend="local")
    with pytest.raises(InputError, match="'model'"):
        run_embedding_job(_texts(), EmbedSpec(model=str(tmp_path / "nope")), tmp_path,
                          backend="local")


def _shard_mtimes(out: Path) -> dict[str, int]:
    return {str(p.relative_to(out)): p.stat().st_mtime_ns
            for p in sorted((out / "embeddings").glob("*/shard-*.parquet"))}


def _assert_same(a: Path, b: Path, atol: float = 1e-6) -> None:
    for kind in ("items", "users"):
        ia, va, ha = read_embeddings(a / "embeddings" / f"{kind}.parquet")
        ib, vb, hb = read_embeddings(b / "embeddings" / f"{kind}.parquet")
        assert (ia == ib).all() and (ha == hb).all()
        np.testing.assert_allclose(va, vb, atol=atol)


def test_local_resume_after_crash(tiny_bert: Path, tmp_path: Path,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    texts = _texts()
    ref = tmp_path / "ref"
    run_embedding_job(texts, _spec(tiny_bert), ref, backend="local", progress=False)
    out = tmp_path / "crash"
    monkeypatch.setenv(FAIL_AFTER_ENV, "3")
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_embedding_job(texts, _spec(tiny_bert), out, backend="local", progress=False)
    done = _shard_mtimes(out)
    assert len(done) == 3 and not (out / "embeddings" / "items.parquet").exists()
    # a torn/garbage shard file and a stray temp file are tolerated
    (out / "embeddings" / "items" / "shard-00004.parquet").write_bytes(b"PAR1 garbage")
    (out / "embeddings" / "items" / ".shard-00005.parquet.x.tmp").write_bytes(b"")
    monkeypatch.delenv(FAIL_AFTER_ENV)
    res = run_embedding_job(texts, _spec(tiny_bert), out, backend="local", progress=False)
    assert res.shards_skipped == 3 and res.shards_computed == 4
    after = _shard_mtimes(out)
    assert all(after[k] == v for k, v in done.items())  # finished shards untouched
    _assert_same(ref, out, atol=0)
    # changing anything that affects vectors invalidates the shards
    res = run_embedding_job(texts, _spec(tiny_bert, max_length=8), out, backend="local",
                            progress=False)
    assert res.shards_skipped == 0


@pytest.fixture(scope="module")
def ray_local():
    from recmind_dist.embed.ray_runtime import ensure_ray, shutdown_ray

    ensure_ray(num_cpus=2)
    yield
    shutdown_ray()


def test_ray_matches_local_any_concurrency_and_sharding(tiny_bert: Path, tmp_path: Path,
                                                       ray_local: None) -> None:
    texts = _texts()
    ref = tmp_path / "local"
    run_embedding_job(texts, _spec(tiny_bert, shard_rows=1000), ref, backend="local",
                      progress=False)
    one = run_embedding_job(texts, _spec(tiny_bert, num_replicas=1, shard_rows=7),
                            tmp_path / "r1", progress=False)
    two = run_embedding_job(texts, _spec(tiny_bert, num_replicas=2, shard_rows=13,
                                         block_rows=5), tmp_path / "r2", progress=False)
    assert one.n_replicas == 1 and two.n_replicas == 2
    _assert_same(ref, tmp_path / "r1")
    _assert_same(ref, tmp_path / "r2")


def test_ray_pool_that_starves_reads_is_refused(tiny_bert: Path, tmp_path: Path,
                                                ray_local: None) -> None:
    """2 actors x 1 CPU on a 2-CPU Ray would leave no CPU for the read tasks (a silent hang)."""
    with pytest.raises(InputError, match="cpus_per_replica"):
        run_embedding_job(_texts(), _spec(tiny_bert, num_replicas=2, cpus_per_replica=1.0),
                          tmp_path / "x", progress=False)
    assert not (tmp_path / "x" / "embeddings" / "items.parquet").exists()
    assert not list((tmp_path / "x").rglob("*.parquet"))  # refused before any file is written


@pytest.mark.timeout(300)  # a broken group protocol would otherwise hang in a collective
def test_ray_tensor_parallel_matches_unsharded(tiny_bert: Path, tmp_path: Path,
                                               ray_local: None) -> None:
    """tensor_parallel=2: one actor, rank 0 of a 2-rank DeepSpeed group with one helper
    process; its vectors equal the unsharded single-process encode."""
    texts = _texts()
    ref = tmp_path / "local"
    run_embedding_job(texts, _spec(tiny_bert), ref, backend="local", progress=False)
    res = run_embedding_job(texts, _spec(tiny_bert, tensor_parallel=2), tmp_path / "tp",
                            progress=False)
    last = json.loads((tmp_path / "tp" / "embeddings" / "manifest.json").read_text())["last_run"]
    assert last["layout"]["tensor_parallel"] == 2 and last["layout"]["threads"] == 1
    assert res.n_replicas == 1 and res.extra["tp_group"] == last["tp_group"]
    # the replicas really ran sharded: 2 ranks, rank 0 holding only part of the weights
    assert last["tp_group"]["ranks"] == 2
    assert 0.5 < last["tp_group"]["param_share"] < 1.0
    _assert_same(ref, tmp_path / "tp", atol=1e-5)
    with pytest.raises(InputError, match="'tensor_parallel'.*ray backend"):
        run_embedding_job(texts, _spec(tiny_bert, tensor_parallel=2), tmp_path / "loc",
                          backend="local", progress=False)


def test_ray_resume_after_crash(tiny_bert: Path, tmp_path: Path, ray_local: None,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    texts = _texts()
    out = tmp_path / "ray"
    monkeypatch.setenv(FAIL_AFTER_ENV, "2")
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_embedding_job(texts, _spec(tiny_bert), out, progress=False)
    done = _shard_mtimes(out)
    assert len(done) == 2
    monkeypatch.delenv(FAIL_AFTER_ENV)
    res = run_embedding_job(texts, _spec(tiny_bert), out, progress=False)
    assert res.shards_skipped == 2 and res.shards_computed == 5
    assert all(_shard_mtimes(out)[k] == v for k, v in done.items())
    ref = tmp_path / "ref"
    run_embedding_job(texts, _spec(tiny_bert), ref, backend="local", progress=False)
    _assert_same(ref, out)


def test_embed_dataset_from_canonical_dir(tiny_bert: Path, tmp_path: Path) -> None:
    schema = pytest.importorskip("recmind_dist.data.schema")
    from recmind_dist.embed.job import embed_dataset

    rng = np.random.default_rng(1)
    n_users, n_items = 12, 9
    inter = pd.DataFrame({"user": np.repeat(np.arange(n_users), 6),
                          "item": np.concatenate([rng.choice(n_items, 6, replace=False)
                                                  for _ in range(n_users)]),
                          "rating": 5.0, "timestamp": np.arange(n_users * 6)})
    items = pd.DataFrame({"id": np.arange(n_items), "title": [f"Film {i}" for i in range(n_items)],
                          "year": 2000, "genres": "Drama, Comedy"})
    users = pd.DataFrame({"id": np.arange(n_users), "age": 30, "gender": "F",
                          "occupation": "artist", "zip_code": "00000"})
    ds_dir = tmp_path / "ds"
    schema.write_dataset(ds_dir, inter, users, items, [f"u{i}" for i in range(n_users)],
                         [f"i{i}" for i in range(n_items)], source="test")
    res = embed_dataset(ds_dir, embed_spec=_spec(tiny_bert), out_dir=tmp_path / "out",
                        backend="local", progress=False)
    assert set(res.paths) == {"items", "users"}
    ids, _vecs, has = read_embeddings(res.paths["users"])
    assert len(ids) == n_users and has.all()
    assert "user_history_source" in res.extra


def test_plan_layout_amortises_actor_start() -> None:
    from recmind_dist.embed.layout import plan_layout

    auto = EmbedSpec()
    small = plan_layout(auto, 2625, cluster_cpus=2, cluster_gpus=0, node_cpus=2)
    assert (small.replicas, small.threads) == (1, 2)  # one actor start, both cores
    assert 256 <= small.block_rows <= 2625 and -(-2625 // small.block_rows) >= 2
    big = plan_layout(auto, 100_000, cluster_cpus=2, cluster_gpus=0, node_cpus=2)
    assert (big.replicas, big.threads, big.block_rows) == (2, 1, 2048)
    # 4 nodes x 8 CPUs, 1M texts: one single-threaded actor per CPU
    cluster = plan_layout(auto, 1_000_000, cluster_cpus=32, cluster_gpus=0, node_cpus=8)
    assert (cluster.replicas, cluster.threads) == (32, 1)
    # 20k texts on that cluster: 3 actors, spread over nodes, 8 threads each at most
    mid = plan_layout(auto, 20_000, cluster_cpus=32, cluster_gpus=0, node_cpus=8)
    assert mid.replicas == 3 and 1 <= mid.threads <= 8
    gpu = plan_layout(EmbedSpec(gpus_per_replica=1), 5000, 16, 4, 16)
    assert gpu.replicas == 4 and gpu.threads == 1
    fixed = plan_layout(EmbedSpec(num_replicas=2, block_rows=5), 50, 2, 0, 2)
    assert (fixed.replicas, fixed.threads, fixed.block_rows) == (2, 1, 5)
    # never more replicas than blocks
    assert plan_layout(EmbedSpec(num_replicas=8), 10, 8, 0, 8).replicas == 1


def test_tensor_parallel_layout_and_refusals() -> None:
    from recmind_dist.embed.layout import check_fits, plan_layout

    tp2 = EmbedSpec(tensor_parallel=2)
    lay = plan_layout(tp2, 100_000, cluster_cpus=2, cluster_gpus=0, node_cpus=2)
    assert (lay.replicas, lay.threads, lay.tensor_parallel) == (1, 1, 2)  # 2 ranks x 1 thread
    check_fits(tp2, lay, 2, 2, 0)  # 1 replica x 2 ranks x 0.5 CPU leaves 1 CPU for reads
    big = plan_layout(tp2, 1_000_000, cluster_cpus=32, cluster_gpus=0, node_cpus=8)
    assert (big.replicas, big.threads) == (16, 1)  # 16 groups x 2 ranks = 32 processes
    gpu = plan_layout(EmbedSpec(tensor_parallel=2, gpus_per_replica=2), 5000, 16, 8, 16)
    assert gpu.replicas == 4
    with pytest.raises(InputError, match="cpus_per_replica.*tensor-parallel ranks"):
        check_fits(EmbedSpec(tensor_parallel=2, cpus_per_replica=1.0), lay, 2, 2, 0)
    with pytest.raises(InputError, match="'tensor_parallel'.*largest node has 2 CPUs"):
        check_fits(EmbedSpec(tensor_parallel=4), lay, 8, 2, 0)
    with pytest.raises(InputError, match="'tensor_parallel'.*largest node has 1"):
        check_fits(EmbedSpec(tensor_parallel=2, gpus_per_replica=2), gpu, 16, 16, 1)
    with pytest.raises(InputError, match="'gpus_per_replica'"):
        check_fits(EmbedSpec(gpus_per_replica=1), gpu, 16, 16, 0)


def test_auto_runner_choice() -> None:
    from recmind_dist.embed.job import choose_runner

    spec = EmbedSpec(local_below_texts=100)
    assert choose_runner("auto", 99, spec, None) == ("local", "99 < embed.local_below_texts=100")
    assert choose_runner("auto", 100, spec, None)[0] == "ray"
    assert choose_runner("auto", 5, spec, "auto")[0] == "ray"  # a named cluster
    assert choose_runner("auto", 5, EmbedSpec(tensor_parallel=2), None)[0] == "ray"
    assert choose_runner("local", 10**6, spec, None)[0] == "local"  # an explicit choice wins


def test_auto_small_job_runs_in_process_and_counts_texts(tiny_bert: Path, tmp_path: Path,
                                                         monkeypatch) -> None:
    """A small job picks the in-process runner (the Ray runner is never called, whatever
    earlier tests left running) and its progress bar counts texts, every text once, as the
    forward passes finish."""
    import tqdm.auto
    import tqdm.std

    seen: list[int] = []

    class Bar(tqdm.std.tqdm):  # records the job's updates; transformers' bars pass through
        def __init__(self, *a, **kw):
            self.label = str(kw.get("desc", ""))
            kw["disable"] = True
            super().__init__(*a, **kw)

        def update(self, n=1):
            if self.label.startswith("embed"):
                seen.append(n)
            return super().update(n)

    def no_ray(*a, **kw):
        raise AssertionError("a small auto job must not use the Ray runner")

    monkeypatch.setattr(tqdm.auto, "tqdm", Bar)
    monkeypatch.setattr("recmind_dist.embed.job.run_ray", no_ray)
    texts = _texts()
    res = run_embedding_job(texts, _spec(tiny_bert), tmp_path, backend="auto", progress=True)
    assert res.backend == "local" and "local_below_texts" in res.extra["runner_choice"]
    n_text = sum(int(t.has_text.sum()) for t in texts.values())
    assert sum(seen) == n_text and max(seen) <= 8  # per forward pass of batch_size 8
