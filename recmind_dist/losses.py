"""Training losses.

* BPR (Rendle et al.): ``L = -mean log σ(s_ui - s_uj)``.
* L2 on the batch's layer-0 embeddings, as in the LightGCN paper:
  ``λ/2 · (‖e_u⁰‖² + ‖e_i⁰‖² + ‖e_j⁰‖²) / B``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def bpr_loss(pos_scores: torch.Tensor, neg_scores: torch.Tensor) -> torch.Tensor:
    """-mean log σ(s⁺ - s⁻), computed stably with softplus."""
    return F.softplus(neg_scores - pos_scores).mean()


def l2_batch(*embeddings: torch.Tensor) -> torch.Tensor:
    """½ Σ‖e‖² over the given batch embeddings, divided by the batch size."""
    batch = embeddings[0].shape[0]
    return sum(e.pow(2).sum() for e in embeddings) / (2.0 * batch)
