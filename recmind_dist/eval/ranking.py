"""Full-ranking top-K metrics over the whole item catalogue.

For a user u with relevant set T_u (held-out items), and the top-K list r_1..r_K of all items
not in the user's excluded set (training items, plus validation items when testing):

* Recall@K    = |top-K ∩ T_u| / |T_u|
* Precision@K = |top-K ∩ T_u| / K
* Hit@K       = 1[|top-K ∩ T_u| > 0]
* NDCG@K      = Σ_k 1[r_k ∈ T_u] / log2(k+1)  /  Σ_{k ≤ min(K, |T_u|)} 1 / log2(k+1)
* MRR@K       = 1 / (rank of the first hit), 0 if none in the top K

averaged over users with |T_u| > 0. Bucket metrics restrict T_u to the items of a bucket
(e.g. cold items with training degree ≤ 3) and average over users with a relevant item in it;
the ranking is always over the full catalogue. Users are scored in batches and items in
chunks with a running top-K (:mod:`recmind_dist.eval.topk`), so memory stays
O(batch × chunk), and the users can be split over the workers of a process group
(:mod:`recmind_dist.eval.workers`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp
import torch

from recmind_dist.eval.topk import rank_topk
from recmind_dist.eval.workers import eval_world, sum_over_workers, worker_share

METRICS = ("recall", "ndcg", "precision", "hit", "mrr")


def interaction_matrix(n_users: int, n_items: int, *pair_sets: np.ndarray) -> sp.csr_matrix:
    """Binary U×I CSR matrix of the union of the given (user, item) pair arrays."""
    pairs = np.concatenate([p for p in pair_sets if len(p)] or [np.zeros((0, 2), np.int64)])
    m = sp.csr_matrix(
        (np.ones(len(pairs), dtype=np.float32), (pairs[:, 0], pairs[:, 1])),
        shape=(n_users, n_items),
    )
    m.sum_duplicates()
    m.data[:] = 1.0
    return m


def degree_buckets(
    item_degree: np.ndarray, cold_degree: int = 3, head_fraction: float = 0.2
) -> dict[str, np.ndarray]:
    """Boolean item masks: cold (deg ≤ cold_degree), head (top ``head_fraction`` of items by
    degree, excluding cold), tail (the rest)."""
    n = len(item_degree)
    cold = item_degree <= cold_degree
    order = np.argsort(-item_degree, kind="stable")
    head = np.zeros(n, dtype=bool)
    head[order[: round(n * head_fraction)]] = True
    head &= ~cold
    tail = ~cold & ~head
    return {"cold": cold, "tail": tail, "head": head}


def _dcg_weights(k: int, device: torch.device) -> torch.Tensor:
    return 1.0 / torch.log2(torch.arange(2, k + 2, device=device, dtype=torch.float64))


def _batch_metrics(
    hits: torch.Tensor, n_rel: torch.Tensor, ks: Sequence[int], out: dict[str, float]
) -> None:
    """Accumulate metric sums for a batch. hits: [B, Kmax] bool; n_rel: [B] (all > 0)."""
    hits = hits.double()
    w = _dcg_weights(hits.shape[1], hits.device)
    first = torch.where(hits.any(1), hits.argmax(1).double() + 1, torch.inf)
    ideal_cum = torch.cumsum(w, 0)
    for k in ks:
        h = hits[:, :k]
        n_hit = h.sum(1)
        dcg = (h * w[:k]).sum(1)
        idcg = ideal_cum[torch.clamp(n_rel, max=k).long() - 1]
        out[f"recall_at_{k}"] += float((n_hit / n_rel).sum())
        out[f"precision_at_{k}"] += float((n_hit / k).sum())
        out[f"hit_at_{k}"] += float((n_hit > 0).double().sum())
        out[f"ndcg_at_{k}"] += float((dcg / idcg).sum())
        out[f"mrr_at_{k}"] += float(torch.where(first <= k, 1.0 / first, 0.0).sum())


def _relevant(truth: sp.csr_matrix, users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(batch row, item) of the users' held-out items, sorted by (row, item)."""
    block = truth[users]
    block.sort_indices()
    rows = np.repeat(np.arange(len(users), dtype=np.int64), np.diff(block.indptr))
    return rows, block.indices.astype(np.int64)


def _hits(rel_rows: np.ndarray, rel_cols: np.ndarray, top: np.ndarray, n_items: int
          ) -> np.ndarray:
    """``hits[b, r]``: the r-th ranked item of batch user b is one of b's held-out items
    (a sorted-key lookup; no [B × I] matrix)."""
    keys = rel_rows * n_items + rel_cols
    query = np.arange(len(top), dtype=np.int64)[:, None] * n_items + top
    pos = np.searchsorted(keys, query)
    found = pos < len(keys)
    hits = np.zeros(query.shape, dtype=bool)
    hits[found] = keys[pos[found]] == query[found]
    return hits


@torch.no_grad()
def evaluate_ranking(
    user_repr: torch.Tensor,
    item_repr: torch.Tensor,
    truth: sp.csr_matrix,
    exclude: sp.csr_matrix,
    ks: Sequence[int] = (10, 20, 40),
    buckets: dict[str, np.ndarray] | None = None,
    batch_users: int = 1024,
    progress: bool = False,
    chunk_items: int | None = None,
    over_workers: bool = False,
) -> dict[str, float]:
    """Mean metrics over users with held-out items; bucket metrics as ``{bucket}/{metric}``.

    Users are ranked ``batch_users`` at a time over item chunks of ``chunk_items`` (None: the
    whole catalogue) with :func:`recmind_dist.eval.topk.rank_topk`, so memory stays
    O(batch_users × chunk_items). ``over_workers``: inside a ``torch.distributed`` process
    group every worker calls this with the full tables, scores its share of the users and
    returns the metrics of all users (:mod:`recmind_dist.eval.workers`).
    ``progress``: a users/s bar with ETA (worker 0's share)."""
    from tqdm.auto import tqdm

    user_repr = user_repr.detach().float().cpu()
    item_repr = item_repr.detach().float().cpu()
    n_items = item_repr.shape[0]
    kmax = max(ks)
    groups: dict[str, np.ndarray | None] = {"": None, **(buckets or {})}
    sums = {g: {f"{m}_at_{k}": 0.0 for m in METRICS for k in ks} for g in groups}
    counts = dict.fromkeys(groups, 0)
    n_rel_all = np.asarray(truth.sum(1)).ravel()
    eval_users = np.flatnonzero(n_rel_all > 0)
    rank, world = eval_world() if over_workers else (0, 1)
    eval_users = worker_share(eval_users, rank, world)
    bar = tqdm(total=len(eval_users), desc="evaluate", unit="user",
               disable=not progress or rank != 0, leave=False)
    for start in range(0, len(eval_users), batch_users):
        users = eval_users[start : start + batch_users]
        top_s, top = rank_topk(user_repr, item_repr, users, exclude, kmax, chunk_items)
        top_np = top.numpy()
        rel_rows, rel_cols = _relevant(truth, users)
        # a masked (−inf) item is not in the ranked list: reached only with < K candidates
        hit_all = _hits(rel_rows, rel_cols, top_np, n_items) & np.isfinite(top_s.numpy())
        for g, mask in groups.items():
            if mask is None:
                n_rel = np.bincount(rel_rows, minlength=len(users))
                hits = hit_all
            else:
                n_rel = np.bincount(rel_rows, weights=mask[rel_cols], minlength=len(users))
                hits = hit_all & mask[top_np]
            keep = n_rel > 0
            if keep.any():
                _batch_metrics(torch.from_numpy(hits[keep]),
                               torch.from_numpy(n_rel[keep].astype(np.float64)), ks, sums[g])
                counts[g] += int(keep.sum())
        bar.update(len(users))
    bar.close()
    names = [(g, name) for g in groups for name in sums[g]]
    totals = sum_over_workers(np.array([sums[g][name] for g, name in names]
                                       + [counts[g] for g in groups], dtype=np.float64), world)
    metric_totals = dict(zip(names, totals[: len(names)], strict=True))
    user_counts = dict(zip(groups, totals[len(names) :], strict=True))
    result: dict[str, float] = {}
    for g in groups:
        prefix = f"{g}/" if g else ""
        n = user_counts[g]
        for name in sums[g]:
            result[prefix + name] = float(metric_totals[g, name] / n) if n else float("nan")
        result[prefix + "n_users"] = float(n)
    return result
