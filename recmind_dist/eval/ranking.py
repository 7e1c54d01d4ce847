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
the ranking is always over the full catalogue. Users are scored in batches so memory stays
O(batch × I).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp
import torch

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


@torch.no_grad()
def rank_topk(
    user_repr: torch.Tensor,
    item_repr: torch.Tensor,
    users: np.ndarray,
    exclude: sp.csr_matrix,
    k: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``k`` (scores, items) for ``users``, excluded items masked to −inf."""
    scores = user_repr[torch.from_numpy(users)] @ item_repr.T
    ex = exclude[users].tocoo()
    if ex.nnz:
        scores[torch.from_numpy(ex.row).long(), torch.from_numpy(ex.col).long()] = -torch.inf
    k = min(k, scores.shape[1])
    return torch.topk(scores, k, dim=1)


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
) -> dict[str, float]:
    """Mean metrics over users with held-out items; bucket metrics as ``{bucket}/{metric}``.
    ``progress``: a users/s bar with ETA (for a person waiting on a large catalogue)."""
    from tqdm.auto import tqdm

    user_repr = user_repr.detach().float().cpu()
    item_repr = item_repr.detach().float().cpu()
    kmax = max(ks)
    groups: dict[str, np.ndarray | None] = {"": None, **(buckets or {})}
    sums = {g: {f"{m}_at_{k}": 0.0 for m in METRICS for k in ks} for g in groups}
    counts = dict.fromkeys(groups, 0)
    n_rel_all = np.asarray(truth.sum(1)).ravel()
    eval_users = np.flatnonzero(n_rel_all > 0)
    bar = tqdm(total=len(eval_users), desc="evaluate", unit="user", disable=not progress,
               leave=False)
    for start in range(0, len(eval_users), batch_users):
        users = eval_users[start : start + batch_users]
        bar.update(len(users))
        _, top = rank_topk(user_repr, item_repr, users, exclude, kmax)
        truth_b = torch.from_numpy(truth[users].toarray() > 0)
        hit_all = torch.gather(truth_b, 1, top)
        for g, mask in groups.items():
            if mask is None:
                rel = truth_b
                hits = hit_all
            else:
                mask_t = torch.from_numpy(mask)
                rel = truth_b & mask_t
                hits = hit_all & mask_t[top]
            n_rel = rel.sum(1)
            keep = n_rel > 0
            if keep.any():
                _batch_metrics(hits[keep], n_rel[keep].double(), ks, sums[g])
                counts[g] += int(keep.sum())
    bar.close()
    result: dict[str, float] = {}
    for g, metric_sums in sums.items():
        prefix = f"{g}/" if g else ""
        n = counts[g]
        for name, total in metric_sums.items():
            result[prefix + name] = total / n if n else float("nan")
        result[prefix + "n_users"] = float(n)
    return result
