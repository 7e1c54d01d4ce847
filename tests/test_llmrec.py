"""LLMRec's augmented sub-batches under replicated data parallelism (model level, no Ray).

Replicas are stepped through one epoch of :func:`shard_batches` with the same seeds, exactly
as Ray Train workers do (same initial parameters, same sampler RNG, their own slice of each
global batch): together they must visit every kept augmented triple once, and their averaged,
trainer-scaled gradients must be the single-process gradient.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recmind_dist.data.split import make_split
from recmind_dist.graph.adjacency import normalized_adjacency
from recmind_dist.models.llmrec import LLMRec
from recmind_dist.sampling import NegativeSampler
from recmind_dist.specs import LLMRecSpec, SplitSpec
from recmind_dist.train.loop import shard_batches, steps_per_epoch


@pytest.fixture
def split(tiny_dataset):
    return make_split(tiny_dataset, SplitSpec(threshold=None), 0)


def _model(split, n_aug: int = 83) -> LLMRec:
    """The same LLMRec every call (pruning on, side features and MAE on)."""
    rng = np.random.default_rng(1)
    triples = np.stack([rng.integers(0, split.n_users, n_aug),
                        rng.integers(0, split.n_items, n_aug),
                        rng.integers(0, split.n_items, n_aug)], 1)
    fu = rng.normal(size=(split.n_users, 12)).astype(np.float32)
    fi = rng.normal(size=(split.n_items, 12)).astype(np.float32)
    adj = normalized_adjacency(split.n_users, split.n_items, split.train)
    torch.manual_seed(0)
    return LLMRec(split.n_users, split.n_items, adj, triples, fu, fi,
                  LLMRecSpec(dim=8, layers=2, prune_rate=0.2, aug_weight=0.7), seed=3)


def _epoch(model: LLMRec, split, batch_size: int, rank: int, world: int):
    """Step ``model`` as worker ``rank`` of ``world`` through one epoch: yields
    (loss, batch weight, this step's augmented triples)."""
    seen: list[torch.Tensor] = []
    next_share = model.schedule.next_share

    def spy() -> torch.Tensor:
        seen.append(next_share())
        return seen[-1]

    model.schedule.next_share = spy
    model.set_shard(rank, world)
    steps = steps_per_epoch(len(split.train), batch_size, world)
    model.train()
    model.on_epoch_start(1, steps)
    rng = np.random.default_rng(7)  # the trainer's: the same on every worker
    sampler = NegativeSampler(split.n_items, split.train)
    n = 0
    for batch, weight in shard_batches(split, sampler, batch_size, rng, torch.device("cpu"),
                                       rank, world):
        loss, _ = model.training_loss(batch, 1)
        n += 1
        yield loss, weight, seen[-1]
    assert n == steps  # the trainer's step count is what shard_batches yields


def _sorted_rows(t: torch.Tensor) -> list[tuple[int, ...]]:
    return sorted(map(tuple, t.tolist()))


@pytest.mark.parametrize("world", [1, 2, 3])
@pytest.mark.parametrize("batch_size", [50, "n-1"])  # "n-1": world > 1 drops the last batch
def test_replicas_visit_every_kept_triple_once_per_epoch(split, world, batch_size):
    bs = len(split.train) - 1 if batch_size == "n-1" else batch_size
    replicas = [_model(split) for _ in range(world)]
    visited = [[t for _, _, t in _epoch(m, split, bs, r, world)]
               for r, m in enumerate(replicas)]
    kept = replicas[0].schedule.triples
    assert len(kept) == 83 - int(0.2 * 83)  # pruned
    for m in replicas[1:]:  # same parameters, same generator: the same epoch schedule
        assert torch.equal(m.schedule.triples, kept)
    every = torch.cat([t for per_rank in visited for t in per_rank])
    assert len(every) == len(kept) and _sorted_rows(every) == _sorted_rows(kept)
    # step k of all workers together is chunk C_k, the r-th worker's share contiguous
    steps = steps_per_epoch(len(split.train), bs, world)
    chunk = -(-len(kept) // steps)
    for k in range(steps):
        together = torch.cat([visited[r][k] for r in range(world)])
        assert torch.equal(together, kept[k * chunk : (k + 1) * chunk])
        sizes = [len(visited[r][k]) for r in range(world)]
        assert max(sizes) - min(sizes) <= 1


def test_replicas_average_to_the_single_process_gradient(split):
    single = _model(split)
    replicas = [_model(split), _model(split)]
    world, bs = 2, 50
    runs = [_epoch(single, split, bs, 0, 1),
            *(_epoch(m, split, bs, r, world) for r, m in enumerate(replicas))]
    n_steps = 0
    for (loss, _, t), *shards in zip(*runs, strict=True):
        single.zero_grad()
        loss.backward()
        grads = []
        for m, (loss_r, weight_r, t_r) in zip(replicas, shards, strict=True):
            m.zero_grad()
            (loss_r * (weight_r * world)).backward()  # the trainer's scale; DDP averages
            grads.append({k: p.grad.clone() for k, p in m.named_parameters()})
        assert sum(len(t_r) for _, _, t_r in shards) == len(t)
        for k, p in single.named_parameters():
            avg = sum(g[k] for g in grads) / world
            torch.testing.assert_close(avg, p.grad, rtol=1e-5, atol=1e-7, msg=k)
        n_steps += 1
    assert n_steps == steps_per_epoch(len(split.train), bs, world) > 1


def test_global_batch_count_matches_shard_batches(split):
    sampler = NegativeSampler(split.n_items, split.train)
    n = len(split.train)
    for bs in (4, 5, 7, 50, n - 1, n, n + 5):  # B >= world (B < world trains nothing)
        for world in (1, 2, 3, 4):
            rng = np.random.default_rng(0)
            got = sum(1 for _ in shard_batches(split, sampler, bs, rng, torch.device("cpu"),
                                               0, world))
            assert got == steps_per_epoch(n, bs, world), (bs, world)


def test_schedule_needs_an_epoch_start(split):
    model = _model(split)
    b = torch.from_numpy(split.train[:4])
    from recmind_dist.models.base import Batch

    with pytest.raises(RuntimeError, match="on_epoch_start"):
        model.training_loss(Batch(b[:, 0], b[:, 1], b[:, 1]), 1)
