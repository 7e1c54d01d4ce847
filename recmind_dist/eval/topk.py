"""Top-K over the whole item catalogue, in item chunks with a running merge.

For a block of users U_b and the item chunk I_c = items [lo, hi):

    S_c = U_b I_cᵀ                                (scores, [B, |c|])
    S_c[u, i] = −inf  for (u, i) in the excluded set (training items, ...)
    best ← topk_K( best ∪ topk_K(S_c) )           (running best K per user)

so after the last chunk ``best`` is the top-K of the full row ``U_b Iᵀ`` with the excluded
items masked, and no [B × I] matrix exists: memory is O(B × chunk_items). With one chunk
(``chunk_items`` ≥ I, or None) this is exactly ``torch.topk(U_b Iᵀ masked, K)``.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch


def _excluded_by_item(exclude: sp.csr_matrix, users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(batch row, item) of the users' excluded pairs, sorted by item (for chunk slicing)."""
    ex = exclude[users].tocoo()
    order = np.argsort(ex.col, kind="stable")
    return ex.row[order].astype(np.int64), ex.col[order].astype(np.int64)


@torch.no_grad()
def rank_topk(
    user_repr: torch.Tensor,
    item_repr: torch.Tensor,
    users: np.ndarray,
    exclude: sp.csr_matrix,
    k: int,
    chunk_items: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``k`` (scores, items) [B, min(k, I)] for ``users``, excluded items at −inf.

    Items are scored ``chunk_items`` at a time (None: all at once) and merged into a running
    top-``k``; rows are sorted by descending score."""
    n_items = item_repr.shape[0]
    chunk = max(1, n_items if chunk_items is None else min(int(chunk_items), n_items))
    k = min(k, n_items)
    user_block = user_repr[torch.from_numpy(np.asarray(users))]
    ex_rows, ex_cols = _excluded_by_item(exclude, users)
    best_s: torch.Tensor | None = None
    best_i: torch.Tensor | None = None
    for lo in range(0, n_items, chunk):
        hi = min(lo + chunk, n_items)
        scores = user_block @ item_repr[lo:hi].T
        a, b = np.searchsorted(ex_cols, (lo, hi))
        if b > a:
            scores[torch.from_numpy(ex_rows[a:b]), torch.from_numpy(ex_cols[a:b] - lo)] = \
                -torch.inf
        chunk_s, chunk_i = torch.topk(scores, min(k, hi - lo), dim=1)
        if lo:
            chunk_i += lo
        if best_s is None:
            best_s, best_i = chunk_s, chunk_i
            continue
        both_s = torch.cat([best_s, chunk_s], 1)
        best_s, pos = torch.topk(both_s, min(k, both_s.shape[1]), dim=1)
        best_i = torch.gather(torch.cat([best_i, chunk_i], 1), 1, pos)
    if best_s is None:  # an empty catalogue
        return user_block.new_empty((len(user_block), 0)), torch.empty((len(user_block), 0),
                                                                       dtype=torch.long)
    return best_s, best_i
