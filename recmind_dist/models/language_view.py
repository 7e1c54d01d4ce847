"""RecMind's language view: one vector z_v per node, from the node's text.

Notation: N = U + I nodes (users first), e_v the frozen LM vector of node v's text, E⁰ the ID
table, d̃_v the normalised training degree, d = ``spec.dim``.

For nodes with text (``has_text``):

    ē_v = P (e_v − μ_type(v))                  μ: mean over the nodes of v's type with text;
                                               P: fixed top-k PCA map (k = ``text_pca``)
    u_v = W_proj ē_v + W₂ ReLU(W₁ ē_v)         residual adapter of width ``adapter_hidden``
                                               (0: the linear projection only)
    z_v = s · u_v/‖u_v‖                        s trainable, initialised to 0.1·√d

Centring removes the encoder's common direction (texts written from one template share it);
the PCA map is fixed, so the per-step projection of all N nodes is dim/k times cheaper. s
starts at the expected norm of an N(0, 0.1²) ID row; without the fixed norm, Adam on the
scale-free InfoNCE grows ‖z‖ by orders of magnitude within an epoch and the gate saturates.

For nodes without text (``fallback_idx``): z_v = MLP_fb([E⁰_v ‖ d̃_v]) (``fallback = mlp``,
hidden width ``fallback_hidden``) or 0 (``fallback = zero``).

**End-to-end LoRA** (``text_tower``, spec ``encoder: lora``): e_v comes from the LM with LoRA
adapters (:mod:`recmind_dist.models.lora_text`), centred per type there, no PCA. All rows are
re-encoded without gradient by :meth:`LanguageView.refresh` (each epoch start); the rows of
``grad_nodes`` given to :meth:`LanguageView.forward` are re-encoded with gradient, so the
losses train the adapters through them.

``id_init = text`` (:func:`text_id_rows`) starts E⁰'s rows with text at the top-d principal
components of ē, scaled to LightGCN's N(0, 0.1²) spread.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torch.autograd.function import once_differentiable

from recmind_dist.errors import InputError
from recmind_dist.models.inputs import NodeFeatures
from recmind_dist.models.lora_text import NodeTextTower
from recmind_dist.specs import RecMindSpec

__all__ = ["LanguageView", "TextProjector", "centred", "pca", "text_id_rows"]


def centred(vec: np.ndarray, has: np.ndarray) -> np.ndarray:
    """e − μ: subtract the mean LM vector of the nodes with text (rows without text stay zero).

    Sentence-encoder vectors of texts written from one template share a large common
    direction (cosines of unrelated MiniLM movie descriptions are ~0.3-0.6); removing it
    leaves the part that tells nodes apart."""
    out = np.array(vec, dtype=np.float32, copy=True)
    if has.any():
        out[has] -= out[has].mean(0, keepdims=True)
    out[~has] = 0.0
    return out


def pca(vec: np.ndarray, has: np.ndarray, k: int) -> np.ndarray:
    """P e: project (centred) rows onto the top-``k`` principal directions of the rows with
    text, rescaled so the mean row norm is unchanged (0 or k >= dim: unchanged). A fixed
    linear map of frozen vectors, it loses little and makes the per-step projection of all N
    nodes dim/k times cheaper."""
    if k <= 0 or k >= vec.shape[1] or has.sum() <= k:
        return vec
    _, _, vt = np.linalg.svd(vec[has].astype(np.float64), full_matrices=False)
    out = (vec @ vt[:k].T).astype(np.float32)
    before = np.linalg.norm(vec[has], axis=1).mean()
    after = np.linalg.norm(out[has], axis=1).mean()
    if after > 0:
        out *= before / after
    out[~has] = 0.0
    return out


def text_id_rows(text: np.ndarray, has: np.ndarray, dim: int) -> np.ndarray | None:
    """E⁰ rows for the nodes with text (``id_init = text``): the top-``dim`` principal
    components of ē, scaled to std 0.1 (LightGCN's init spread); ``[has.sum(), dim]``, or
    None where there is no text or fewer than ``dim`` text dimensions."""
    if not has.any():
        return None
    x = pca(text, has, dim) if text.shape[1] > dim else text
    if x.shape[1] != dim:
        return None
    x = x * (0.1 / max(float(x[has].std()), 1e-12))
    return x[has]


class TextProjector(nn.Module):
    """u = W_proj ē + W₂ ReLU(W₁ ē): linear projection plus a small residual adapter MLP
    (``hidden = 0``: the projection only). W₂ starts at zero, so u starts as the projection."""

    def __init__(self, in_dim: int, out_dim: int, hidden: int) -> None:
        super().__init__()
        self.proj = nn.Linear(in_dim, out_dim)
        self.adapter = (
            nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, out_dim))
            if hidden > 0 else None
        )
        if self.adapter is not None:  # start as the plain projection; the MLP learns a residual
            nn.init.zeros_(self.adapter[2].weight)
            nn.init.zeros_(self.adapter[2].bias)

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        z = self.proj(e)
        return z if self.adapter is None else z + self.adapter(e)


class _RowsAtNorm(torch.autograd.Function):
    r"""z = s · u/‖u‖ row by row (s a scalar), with the backward written out:

        ∂u = (s/‖u‖) (g − û (û·g)),   ∂s = Σ_v g_v·û_v

    one autograd node instead of norm → clamp → div → mul, whose backward forms u's gradient
    in two [N, d] parts and adds them."""

    @staticmethod
    def forward(ctx, u: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        norm = torch.linalg.vector_norm(u, dim=1).clamp_min_(1e-12)
        r = s / norm
        ctx.save_for_backward(u, norm, r)
        return u * r.unsqueeze(1)

    @staticmethod
    @once_differentiable
    def backward(ctx, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        u, norm, r = ctx.saved_tensors
        t = (g * u).sum(1)  # g·u per row
        g_u = (g * r.unsqueeze(1)).addcmul_(u, (r * t / norm.square()).unsqueeze(1), value=-1.0)
        return g_u, (t / norm).sum()


class LanguageView(nn.Module):
    """z for every node (see the module docstring).

    Buffers: ``text_vec`` [N, k] (ē, or the LoRA LM's centred e), ``has_text`` [N] bool,
    ``fallback_idx`` (the nodes without text). Parameters, in creation order: ``proj``
    (:class:`TextProjector`), ``z_scale`` (s), ``fallback`` (the MLP, or None)."""

    def __init__(self, features: NodeFeatures, text_tower: NodeTextTower | None,
                 spec: RecMindSpec) -> None:
        super().__init__()
        self.spec = spec
        n = len(features.user_vec) + len(features.item_vec)
        self.text_tower = text_tower
        if text_tower is not None:  # end-to-end: e from the LoRA LM, centred, no PCA
            if len(text_tower.has_text) != n:
                raise InputError("node texts", "text_tower", f"one text per node (users, then "
                                 f"items) expected: {n}, got {len(text_tower.has_text)}")
            has = text_tower.has_text.cpu().numpy()
            text = text_tower.refresh().cpu().numpy()
        else:
            has = np.concatenate([features.user_has_text, features.item_has_text], 0)
            text = np.concatenate([centred(features.user_vec, features.user_has_text),
                                   centred(features.item_vec, features.item_has_text)], 0)
            text = pca(text, has, spec.text_pca)
        self.register_buffer("text_vec", torch.from_numpy(text).float())
        self.register_buffer("has_text", torch.from_numpy(has))
        self.register_buffer("fallback_idx", torch.from_numpy(np.flatnonzero(~has)))
        self.proj = TextProjector(text.shape[1], spec.dim, spec.adapter_hidden)
        # |z| = z_scale: starts at the expected norm of a N(0, 0.1²) ID row, like E⁰
        self.z_scale = nn.Parameter(torch.tensor(0.1 * math.sqrt(spec.dim)))
        self.fallback = (
            nn.Sequential(nn.Linear(spec.dim + 1, spec.fallback_hidden), nn.ReLU(),
                          nn.Linear(spec.fallback_hidden, spec.dim))
            if spec.fallback == "mlp" else None
        )

    def forward(self, e0: torch.Tensor, deg_norm: torch.Tensor,
                grad_nodes: torch.Tensor | None = None) -> torch.Tensor:
        """z [N, d] from the ID table ``e0`` and the normalised degree ``deg_norm`` (the
        fallback's input). ``grad_nodes`` (LoRA only): nodes re-encoded through the LM with
        gradient this step; the others come from the last :meth:`refresh`."""
        text = self.text_vec
        if self.text_tower is not None and grad_nodes is not None:
            nodes = self.text_tower.text_nodes(grad_nodes)
            if len(nodes):
                text = text.index_copy(0, nodes, self.text_tower(nodes).to(text.dtype))
        z = _RowsAtNorm.apply(self.proj(text), self.z_scale)  # s · u/‖u‖
        if len(self.fallback_idx) == 0:
            return z
        idx = self.fallback_idx
        if self.fallback is None:
            fb = torch.zeros(len(idx), z.shape[1], dtype=z.dtype, device=z.device)
        else:
            fb = self.fallback(torch.cat([e0[idx], deg_norm[idx, None]], 1))
        return z.index_copy(0, idx, fb)

    @torch.no_grad()
    def refresh(self) -> None:
        """LoRA: re-encode every node's e with the current adapters (no-op without a tower)."""
        if self.text_tower is not None:
            self.text_vec.copy_(self.text_tower.refresh().to(self.text_vec))
