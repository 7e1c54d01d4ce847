"""Partitioned propagation: each worker owns its rows of Â and of the embedding table.

With a node partition ``parts`` (:mod:`recmind_dist.graph.partition`), worker ``r`` holds

* ``own``: the global ids it owns (sorted) and ``x_own`` = their embedding rows;
* ``Â_r``: its rows of Â, columns renumbered ``[own..., halo...]`` where ``halo`` are the
  distinct remote neighbours, grouped by owner rank (plus Â_rᵀ for the backward pass);
* ``send_idx[q]``: which of its own rows worker ``q`` needs (``q``'s halo from ``r``).

One layer is ``y_own = Â_r [x_own; halo(x_own)]``. :class:`_Exchange` moves rows between
workers with ``all_to_all_single`` and is differentiable: its backward sends the halo's
gradient back to the owners, which add it onto their rows (``index_add``). So a worker keeps
own rows + halo (+ the Adam state of its own rows), never the whole table, and the result
equals single-process propagation up to float round-off (tests: 2 and 3 workers).

The models over it are :class:`recmind_dist.models.partitioned_lightgcn.PartitionedLightGCN`
and :class:`recmind_dist.models.partitioned_recmind.PartitionedRecMind`; the driver's partition
plan is :func:`recmind_dist.train.partition_plan.plan_partition`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
import torch.distributed as dist

from recmind_dist.graph.adjacency import to_torch_csr

log = logging.getLogger(__name__)

__all__ = [
    "LocalGraph",
    "PartitionedAdjacency",
    "all_gather_rows",
    "exchange_rows",
    "fetch_rows",
    "gather_full",
    "owner_maps",
    "split_graph",
]


@dataclass
class LocalGraph:
    """Worker ``rank``'s share of Â (numpy; picklable, built once by the driver)."""

    rank: int
    world: int
    n_nodes: int
    own: np.ndarray  # (n_own,) int64 global ids, sorted
    indptr: np.ndarray  # CSR of Â_r: (n_own, n_own + n_halo), local columns
    indices: np.ndarray
    data: np.ndarray
    halo: np.ndarray  # (n_halo,) global ids, grouped by owner rank
    recv_counts: list[int]  # halo rows coming from each rank
    send_idx: list[np.ndarray]  # own-row positions each rank needs from this one
    parts: np.ndarray | None = None  # global node -> owner (for fetching batch rows)

    @property
    def n_own(self) -> int:
        return len(self.own)

    def nbytes(self) -> int:
        arrays = [self.own, self.indptr, self.indices, self.data, self.halo, *self.send_idx]
        return int(sum(a.nbytes for a in arrays))


def split_graph(a_norm: sp.csr_matrix, parts: np.ndarray, world: int,
                keep_parts: bool = True) -> list[LocalGraph]:
    """Cut the normalised Â into ``world`` :class:`LocalGraph` s along ``parts``."""
    a_norm = a_norm.tocsr()
    n = a_norm.shape[0]
    parts = np.asarray(parts, dtype=np.int32)
    owns = [np.flatnonzero(parts == r).astype(np.int64) for r in range(world)]
    pos_in_owner = np.empty(n, dtype=np.int64)  # global id -> row position at its owner
    for r in range(world):
        pos_in_owner[owns[r]] = np.arange(len(owns[r]))
    halos, subs = [], []
    for r in range(world):
        sub = a_norm[owns[r]]
        cols = sub.indices.astype(np.int64)
        remote = np.unique(cols[parts[cols] != r])
        halo = remote[np.argsort(parts[remote], kind="stable")]  # grouped by owner
        local = np.empty(n, dtype=np.int64)  # only entries of own + halo are read
        local[owns[r]] = np.arange(len(owns[r]))
        local[halo] = len(owns[r]) + np.arange(len(halo))
        subs.append((sub.indptr.astype(np.int64), local[cols], sub.data.astype(np.float32)))
        halos.append(halo)
        del local
    out = []
    for r in range(world):
        halo = halos[r]
        recv = [int((parts[halo] == q).sum()) for q in range(world)]
        send = []
        for q in range(world):
            need = halos[q][parts[halos[q]] == r]  # q's halo rows owned by r (q's order)
            send.append(pos_in_owner[need])
        indptr, indices, data = subs[r]
        out.append(LocalGraph(r, world, n, owns[r], indptr, indices, data, halo, recv, send,
                              parts if keep_parts else None))
    return out


class _Exchange(torch.autograd.Function):
    """Rows ``x[send_cat]`` go out by rank (``send_counts``), ``recv_counts`` rows come in;
    backward: the reverse exchange, gradients index-added onto the sent rows."""

    @staticmethod
    def forward(ctx, x, send_cat, send_counts, recv_counts, group):
        ctx.save_for_backward(send_cat)
        ctx.meta = (x.shape[0], send_counts, recv_counts, group)
        out = x.new_empty((sum(recv_counts), x.shape[1]))
        dist.all_to_all_single(out, x[send_cat].contiguous(), output_split_sizes=recv_counts,
                               input_split_sizes=send_counts, group=group)
        return out

    @staticmethod
    def backward(ctx, grad):
        (send_cat,) = ctx.saved_tensors
        n, send_counts, recv_counts, group = ctx.meta
        back = grad.new_empty((sum(send_counts), grad.shape[1]))
        dist.all_to_all_single(back, grad.contiguous(), output_split_sizes=send_counts,
                               input_split_sizes=recv_counts, group=group)
        gx = grad.new_zeros((n, grad.shape[1]))
        gx.index_add_(0, send_cat, back)
        return gx, None, None, None, None


def exchange_rows(x: torch.Tensor, send_cat: torch.Tensor, send_counts: list[int],
                  recv_counts: list[int], group: Any = None) -> torch.Tensor:
    """Differentiable all-to-all of rows of ``x`` (see :class:`_Exchange`)."""
    return _Exchange.apply(x, send_cat, list(send_counts), list(recv_counts), group)


class _LocalSpMM(torch.autograd.Function):
    """``Â_r @ x`` with the precomputed transpose for the backward pass."""

    @staticmethod
    def forward(ctx, adj, adj_t, x):
        ctx.adj_t = adj_t
        return torch.sparse.mm(adj, x)

    @staticmethod
    def backward(ctx, grad):
        return None, None, torch.sparse.mm(ctx.adj_t, grad.contiguous())


class PartitionedAdjacency:
    """Â_r of one worker plus its halo exchange plan; ``propagate(x_own) -> (Â x)_own``.

    Stands in for the CSR tensor in :func:`recmind_dist.graph.propagate.propagate`.
    ``halo_bytes`` counts the bytes this worker received in forward exchanges.
    """

    def __init__(self, lg: LocalGraph, device: torch.device | str = "cpu",
                 group: Any = None) -> None:
        self.lg, self.group, self.device = lg, group, torch.device(device)
        n_cols = lg.n_own + len(lg.halo)
        a = sp.csr_matrix((lg.data, lg.indices, lg.indptr), shape=(lg.n_own, n_cols))
        self.adj = to_torch_csr(a, device)
        self.adj_t = to_torch_csr(a.T.tocsr(), device)
        del a
        self.send_cat = torch.from_numpy(np.concatenate(lg.send_idx).astype(np.int64)).to(device)
        self.send_counts = [len(s) for s in lg.send_idx]
        self.recv_counts = list(lg.recv_counts)
        self.halo_bytes = 0

    def halo(self, x_own: torch.Tensor) -> torch.Tensor:
        self.halo_bytes += sum(self.recv_counts) * x_own.shape[1] * x_own.element_size()
        return exchange_rows(x_own, self.send_cat, self.send_counts, self.recv_counts,
                             self.group)

    def propagate(self, x_own: torch.Tensor) -> torch.Tensor:
        x = torch.cat([x_own, self.halo(x_own)], 0)
        return _LocalSpMM.apply(self.adj, self.adj_t, x)


def partitioned_layers(padj: PartitionedAdjacency, x0_own: torch.Tensor,
                       n_layers: int) -> list[torch.Tensor]:
    out = [x0_own]
    for _ in range(n_layers):
        out.append(padj.propagate(out[-1]))
    return out


def fetch_rows(x_own: torch.Tensor, ids: torch.Tensor, parts: torch.Tensor,
               pos_in_owner: torch.Tensor, world: int, group: Any = None) -> torch.Tensor:
    """Rows of the global table for global ``ids`` (any owner), differentiable: two
    non-differentiable all-to-alls agree on who sends what, then :func:`exchange_rows`."""
    owner = parts[ids]
    order = torch.argsort(owner, stable=True)
    want = pos_in_owner[ids[order]]  # positions at the owners
    req_counts = torch.bincount(owner, minlength=world)
    in_counts = torch.empty_like(req_counts)
    dist.all_to_all_single(in_counts, req_counts, group=group)
    req_counts_l, in_counts_l = req_counts.tolist(), in_counts.tolist()
    asked = want.new_empty(sum(in_counts_l))
    dist.all_to_all_single(asked, want, output_split_sizes=in_counts_l,
                           input_split_sizes=req_counts_l, group=group)
    got = exchange_rows(x_own, asked, in_counts_l, req_counts_l, group)
    out = torch.empty_like(got)
    out = out.index_copy(0, order, got)  # differentiable scatter back to request order
    return out


def owner_maps(lg: LocalGraph, device: torch.device | str = "cpu"
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """(owner rank, row position at the owner) of every global node, as int64 tensors -- what
    :func:`fetch_rows` needs to find a row (``lg.parts`` must be kept)."""
    parts = np.asarray(lg.parts, dtype=np.int64)
    pos = np.empty(lg.n_nodes, dtype=np.int64)
    for r in range(lg.world):
        sel = np.flatnonzero(parts == r)
        pos[sel] = np.arange(len(sel))
    return torch.from_numpy(parts).to(device), torch.from_numpy(pos).to(device)


def gather_full(x_own: torch.Tensor, lg: LocalGraph, group: Any = None) -> torch.Tensor | None:
    """Collective: the full table ``[N, ...]`` of the per-worker rows ``x_own`` ``[n_own, ...]``
    on rank 0 (None elsewhere), via a padded ``dist.gather`` (bool tables travel as uint8)."""
    parts = lg.parts
    n_max = max(int((parts == r).sum()) for r in range(lg.world))
    flat = x_own.reshape(x_own.shape[0], -1)
    send = flat.to(torch.uint8) if flat.dtype == torch.bool else flat
    pad = send.new_zeros((n_max, send.shape[1]))
    pad[: send.shape[0]] = send
    bufs = [torch.empty_like(pad) for _ in range(lg.world)] if lg.rank == 0 else None
    dist.gather(pad, bufs, dst=0, group=group)
    if lg.rank != 0:
        return None
    full = pad.new_empty((lg.n_nodes, pad.shape[1]))
    for r in range(lg.world):
        sel = torch.from_numpy(np.flatnonzero(parts == r)).to(full.device)
        full[sel] = bufs[r][: len(sel)]
    return full.to(x_own.dtype).reshape(lg.n_nodes, *x_own.shape[1:])


def all_gather_rows(x: torch.Tensor, world: int, group: Any = None
                    ) -> tuple[torch.Tensor, list[int]]:
    """(``cat([x_0, ..., x_{W-1}], 0)`` over workers, the row count of each), not
    differentiable (e.g. batch ids); the first dimension may differ between workers."""
    n = torch.tensor([x.shape[0]], dtype=torch.int64, device=x.device)
    sizes = [torch.zeros_like(n) for _ in range(world)]
    dist.all_gather(sizes, n, group=group)
    counts = [int(s) for s in sizes]
    pad = x.new_zeros((max(counts), *x.shape[1:]))
    pad[: x.shape[0]] = x
    parts = [torch.empty_like(pad) for _ in range(world)]
    dist.all_gather(parts, pad.contiguous(), group=group)
    return torch.cat([p[:c] for p, c in zip(parts, counts, strict=True)], 0), counts
