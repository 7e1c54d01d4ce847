"""Symmetric InfoNCE (hand-computed case, queues, gather hook) and the MoCo key queue."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from recmind_dist.losses import symmetric_infonce
from recmind_dist.models.queue import KeyQueue, momentum_update


def _nll(logits: list[float], target: int) -> float:
    """−log softmax(logits)[target], written out."""
    return -(logits[target] - math.log(sum(math.exp(x) for x in logits)))


def test_infonce_matches_hand_computed_case():
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    b = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    qa = torch.tensor([[-1.0, 0.0]])  # past keys of view a: negatives for b's queries
    qb = torch.tensor([[0.0, 1.0]])  # past keys of view b: negatives for a's queries
    tau = 0.5
    # a -> b: a_i · [b_0, b_1, qb_0] / τ
    l_ab0 = _nll([1.0 / tau, 0.6 / tau, 0.0 / tau], 0)
    l_ab1 = _nll([0.0 / tau, 0.8 / tau, 1.0 / tau], 1)
    # b -> a: b_i · [a_0, a_1, qa_0] / τ
    l_ba0 = _nll([1.0 / tau, 0.0 / tau, -1.0 / tau], 0)
    l_ba1 = _nll([0.6 / tau, 0.8 / tau, -0.6 / tau], 1)
    expected = 0.5 * ((l_ab0 + l_ab1) / 2 + (l_ba0 + l_ba1) / 2)
    got = symmetric_infonce(a, b, tau, queue_a=qa, queue_b=qb)
    assert got.item() == pytest.approx(expected, rel=1e-6)
    # without queues: in-batch negatives only
    l_ab = (_nll([2.0, 1.2], 0) + _nll([0.0, 1.6], 1)) / 2
    l_ba = (_nll([2.0, 0.0], 0) + _nll([1.2, 1.6], 1)) / 2
    assert symmetric_infonce(a, b, tau).item() == pytest.approx(0.5 * (l_ab + l_ba), rel=1e-6)
    # empty queues are the same as none
    empty = torch.zeros(0, 2)
    assert symmetric_infonce(a, b, tau, empty, empty).item() == pytest.approx(
        0.5 * (l_ab + l_ba), rel=1e-6)


def test_infonce_gradient_and_queue_is_constant():
    torch.manual_seed(0)
    a = torch.randn(5, 4, requires_grad=True)
    b = torch.randn(5, 4, requires_grad=True)
    q = torch.randn(7, 4, requires_grad=True)
    symmetric_infonce(a, b, 0.2, q, q).backward()
    assert a.grad is not None and b.grad is not None and q.grad is None


@pytest.mark.parametrize("queue_rows", [0, 6])
@pytest.mark.parametrize("grads", ["both", "a", "b"])
def test_closed_form_gradient_matches_autograd_cross_entropy(queue_rows, grads):
    """The fused node == ½ [CE([a bᵀ ‖ a Qbᵀ]/τ) + CE([b aᵀ ‖ b Qaᵀ]/τ)] through autograd:
    value and the gradient of every input that asks for one."""
    torch.manual_seed(3)
    a0, b0 = torch.randn(5, 4, dtype=torch.float64), torch.randn(5, 4, dtype=torch.float64)
    qa = torch.randn(queue_rows, 4, dtype=torch.float64)
    qb = torch.randn(queue_rows, 4, dtype=torch.float64)
    tau, labels = 0.3, torch.arange(5)
    results = []
    for fused in (True, False):
        a = a0.clone().requires_grad_(grads in ("both", "a"))
        b = b0.clone().requires_grad_(grads in ("both", "b"))
        if fused:
            loss = symmetric_infonce(a, b, tau, qa, qb)
        else:
            loss = 0.5 * (F.cross_entropy(torch.cat([a @ b.T, a @ qb.T], 1) / tau, labels)
                          + F.cross_entropy(torch.cat([b @ a.T, b @ qa.T], 1) / tau, labels))
        (2.5 * loss).backward()  # a non-unit upstream gradient
        results.append((loss.detach(), a.grad, b.grad))
    (lf, af, bf), (lr, ar, br) = results
    assert torch.allclose(lf, lr, rtol=1e-12)
    for got, want in ((af, ar), (bf, br)):
        assert (got is None) == (want is None)
        if want is not None:
            assert torch.allclose(got, want, rtol=1e-10, atol=1e-12)
    a, b = a0.clone().requires_grad_(), b0.clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: symmetric_infonce(a, b, tau, qa, qb), (a, b))


def test_grouped_call_is_the_mean_of_the_groups():
    """[G, B, d] views with [G, Q, d] queues == the mean of G separate calls, value and
    gradients (RecMind aligns users and items in one call)."""
    torch.manual_seed(4)
    a0, b0 = torch.randn(2, 5, 4, dtype=torch.float64), torch.randn(2, 5, 4, dtype=torch.float64)
    qa, qb = torch.randn(2, 3, 4, dtype=torch.float64), torch.randn(2, 3, 4, dtype=torch.float64)
    a, b = a0.clone().requires_grad_(), b0.clone().requires_grad_()
    grouped = symmetric_infonce(a, b, 0.3, qa, qb)
    grouped.backward()
    a2, b2 = a0.clone().requires_grad_(), b0.clone().requires_grad_()
    apart = 0.5 * sum(symmetric_infonce(a2[g], b2[g], 0.3, qa[g], qb[g]) for g in range(2))
    apart.backward()
    assert torch.allclose(grouped, apart, rtol=1e-12)
    assert torch.allclose(a.grad, a2.grad, rtol=1e-10) and torch.allclose(b.grad, b2.grad, rtol=1e-10)
    # the gather hook sees each group's rows: [B, G·d] blocks, split back per group
    other = torch.randn(2, 2, 4, dtype=torch.float64)

    def fake_gather(x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, other.transpose(0, 1).reshape(2, -1)])

    got = symmetric_infonce(a0, b0, 0.3, gather=fake_gather)
    want = symmetric_infonce(torch.cat([a0, other], 1), torch.cat([b0, other], 1), 0.3)
    assert torch.allclose(got, want, rtol=1e-12)


def test_gather_hook_is_applied_to_both_views():
    torch.manual_seed(1)
    a, b = torch.randn(3, 4), torch.randn(3, 4)
    other_a, other_b = torch.randn(2, 4), torch.randn(2, 4)  # "another worker's batch"
    calls = []

    def fake_gather(x: torch.Tensor) -> torch.Tensor:
        calls.append(x.shape[0])
        other = other_a if len(calls) == 1 else other_b
        return torch.cat([x, other])

    got = symmetric_infonce(a, b, 0.3, gather=fake_gather)
    want = symmetric_infonce(torch.cat([a, other_a]), torch.cat([b, other_b]), 0.3)
    assert calls == [3, 3]
    assert torch.allclose(got, want)


def test_queue_fifo_size_and_overflow():
    q = KeyQueue(2, 4)
    assert len(q) == 0 and q.keys().shape == (0, 2)
    q.enqueue(torch.tensor([[1.0, 1], [2, 2]]))
    assert len(q) == 2
    assert q.contents()[:, 0].tolist() == [1, 2]
    q.enqueue(torch.tensor([[3.0, 3], [4, 4], [5, 5]]))  # wraps: 1 is the oldest, dropped
    assert len(q) == 4 and q.keys().shape == (4, 2)
    assert q.contents()[:, 0].tolist() == [2, 3, 4, 5]
    q.enqueue(torch.arange(12, dtype=torch.float32).reshape(6, 2))  # more than size: newest 4
    assert q.contents()[:, 0].tolist() == [4, 6, 8, 10]
    x = torch.ones(1, 2, requires_grad=True)
    q.enqueue(x * 7)
    assert not q.buf.requires_grad
    assert q.contents()[-1].tolist() == [7, 7]
    assert KeyQueue(2, 0).keys().shape == (0, 2)
    grouped = KeyQueue(2, 3, groups=2)  # two rings that move together
    grouped.enqueue(torch.arange(16, dtype=torch.float32).reshape(2, 4, 2))  # > size: newest 3
    assert len(grouped) == 3 and grouped.keys().shape == (2, 3, 2)
    assert grouped.contents()[:, :, 0].tolist() == [[2, 4, 6], [10, 12, 14]]
    restored = KeyQueue(2, 4)  # a checkpoint restores the ring's position and fill
    restored.load_state_dict(q.state_dict())
    assert len(restored) == 4 and torch.equal(restored.contents(), q.contents())
    restored.enqueue(torch.tensor([[8.0, 8]]))
    assert restored.contents()[:, 0].tolist() == [8, 10, 7, 8]


def test_momentum_update():
    torch.manual_seed(0)
    online, key = nn.Linear(3, 2), nn.Linear(3, 2)
    w_k, w_q = key.weight.detach().clone(), online.weight.detach().clone()
    momentum_update(key, online, 0.9)
    assert torch.allclose(key.weight, 0.9 * w_k + 0.1 * w_q)
    momentum_update(key, online, 0.0)
    assert torch.equal(key.weight, online.weight)
