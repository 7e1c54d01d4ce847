"""Training losses.

* BPR (Rendle et al.): ``L = -mean log σ(s_ui - s_uj)``.
* L2 on the batch's layer-0 embeddings, as in the LightGCN paper:
  ``λ/2 · (‖e_u⁰‖² + ‖e_i⁰‖² + ‖e_j⁰‖²) / B``.
* Symmetric InfoNCE with optional key queues and a cross-worker gather hook (RecMind's
  language/graph alignment): :func:`symmetric_infonce`; the FIFO key queue is
  :class:`recmind_dist.models.queue.KeyQueue`.
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


# ------------------------------------------------------------------------------------------
# Contrastive alignment (RecMind)
# ------------------------------------------------------------------------------------------


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def symmetric_infonce(
    a: torch.Tensor,
    b: torch.Tensor,
    tau: float,
    queue_a: torch.Tensor | None = None,
    queue_b: torch.Tensor | None = None,
    gather=None,
) -> torch.Tensor:
    """Symmetric InfoNCE between two views ``a`` [B, d] and ``b`` [B, d] of the same B nodes.

    Row i of ``a`` and row i of ``b`` are a positive pair; every other row of the other view
    in the (gathered) batch, plus the rows of the other view's queue, are negatives:

        ℓ_{a→b}(i) = −log  exp(a_i·b_i/τ) / (Σ_j exp(a_i·b_j/τ) + Σ_q exp(a_i·Qb_q/τ))
        ℓ_{b→a}(i) = −log  exp(b_i·a_i/τ) / (Σ_j exp(b_i·a_j/τ) + Σ_q exp(b_i·Qa_q/τ))
        L = ½ (mean_i ℓ_{a→b}(i) + mean_i ℓ_{b→a}(i))

    The inputs are used as given (L2-normalise them first for cosine similarities); queues
    are constants (no gradient), ``queue_b`` holds past keys of view b (negatives for the
    queries of view a) and vice versa.

    ``gather`` (default identity) is applied to ``a`` and ``b`` before the loss. A
    distributed trainer passes a *differentiable* all-gather
    (``torch.cat(torch.distributed.nn.functional.all_gather(x))``): every worker then
    computes the same global loss over all workers' rows, and because the all-gather's
    backward sums the gradient of each rank's copy, DDP's gradient mean gives exactly the
    gradient of the global-batch loss.
    """
    gather = gather or _identity
    a, b = gather(a), gather(b)
    if a.shape != b.shape:
        raise ValueError(f"views must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    labels = torch.arange(a.shape[0], device=a.device)
    loss_ab = F.cross_entropy(_logits(a, b, queue_b, tau), labels)
    loss_ba = F.cross_entropy(_logits(b, a, queue_a, tau), labels)
    return 0.5 * (loss_ab + loss_ba)


def _logits(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor | None, tau: float
            ) -> torch.Tensor:
    """``[q kᵀ ‖ q Queueᵀ] / τ``: the queue block is a constant, so no gradient is formed for
    its rows (concatenating the keys first would compute one and throw it away). The queue
    is copied: the caller may enqueue into its buffer before the backward pass."""
    q = q / tau  # scale the B x d queries, not the B x (B + Q) logits
    inbatch = q @ k.T
    if queue is None or len(queue) == 0:
        return inbatch
    return torch.cat([inbatch, q @ queue.detach().clone().T], 1)
