"""RecMind's gated propagation as one autograd node: value and every gradient against the
same maths through a dense Â and plain autograd."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recmind_dist.graph.adjacency import normalized_adjacency
from recmind_dist.models.gated_propagation import gated_propagation

NU, NI, D, L = 6, 8, 5, 3


def _setup(seed: int = 0):
    rng = np.random.default_rng(seed)
    keys = rng.choice(NU * NI, size=20, replace=False)
    pairs = np.stack([keys // NI, keys % NI], 1)
    adj = normalized_adjacency(NU, NI, pairs).to(torch.float64)
    g = torch.Generator().manual_seed(seed)
    n = NU + NI
    e0, z = torch.randn(n, D, generator=g, dtype=torch.float64), torch.randn(n, D, generator=g, dtype=torch.float64)
    deg = torch.rand(n, generator=g, dtype=torch.float64)
    pinned = torch.zeros(n, dtype=torch.bool)
    pinned[-1] = True  # a pinned gate (γ ≡ 1, as for an edgeless node)
    w_e, w_z = (torch.randn(L + 1, D, generator=g, dtype=torch.float64) for _ in range(2))
    w_d, b = (torch.randn(L + 1, generator=g, dtype=torch.float64) for _ in range(2))
    return adj, deg, pinned, [e0, z, w_e, w_z, w_d, b]


def _noise(seed: int = 5) -> torch.Tensor:
    return 0.3 * torch.rand(NU + NI, D, generator=torch.Generator().manual_seed(seed),
                            dtype=torch.float64)


def _perturb(x: torch.Tensor) -> torch.Tensor:
    """A fixed XSimGCL-like perturbation: x + sign(x) ⊙ n (n drawn once)."""
    return x + torch.sign(x) * _noise()


def _reference(dense: torch.Tensor, deg, pinned, e0, z, w_e, w_z, w_d, b, perturb=None,
               first_layer=0):
    """(1 − γ) E + γ z, then Â (then the perturbation), with a dense Â and autograd."""
    states, fused, gammas = [e0], [], []
    for layer in range(L + 1):
        e = states[-1]
        logit = z @ w_z[layer] + w_d[layer] * deg + b[layer] + e @ w_e[layer]
        gamma = torch.where(pinned, 1.0, torch.sigmoid(logit))[:, None]
        fused.append((1 - gamma) * e + gamma * z)
        gammas.append(gamma)
        if layer < L:
            nxt = dense @ fused[-1]
            states.append(nxt if perturb is None else perturb(nxt))
    return torch.stack(fused[first_layer:]).mean(0), states, gammas


@pytest.mark.parametrize(("perturbed", "first_layer"), [(False, 0), (True, 0), (True, 1)])
@pytest.mark.parametrize("use_states", [False, True])
def test_matches_dense_autograd_reference(use_states, perturbed, first_layer):
    """Also with a perturbation of every propagated state (a noisy backbone), whose
    gradient through sign(x) is zero: the written-out backward needs no change; and with h
    the mean of layers 1..L only (SimGCL's readout)."""
    adj, deg, pinned, inputs = _setup()
    dense = adj.to_dense()
    x1 = [t.clone().requires_grad_() for t in inputs]
    x2 = [t.clone().requires_grad_() for t in inputs]
    e0, z, w_e, w_z, w_d, b = x1
    perturb = _perturb if perturbed else None
    h, states, gammas = gated_propagation(adj, e0, z, deg, pinned, w_e, w_z, w_d, b, perturb,
                                          first_layer)
    h_ref, states_ref, gammas_ref = _reference(dense, deg, pinned, *x2, perturb=perturb,
                                               first_layer=first_layer)
    if perturbed:  # the noise really is there
        clean = _reference(dense, deg, pinned, *inputs)[1]
        assert (states[1] - clean[1]).abs().max() > 0.01
    torch.testing.assert_close(h, h_ref, rtol=1e-12, atol=1e-12)
    for a, b in zip(states + gammas, states_ref + gammas_ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    w = torch.randn_like(h)
    loss, loss_ref = (h * w).sum(), (h_ref * w).sum()
    if use_states:  # the layer states feed a loss too (the alignment's graph view)
        loss = loss + states[2].square().sum() + states[1][:3].sum()
        loss_ref = loss_ref + states_ref[2].square().sum() + states_ref[1][:3].sum()
    loss.backward()
    loss_ref.backward()
    for name, got, want in zip(("e0", "z", "w_e", "w_z", "w_d", "b"), x1, x2, strict=True):
        torch.testing.assert_close(got.grad, want.grad, rtol=1e-10, atol=1e-12, msg=name)


def test_gradcheck():
    adj, deg, pinned, inputs = _setup(1)
    x = [t.clone().requires_grad_() for t in inputs]

    def f(e0, z, w_e, w_z, w_d, b):
        h, states, _ = gated_propagation(adj, e0, z, deg, pinned, w_e, w_z, w_d, b)
        return h, states[2]

    assert torch.autograd.gradcheck(f, x)
