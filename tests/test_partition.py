"""Partitions (METIS / random, cached) and partitioned propagation == single process.

Multi-worker checks spawn gloo processes with torch.multiprocessing (faster than Ray here).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from recmind_dist.graph.adjacency import bipartite_adjacency, normalize_symmetric, to_torch_csr
from recmind_dist.graph.partition import (
    graph_checksum,
    halo_stats,
    load_or_partition,
    metis_partition,
    random_partition,
)
from recmind_dist.graph.partitioned import split_graph
from recmind_dist.graph.propagate import lightgcn_layers
from recmind_dist.specs import LightGCNSpec


def _community_pairs(nu=120, ni=150, n=1500, groups=3, seed=0):
    """Interactions mostly inside ``groups`` communities (METIS should find them)."""
    rng = np.random.default_rng(seed)
    u = rng.integers(0, nu, n)
    same = rng.random(n) < 0.9
    g = u % groups
    i_same = (rng.integers(0, ni // groups, n) * groups + g) % ni
    i = np.where(same, i_same, rng.integers(0, ni, n))
    pairs = np.unique(np.stack([u, i], 1), axis=0)
    return pairs, nu, ni


def test_metis_is_balanced_and_cuts_fewer_edges_than_random():
    pairs, nu, ni = _community_pairs()
    a = bipartite_adjacency(nu, ni, pairs)
    m = metis_partition(a, 3)
    r = random_partition(a.shape[0], 3)
    assert set(np.unique(m)) == {0, 1, 2}
    assert np.bincount(m).max() <= 1.1 * a.shape[0] / 3 + 1
    assert np.bincount(r).max() - np.bincount(r).min() <= 1
    cut_m = sum(s["cut_nnz"] for s in halo_stats(a, m, 3))
    cut_r = sum(s["cut_nnz"] for s in halo_stats(a, r, 3))
    assert cut_m < 0.6 * cut_r


def test_metis_nnz_balances_the_non_zeros_of_each_part():
    """Power-law users (few, heavy) and items (many, light): node-balanced parts can hold
    very different shares of Â's non-zeros; nnz-weighted METIS evens them out."""
    rng = np.random.default_rng(3)
    nu, ni = 60, 600
    deg = np.minimum((rng.pareto(1.2, nu) + 1) * 8, ni // 2).astype(int)
    pairs = np.unique(np.concatenate([
        np.stack([np.full(d, u), rng.choice(ni, d, replace=False)], 1)
        for u, d in enumerate(deg)]), axis=0)
    a = bipartite_adjacency(nu, ni, pairs)
    degree = np.diff(a.indptr)
    for world in (2, 3):
        nnz = np.bincount(metis_partition(a, world, weights="nnz"), weights=degree + 1,
                          minlength=world)
        assert nnz.max() <= 1.1 * nnz.sum() / world
    assert (load_or_partition(a, 2, "metis_nnz") == metis_partition(a, 2, weights="nnz")).all()
    with pytest.raises(ValueError, match="weights"):
        metis_partition(a, 2, weights="edges")


def test_partition_cache_is_keyed_by_graph_checksum(tmp_path: Path):
    pairs, nu, ni = _community_pairs()
    a = bipartite_adjacency(nu, ni, pairs)
    p1 = load_or_partition(a, 2, "metis", tmp_path)
    files = list(tmp_path.glob("*.npy"))
    assert len(files) == 1 and files[0].name.startswith(graph_checksum(a))
    np.save(files[0], np.zeros_like(p1))  # a cached file is read back, not recomputed
    assert (load_or_partition(a, 2, "metis", tmp_path) == 0).all()
    b = bipartite_adjacency(nu, ni, pairs[:-5])
    assert graph_checksum(b) != graph_checksum(a)
    load_or_partition(b, 2, "random", tmp_path)
    assert len(list(tmp_path.glob("*.npy"))) == 2
    assert not list(tmp_path.glob(".*tmp"))  # atomic write leaves no temp file


def test_split_graph_reassembles_the_adjacency():
    pairs, nu, ni = _community_pairs(seed=1)
    an = normalize_symmetric(bipartite_adjacency(nu, ni, pairs))
    parts = metis_partition(an, 3)
    dense = an.toarray()
    for lg in split_graph(an, parts, 3):
        cols = np.concatenate([lg.own, lg.halo])
        import scipy.sparse as sp

        local = sp.csr_matrix((lg.data, lg.indices, lg.indptr),
                              shape=(lg.n_own, len(cols))).toarray()
        np.testing.assert_allclose(dense[np.ix_(lg.own, cols)], local)
        assert np.abs(np.delete(dense[lg.own], cols, axis=1)).sum() == 0
        assert (parts[lg.halo] != lg.rank).all()
        assert np.all(np.diff(parts[lg.halo]) >= 0)  # grouped by owner


# ------------------------------------------------------------------ multi-process checks


def _init(rank: int, world: int, tmp: str) -> None:
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{tmp}/pg", rank=rank,
                            world_size=world)


def _propagation_worker(rank: int, world: int, tmp: str, method: str) -> None:
    from recmind_dist.graph.partitioned import PartitionedAdjacency, partitioned_layers

    _init(rank, world, tmp)
    pairs, nu, ni = _community_pairs(seed=2)
    an = normalize_symmetric(bipartite_adjacency(nu, ni, pairs))
    parts = {"metis": lambda: metis_partition(an, world),
             "metis_nnz": lambda: metis_partition(an, world, weights="nnz"),
             "random": lambda: random_partition(an.shape[0], world, 5)}[method]()
    lg = split_graph(an, parts, world)[rank]
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(an.shape[0], 8, generator=g)
    w = torch.randn(an.shape[0], 8, generator=g)
    own = torch.from_numpy(lg.own)
    x = x0[own].clone().requires_grad_(True)
    padj = PartitionedAdjacency(lg)
    layers = partitioned_layers(padj, x, 3)
    (torch.stack(layers).mean(0) * w[own]).sum().backward()
    torch.save({"own": own, "layers": [t.detach() for t in layers], "grad": x.grad,
                "halo_bytes": padj.halo_bytes}, f"{tmp}/out{rank}.pt")
    from _dist_helpers import end_worker

    end_worker()


def _spawn(fn, world: int, tmp: Path, *args) -> list[dict]:
    mp.start_processes(fn, args=(world, str(tmp), *args), nprocs=world, start_method="spawn")
    return [torch.load(tmp / f"out{r}.pt") for r in range(world)]


@pytest.mark.parametrize(("world", "method"), [(2, "metis"), (3, "random"), (3, "metis_nnz")])
def test_partitioned_propagation_equals_single_process(tmp_path: Path, world: int, method: str):
    outs = _spawn(_propagation_worker, world, tmp_path, method)
    pairs, nu, ni = _community_pairs(seed=2)
    adj = to_torch_csr(normalize_symmetric(bipartite_adjacency(nu, ni, pairs)))
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(adj.shape[0], 8, generator=g)
    w = torch.randn(adj.shape[0], 8, generator=g)
    x = x0.clone().requires_grad_(True)
    ref = lightgcn_layers(adj, x, 3)
    (torch.stack(ref).mean(0) * w).sum().backward()
    seen = torch.zeros(adj.shape[0], dtype=torch.bool)
    for o in outs:
        own = o["own"]
        seen[own] = True
        for got, want in zip(o["layers"], ref, strict=True):
            torch.testing.assert_close(got, want.detach()[own], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(o["grad"], x.grad[own], atol=1e-5, rtol=1e-5)
        assert 0 < o["halo_bytes"] < adj.shape[0] * 8 * 4 * 3  # halo, not the whole table
    assert seen.all()


def _train_step_worker(rank: int, world: int, tmp: str) -> None:
    from recmind_dist.models.base import Batch
    from recmind_dist.models.partitioned_lightgcn import PartitionedLightGCN


    _init(rank, world, tmp)
    st = torch.load(f"{tmp}/setup.pt")
    an = normalize_symmetric(bipartite_adjacency(st["nu"], st["ni"], st["pairs"].numpy()))
    lg = split_graph(an, st["parts"].numpy(), world)[rank]
    own = torch.from_numpy(lg.own)
    m = PartitionedLightGCN(st["nu"], st["ni"], lg, LightGCNSpec(dim=8, layers=2, reg=1e-3),
                            "cpu", st["e0"][own], 0)
    n = len(st["users"])
    lo, hi = n * rank // world, n * (rank + 1) // world
    b = Batch(st["users"][lo:hi], st["pos"][lo:hi], st["neg"][lo:hi])
    loss, _ = m.training_loss(b, 1)
    (loss * (hi - lo) / n).backward()
    torch.save({"own": own, "grad": m.embedding.weight.grad}, f"{tmp}/out{rank}.pt")
    from _dist_helpers import end_worker

    end_worker()


def test_partitioned_lightgcn_gradient_equals_single_process(tmp_path: Path):
    from recmind_dist.models.base import Batch
    from recmind_dist.models.lightgcn import LightGCN

    pairs, nu, ni = _community_pairs(seed=3)
    an = normalize_symmetric(bipartite_adjacency(nu, ni, pairs))
    torch.manual_seed(0)
    ref = LightGCN(nu, ni, to_torch_csr(an), LightGCNSpec(dim=8, layers=2, reg=1e-3), seed=0)
    g = torch.Generator().manual_seed(1)
    idx = torch.randint(0, len(pairs), (64,), generator=g)
    users = torch.from_numpy(pairs[:, 0])[idx]
    pos = torch.from_numpy(pairs[:, 1])[idx]
    neg = torch.randint(0, ni, (64,), generator=g)
    torch.save({"nu": nu, "ni": ni, "pairs": torch.from_numpy(pairs),
                "parts": torch.from_numpy(metis_partition(an, 2)),
                "e0": ref.embedding.weight.detach().clone(), "users": users, "pos": pos,
                "neg": neg}, tmp_path / "setup.pt")
    outs = _spawn(_train_step_worker, 2, tmp_path)
    loss, _ = ref.training_loss(Batch(users, pos, neg), 1)
    loss.backward()
    for o in outs:
        torch.testing.assert_close(o["grad"], ref.embedding.weight.grad[o["own"]],
                                   atol=1e-6, rtol=1e-5)
