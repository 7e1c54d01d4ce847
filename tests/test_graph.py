import numpy as np
import torch

from recmind_dist.graph.adjacency import normalized_adjacency, normalized_degree
from recmind_dist.graph.propagate import lightgcn_layers, propagate


def _dense_norm_adj(nu: int, ni: int, pairs: np.ndarray) -> np.ndarray:
    a = np.zeros((nu + ni, nu + ni))
    for u, i in pairs:
        a[u, nu + i] = a[nu + i, u] = 1.0
    d = a.sum(1)
    dinv = np.where(d > 0, d ** -0.5, 0.0)
    return dinv[:, None] * a * dinv[None, :]


def _pairs(seed=0, nu=7, ni=9, n=25):
    rng = np.random.default_rng(seed)
    keys = rng.choice(nu * ni, size=n, replace=False)
    return np.stack([keys // ni, keys % ni], 1), nu, ni


def test_normalized_adjacency_matches_dense():
    pairs, nu, ni = _pairs()
    adj = normalized_adjacency(nu, ni, pairs).to_dense().numpy()
    np.testing.assert_allclose(adj, _dense_norm_adj(nu, ni, pairs), atol=1e-6)


def test_propagation_and_gradient_match_dense_product():
    pairs, nu, ni = _pairs(1)
    adj = normalized_adjacency(nu, ni, pairs)
    dense = torch.tensor(_dense_norm_adj(nu, ni, pairs), dtype=torch.float32)
    x = torch.randn(nu + ni, 5, requires_grad=True)
    x2 = x.detach().clone().requires_grad_(True)
    layers = lightgcn_layers(adj, x, 3)
    ref = [x2]
    for _ in range(3):
        ref.append(dense @ ref[-1])
    for a, b in zip(layers, ref, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    w = torch.randn(nu + ni, 5)
    (torch.stack(layers).mean(0) * w).sum().backward()
    (torch.stack(ref).mean(0) * w).sum().backward()
    torch.testing.assert_close(x.grad, x2.grad, atol=1e-5, rtol=1e-5)


def test_isolated_node_propagates_to_zero():
    pairs = np.array([[0, 0], [1, 0]])
    adj = normalized_adjacency(3, 2, pairs)  # user 2 and item 1 isolated
    y = propagate(adj, torch.ones(5, 2))
    assert torch.all(y[2] == 0) and torch.all(y[4] == 0)


def test_normalized_degree_range():
    pairs, nu, ni = _pairs(2)
    d = normalized_degree(nu, ni, pairs)
    assert d.shape == (nu + ni,) and d.min() >= 0 and abs(d.max() - 1) < 1e-6
