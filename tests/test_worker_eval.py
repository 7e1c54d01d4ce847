"""Validation/test ranked by 2 gloo workers (each its share of the users) equal the metrics of
one process ranking every user, for a replicated model (every worker has the tables) and a
partitioned one (only rank 0 has them after gather_for_eval; it broadcasts them)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from recmind_dist.data.split import SplitData
from recmind_dist.specs import EvalSpec

NU, NI, D = 41, 57, 8
SPEC = EvalSpec(ks=[5, 20], batch_users=6, chunk_items=10, cold_degree=4)


def _data() -> SplitData:
    rng = np.random.default_rng(5)
    parts: list[list[tuple[int, int]]] = [[], [], []]
    for u in range(NU):
        perm = rng.permutation(NI)
        parts[0] += [(u, int(i)) for i in perm[:10]]
        parts[1] += [(u, int(i)) for i in perm[10 : 10 + u % 3]]
        parts[2] += [(u, int(i)) for i in perm[13 : 13 + u % 4]]
    train, valid, test = (np.array(p, dtype=np.int64).reshape(-1, 2) for p in parts)
    return SplitData(NU, NI, train, valid, test, np.arange(NU), np.arange(NI), "k", 0)


class _Tables(torch.nn.Module):
    """A model whose representations are fixed tables; ``on_rank0_only``: as a partitioned
    model after gather_for_eval, the other ranks have none."""

    def __init__(self, on_rank0_only: bool, rank: int) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(11)
        self.user, self.item = torch.randn(NU, D, generator=g), torch.randn(NI, D, generator=g)
        self.missing = on_rank0_only and rank != 0

    def representations(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.missing:
            raise RuntimeError("no tables on this rank")
        return self.user, self.item


def _worker(rank: int, world: int, tmp: str, partitioned: bool) -> None:
    from recmind_dist.train.worker_eval import WorkerEvaluation

    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    dist.init_process_group("gloo", init_method=f"file://{tmp}/pg", rank=rank,
                            world_size=world)
    evaluation = WorkerEvaluation(_data(), SPEC, rank, world, partitioned, torch.device("cpu"))
    model = _Tables(partitioned, rank)
    out = {"spread": evaluation.spread,
           "valid": evaluation(model, "valid", buckets=False),
           "test": evaluation(model, "test")}
    torch.save(out, f"{tmp}/out{rank}.pt")
    from _dist_helpers import end_worker

    end_worker()


@pytest.mark.parametrize("partitioned", [False, True])
def test_two_workers_rank_their_share_and_equal_one_process(tmp_path: Path, partitioned):
    from recmind_dist.eval.evaluator import SplitEvaluator

    mp.start_processes(_worker, args=(2, str(tmp_path), partitioned), nprocs=2,
                       start_method="spawn")
    ev = SplitEvaluator(_data(), SPEC)
    model = _Tables(False, 0)
    want = {"valid": ev.evaluate(model, "valid", buckets=False), "test": ev.evaluate(model, "test")}
    assert any(k.startswith("cold/") for k in want["test"])
    for r in range(2):
        got = torch.load(tmp_path / f"out{r}.pt")
        assert got["spread"]
        for split in ("valid", "test"):
            assert list(got[split]) == list(want[split])
            for k, v in want[split].items():
                assert got[split][k] == pytest.approx(v, abs=1e-6, nan_ok=True), (r, split, k)


def test_one_worker_or_over_workers_off_ranks_on_rank0_only():
    from recmind_dist.train.worker_eval import WorkerEvaluation

    data = _data()
    off = SPEC.model_copy(update={"over_workers": False})
    assert not WorkerEvaluation(data, SPEC, 0, 1, False, torch.device("cpu")).spread
    other = WorkerEvaluation(data, off, 1, 2, False, torch.device("cpu"))
    assert not other.spread and other.evaluator is None
    assert other(_Tables(False, 1), "valid") is None
