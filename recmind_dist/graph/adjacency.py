"""The normalised bipartite adjacency of LightGCN.

Nodes are users ``0..U-1`` followed by items ``U..U+I-1``. With ``R`` the U×I training
interaction matrix,

    A = [[0, R], [Rᵀ, 0]],   Â = D^{-1/2} A D^{-1/2},

where ``D`` is the diagonal degree matrix of ``A``. Isolated nodes (degree 0) get zero rows.
Â is symmetric, which :mod:`recmind_dist.graph.propagate` uses for a cheap backward pass.
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.sparse as sp
import torch


def bipartite_adjacency(n_users: int, n_items: int, pairs: np.ndarray) -> sp.csr_matrix:
    """Unnormalised symmetric (U+I)×(U+I) adjacency from (user, item) pairs (duplicates merged)."""
    n = n_users + n_items
    u = pairs[:, 0].astype(np.int64)
    i = pairs[:, 1].astype(np.int64) + n_users
    rows = np.concatenate([u, i])
    cols = np.concatenate([i, u])
    a = sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(n, n))
    a.sum_duplicates()
    a.data[:] = 1.0
    return a


def normalize_symmetric(a: sp.csr_matrix) -> sp.csr_matrix:
    """Â = D^{-1/2} A D^{-1/2}; rows of isolated nodes stay zero."""
    deg = np.asarray(a.sum(axis=1)).ravel()
    with np.errstate(divide="ignore"):
        d_inv_sqrt = np.where(deg > 0, 1.0 / np.sqrt(deg), 0.0).astype(np.float32)
    d = sp.diags(d_inv_sqrt)
    out = (d @ a @ d).tocsr()
    out.sort_indices()
    return out.astype(np.float32)


def to_torch_csr(a: sp.csr_matrix, device: torch.device | str = "cpu") -> torch.Tensor:
    """scipy CSR -> ``torch.sparse_csr_tensor`` (int64 indices, float32 values)."""
    with warnings.catch_warnings():  # "CSR support is in beta": we rely on spmm only
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(
            torch.from_numpy(a.indptr.astype(np.int64)),
            torch.from_numpy(a.indices.astype(np.int64)),
            torch.from_numpy(a.data.astype(np.float32)),
            size=a.shape,
            device=device,
        )


def normalized_adjacency(
    n_users: int, n_items: int, pairs: np.ndarray, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """Â of the training graph as a torch CSR tensor."""
    return to_torch_csr(normalize_symmetric(bipartite_adjacency(n_users, n_items, pairs)), device)


def normalized_degree(n_users: int, n_items: int, pairs: np.ndarray) -> np.ndarray:
    """d̃_v = log(1 + deg_v) / max_w log(1 + deg_w), in [0, 1], for every node (users first)."""
    deg = np.concatenate(
        [
            np.bincount(pairs[:, 0], minlength=n_users),
            np.bincount(pairs[:, 1], minlength=n_items),
        ]
    ).astype(np.float64)
    logd = np.log1p(deg)
    top = logd.max() if len(logd) and logd.max() > 0 else 1.0
    return (logd / top).astype(np.float32)
