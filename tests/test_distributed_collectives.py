"""Cross-worker negatives: InfoNCE with a differentiable all-gather on 2 gloo workers has
the single-process gradient over the concatenated batch."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from recmind_dist import losses
from recmind_dist.train.collectives import all_gather_autograd, all_reduce_sum

B, D, TAU = 6, 5, 0.2


def _views(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    a = torch.nn.functional.normalize(torch.randn(2 * B, D, generator=g), dim=1)
    b = torch.nn.functional.normalize(torch.randn(2 * B, D, generator=g), dim=1)
    qa = torch.nn.functional.normalize(torch.randn(7, D, generator=g), dim=1)
    qb = torch.nn.functional.normalize(torch.randn(7, D, generator=g), dim=1)
    return a, b, qa, qb


def _worker(rank: int, world: int, tmp: str) -> None:
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    dist.init_process_group("gloo", init_method=f"file://{tmp}/pg", rank=rank,
                            world_size=world)
    a, b, qa, qb = _views()
    sl = slice(rank * B, (rank + 1) * B)
    a_r = a[sl].clone().requires_grad_(True)
    b_r = b[sl].clone().requires_grad_(True)
    loss = losses.symmetric_infonce(a_r, b_r, TAU, qa, qb, gather=all_gather_autograd)
    loss.backward()
    # what DDP does with parameter gradients: average over workers
    ga = a_r.grad.clone()
    gb = b_r.grad.clone()
    total = all_reduce_sum([float(loss)])[0]
    torch.save({"loss": float(loss), "loss_sum": total, "ga": ga / world, "gb": gb / world,
                "gathered": all_gather_autograd(a_r.detach()).shape[0]}, f"{tmp}/out{rank}.pt")
    from _dist_helpers import end_worker

    end_worker()


def test_gathered_infonce_gradient_equals_single_process(tmp_path: Path):
    mp.start_processes(_worker, args=(2, str(tmp_path)), nprocs=2, start_method="spawn")
    outs = [torch.load(tmp_path / f"out{r}.pt") for r in range(2)]
    a, b, qa, qb = _views()
    a = a.clone().requires_grad_(True)
    b = b.clone().requires_grad_(True)
    ref = losses.symmetric_infonce(a, b, TAU, qa, qb)
    ref.backward()
    for r, o in enumerate(outs):
        sl = slice(r * B, (r + 1) * B)
        assert o["gathered"] == 2 * B
        assert o["loss"] == pytest.approx(float(ref), abs=1e-6)  # every worker: global loss
        torch.testing.assert_close(o["ga"], a.grad[sl], atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(o["gb"], b.grad[sl], atol=1e-6, rtol=1e-5)


def test_all_gather_is_identity_without_process_group():
    x = torch.randn(3, 2, requires_grad=True)
    assert all_gather_autograd(x) is x
    assert all_reduce_sum([1.5, 2.0]) == [1.5, 2.0]


def _ragged_worker(rank: int, world: int, tmp: str) -> None:
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    dist.init_process_group("gloo", init_method=f"file://{tmp}/pg2", rank=rank,
                            world_size=world)
    x = torch.full((2 + rank, 3), float(rank), requires_grad=True)
    y = all_gather_autograd(x)
    (y * torch.arange(len(y), dtype=torch.float32)[:, None]).sum().backward()
    torch.save({"y": y.detach(), "g": x.grad}, f"{tmp}/ragged{rank}.pt")
    from _dist_helpers import end_worker

    end_worker()


def test_all_gather_handles_different_row_counts(tmp_path: Path):
    mp.start_processes(_ragged_worker, args=(2, str(tmp_path)), nprocs=2, start_method="spawn")
    for r in range(2):
        o = torch.load(tmp_path / f"ragged{r}.pt")
        assert o["y"].shape == (5, 3)
        assert o["y"][:2].eq(0).all() and o["y"][2:].eq(1).all()
        rows = torch.arange(5, dtype=torch.float32)[(slice(0, 2), slice(2, 5))[r]]
        # gradient summed over both workers' (identical) losses
        torch.testing.assert_close(o["g"], 2 * rows[:, None].expand(-1, 3))
