"""Node partitions of the (U+I) bipartite graph for partitioned propagation.

* :func:`metis_partition` -- METIS k-way (pymetis) on the symmetric adjacency: balanced parts
  with few cut edges, so each worker's halo (remote neighbours) is small. ``weights``:
  ``"nodes"`` balances the node count, ``"nnz"`` the work: vertex weight ``deg(v) + 1``, so
  every part holds about the same number of non-zeros of Â (and one output row per node).
  On the power-law synthetic 1M-node graph node-balanced parts hold 3.5M and 16.5M of the
  20M non-zeros, so the slower worker does 1.65x the balanced share of every sparse product
  (benchmarks/scale_epoch.py); nnz-balanced parts hold 10.0M each.
* :func:`random_partition` -- a balanced random assignment (the baseline: nearly every edge
  is cut once there are many parts).
* :func:`load_or_partition` -- either of them, cached as ``.npy`` under ``cache_dir`` keyed by
  :func:`graph_checksum` (sha256 of the CSR structure), the method, the part count and the
  seed; written atomically (:func:`recmind_dist.io.atomic_path`).
* :func:`halo_stats` -- own rows, halo rows, cut edges and halo bytes per layer per part.

Partitions are int32 arrays ``parts[node] in 0..n_parts-1`` (users first, then items).
"""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path
from typing import Literal

import numpy as np
import scipy.sparse as sp

from recmind_dist.io import atomic_path

log = logging.getLogger(__name__)

Method = Literal["metis", "metis_nnz", "random"]
Weights = Literal["nodes", "nnz"]

__all__ = [
    "graph_checksum",
    "halo_stats",
    "load_or_partition",
    "metis_partition",
    "random_partition",
]


def graph_checksum(a: sp.csr_matrix) -> str:
    """sha256 (16 hex) of the CSR structure (shape, indptr, indices); values are ignored."""
    h = hashlib.sha256()
    h.update(np.asarray(a.shape, dtype=np.int64).tobytes())
    h.update(np.ascontiguousarray(a.indptr, dtype=np.int64).tobytes())
    h.update(np.ascontiguousarray(a.indices, dtype=np.int64).tobytes())
    return h.hexdigest()[:16]


def metis_partition(a: sp.csr_matrix, n_parts: int, seed: int = 0,
                    weights: Weights = "nodes") -> np.ndarray:
    """METIS k-way partition of the symmetric graph ``a`` (no self-loops) into ``n_parts``,
    balancing the node count (``weights="nodes"``) or ``Σ_v (deg(v) + 1)`` (``"nnz"``)."""
    if n_parts == 1:
        return np.zeros(a.shape[0], dtype=np.int32)
    import pymetis

    a = a.tocsr()
    if a.diagonal().any():  # METIS rejects self-loops
        a = a.copy()
        a.setdiag(0)
        a.eliminate_zeros()
    t0 = time.perf_counter()
    log.info("METIS: partitioning %d nodes / %d edges into %d parts (one call, no progress to "
             "report; ~2 s per 200k nodes / 2M edges on one core)...", a.shape[0], a.nnz // 2,
             n_parts)
    opts = pymetis.Options(seed=seed)
    csr = pymetis.CSRAdjacency(a.indptr.astype(np.int64), a.indices.astype(np.int64))
    vweights = None
    if weights == "nnz":
        vweights = (np.diff(a.indptr) + 1).astype(np.int64)
    elif weights != "nodes":
        raise ValueError(f"unknown METIS vertex weights {weights!r} (nodes|nnz)")
    _, membership = pymetis.part_graph(n_parts, csr, vweights=vweights, options=opts)
    parts = np.asarray(membership, dtype=np.int32)
    log.info("METIS: %d nodes into %d parts in %.1fs", a.shape[0], n_parts,
             time.perf_counter() - t0)
    return parts


def random_partition(n_nodes: int, n_parts: int, seed: int = 0) -> np.ndarray:
    """Balanced random partition: a seeded permutation dealt round-robin."""
    parts = np.empty(n_nodes, dtype=np.int32)
    parts[np.random.default_rng(seed).permutation(n_nodes)] = np.arange(n_nodes) % n_parts
    return parts


def load_or_partition(a: sp.csr_matrix, n_parts: int, method: Method = "metis",
                      cache_dir: str | Path | None = None, seed: int = 0) -> np.ndarray:
    """Partition ``a`` (cached under ``cache_dir`` when given)."""
    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / f"{graph_checksum(a)}-{method}-{n_parts}-s{seed}.npy"
        if path.is_file():
            parts = np.load(path)
            if len(parts) == a.shape[0]:
                return parts
    if method == "metis":
        parts = metis_partition(a, n_parts, seed)
    elif method == "metis_nnz":
        parts = metis_partition(a, n_parts, seed, weights="nnz")
    elif method == "random":
        parts = random_partition(a.shape[0], n_parts, seed)
    else:
        raise ValueError(f"unknown partitioner {method!r} (metis|metis_nnz|random)")
    if path is not None:
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.save(f, parts)
    return parts


def halo_stats(a: sp.csr_matrix, parts: np.ndarray, n_parts: int, dim: int = 64,
               bytes_per_value: int = 4) -> list[dict[str, float]]:
    """Per part: own rows, halo rows (distinct remote neighbours), local/cut nnz, and the
    bytes it receives per propagation layer (``halo * dim * bytes_per_value``)."""
    a = a.tocsr()
    rows = np.repeat(np.arange(a.shape[0]), np.diff(a.indptr))
    cols = a.indices
    out = []
    for p in range(n_parts):
        sel = parts[rows] == p
        c = cols[sel]
        remote = c[parts[c] != p]
        halo = len(np.unique(remote))
        out.append({
            "part": p, "own_rows": int((parts == p).sum()), "halo_rows": halo,
            "nnz": int(sel.sum()), "cut_nnz": len(remote),
            "halo_bytes_per_layer": halo * dim * bytes_per_value,
        })
    return out
