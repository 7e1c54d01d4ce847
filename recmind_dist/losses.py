"""Training losses.

* BPR (Rendle et al.): ``L = -mean log σ(s_ui - s_uj)``.
* Sampled softmax (SSM) over one positive and N negatives per row, on scores the caller
  computes (cosines for the LightGCN family): :func:`softmax_loss`.
* L2 on the batch's layer-0 embeddings, as in the LightGCN paper:
  ``λ/2 · (‖e_u⁰‖² + ‖e_i⁰‖² + ‖e_j⁰‖²) / B``.
* InfoNCE between two views of the same nodes (SimGCL / XSimGCL): :func:`infonce`.
* Symmetric InfoNCE with optional key queues and a cross-worker gather hook (RecMind's
  language/graph alignment): :func:`symmetric_infonce`; the FIFO key queue is
  :class:`recmind_dist.models.queue.KeyQueue`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable


def bpr_loss(pos_scores: torch.Tensor, neg_scores: torch.Tensor) -> torch.Tensor:
    """-mean log σ(s⁺ - s⁻), computed stably with softplus."""
    return F.softplus(neg_scores - pos_scores).mean()


def softmax_loss(pos_scores: torch.Tensor, neg_scores: torch.Tensor, tau: float) -> torch.Tensor:
    """Sampled softmax: the positive against its row's N negatives at temperature τ,

        L = −1/B Σ_b log  exp(s⁺_b/τ) / (exp(s⁺_b/τ) + Σ_{k=1..N} exp(s⁻_bk/τ)),

    for ``pos_scores`` [B] and ``neg_scores`` [B, N] (one log-softmax over [B, 1 + N]; with
    cosine scores this is the SSM loss of Wu et al., "On the Effectiveness of Sampled Softmax
    Loss for Item Recommendation", TOIS 2024). With N = 1 it is −log σ((s⁺ − s⁻)/τ)."""
    logits = torch.cat([pos_scores.unsqueeze(-1), neg_scores], -1) / tau
    return (torch.logsumexp(logits, -1) - logits[:, 0]).mean()


def l2_batch(*embeddings: torch.Tensor) -> torch.Tensor:
    """½ Σ‖e‖² over the given batch embeddings, divided by the batch size."""
    batch = embeddings[0].shape[0]
    return sum(e.pow(2).sum() for e in embeddings) / (2.0 * batch)


# ------------------------------------------------------------------------------------------
# Graph contrastive views (SimGCL / XSimGCL)
# ------------------------------------------------------------------------------------------


def infonce(a: torch.Tensor, b: torch.Tensor, tau: float) -> torch.Tensor:
    """InfoNCE of view ``a`` [B, d] against view ``b`` [B, d] of the same B nodes, on cosine
    similarities (SimGCL eq. 4; one direction, as in the authors' code):

        L = −1/B Σ_i log  exp(cos(a_i, b_i)/τ) / Σ_j exp(cos(a_i, b_j)/τ)

    Row i of ``b`` is the positive of row i of ``a``; the other rows of ``b`` are its
    negatives. A mean over the B nodes (a sum makes the term grow with the batch)."""
    a, b = F.normalize(a, dim=-1), F.normalize(b, dim=-1)
    logits = (a @ b.transpose(0, 1)) / tau
    return F.cross_entropy(logits, torch.arange(len(a), device=a.device))


# ------------------------------------------------------------------------------------------
# Contrastive alignment (RecMind)
# ------------------------------------------------------------------------------------------


def symmetric_infonce(
    a: torch.Tensor,
    b: torch.Tensor,
    tau: float,
    queue_a: torch.Tensor | None = None,
    queue_b: torch.Tensor | None = None,
    gather=None,
) -> torch.Tensor:
    """Symmetric InfoNCE between two views ``a`` [B, d] and ``b`` [B, d] of the same B nodes
    (or [G, B, d]: G independent groups -- e.g. users and items -- in one batched call, with
    queues [G, Q, d]; the result is the mean of the G groups' losses).

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
    if a.shape != b.shape:
        raise ValueError(f"views must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    a, b = gather_rows(a, gather), gather_rows(b, gather)
    queues = [None if q is None or q.shape[-2] == 0 else q.detach() for q in (queue_a, queue_b)]
    return _SymmetricInfoNCE.apply(a, b, *queues, float(tau))


def gather_rows(x: torch.Tensor, gather=None) -> torch.Tensor:
    """``gather`` (a row-wise all-gather; None = identity) applied to the rows of ``x``
    [B, d], or of each group of ``x`` [G, B, d] (gathered as one [B, G·d] block)."""
    if gather is None:
        return x
    if x.dim() == 2:
        return gather(x)
    g, n, d = x.shape
    return gather(x.transpose(0, 1).reshape(n, g * d)).reshape(-1, g, d).transpose(0, 1)


class _SymmetricInfoNCE(torch.autograd.Function):
    r"""Both directions in one node. With ``K_b = [b ; Queue_b]`` (B + Q rows), the logits
    of the queries a are ``S = a K_bᵀ/τ`` and ``ℓ_{a→b} = −1/B Σ_i log softmax_j(S)_ii``
    (likewise b → a with ``K_a``). Backward in closed form, ``P = softmax_j(S)``:

        ∂ℓ_{a→b}/∂S = (P − [I_B | 0])/B,   ∂a += (∂ℓ/∂S) K_b/τ,   ∂b += ((∂ℓ/∂S)[:, :B])ᵀ a/τ

    -- one matrix product per gradient, none for the queue rows, and P only on the B
    in-batch columns for a side that does not need a gradient (RecMind's language-side
    alignment, where the graph view is a target). The same value and gradient as
    ``cross_entropy(S, arange(B))`` through autograd, at a fraction of the operations
    (autograd runs log-softmax → NLL → their backward, each over all B + Q columns).
    """

    @staticmethod
    def forward(ctx, a: torch.Tensor, b: torch.Tensor, queue_a: torch.Tensor | None,
                queue_b: torch.Tensor | None, tau: float) -> torch.Tensor:
        # fresh copies with a queue: the caller may enqueue into its buffer before backward
        keys_a = a if queue_a is None else torch.cat([a, queue_a], -2)
        keys_b = b if queue_b is None else torch.cat([b, queue_b], -2)
        # scale the B x d queries, not the B x (B + Q) logits
        logp_ab = torch.log_softmax((a / tau) @ keys_b.transpose(-1, -2), -1)
        logp_ba = torch.log_softmax((b / tau) @ keys_a.transpose(-1, -2), -1)
        rows = a.numel() // a.shape[-1]  # B, or G·B
        ctx.save_for_backward(a, b, keys_a, keys_b, logp_ab, logp_ba)
        ctx.tau = tau
        return -(_diagonal(logp_ab).sum() + _diagonal(logp_ba).sum()) / (2 * rows)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        a, b, keys_a, keys_b, logp_ab, logp_ba = ctx.saved_tensors
        need_a, need_b = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        n = a.shape[-2]
        scale = grad / (2 * (a.numel() // a.shape[-1]) * ctx.tau)

        def d_logits(logp: torch.Tensor, all_columns: bool) -> torch.Tensor:
            p = torch.exp(logp if all_columns else logp[..., :n])
            _diagonal(p).sub_(1.0)
            return p.mul_(scale)

        def grad_of(d_own: torch.Tensor, keys: torch.Tensor, d_other: torch.Tensor,
                    other: torch.Tensor) -> torch.Tensor:
            # as the query (all key columns) + as a key of the other view's queries
            out = d_own @ keys
            in_batch = d_other[..., :n].transpose(-1, -2)
            return out.addmm_(in_batch, other) if out.dim() == 2 else out.baddbmm_(in_batch, other)

        d_ab, d_ba = d_logits(logp_ab, need_a), d_logits(logp_ba, need_b)
        ga = grad_of(d_ab, keys_b, d_ba, b) if need_a else None
        gb = grad_of(d_ba, keys_a, d_ab, a) if need_b else None
        return ga, gb, None, None, None


def _diagonal(x: torch.Tensor) -> torch.Tensor:
    """The (first B) diagonal entries of the last two dimensions: the positive pairs."""
    return x.diagonal(dim1=-2, dim2=-1)
