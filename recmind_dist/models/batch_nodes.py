"""The distinct nodes of a BPR batch, by type, optionally cut to a random k of each.

For a batch (u_b, i_b, j_b), b = 1..B, over N = U + I nodes (users first):

    users = {u_b},   items = {U + i_b}      (positives only; ascending node ids)

each then cut to k of its nodes drawn uniformly without replacement (``torch.randperm``) when
it has more than k (k = 0: all of them). RecMind aligns these nodes and, end to end, re-encodes
their texts with gradient.
"""

from __future__ import annotations

import torch

from recmind_dist.models.base import Batch

__all__ = ["distinct_batch_nodes"]


def distinct_batch_nodes(batch: Batch, n_users: int, n_items: int, k: int,
                         same_count: bool) -> list[torch.Tensor]:
    """[users, items] as node ids (ascending as ``torch.unique`` would give them, from one mask
    over all N nodes instead of a sort), each cut to a random k of them (k = 0: all).
    ``same_count``: both cut to the smaller of k and the two counts."""
    mask = torch.zeros(n_users + n_items, dtype=torch.bool, device=batch.users.device)
    mask[batch.users] = True
    mask[batch.pos + n_users] = True
    nodes = mask.nonzero().squeeze(1)
    n_u = int(mask[:n_users].sum())
    parts = [nodes[:n_u], nodes[n_u:]]
    if same_count:
        k = min(len(parts[0]), len(parts[1]), *([k] if k > 0 else []))
    out = []
    for part in parts:
        if 0 < k < len(part):  # a random subset keeps the cost bounded
            part = part[torch.randperm(len(part), device=part.device)[:k]]
        out.append(part)
    return out
