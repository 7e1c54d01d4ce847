"""RecMind's gated propagation over all layers as one autograd node, with its backward
written out.

Forward (l = 0..L; Â symmetric sparse, d̃ the normalised degree, P the pinned nodes):

    c_l  = w_z,lᵀ z + w_d,l d̃ + b_l  (c_l = 10⁴ on P: γ ≡ 1 there, with zero gradient)
    s_l  = c_l + E^l w_e,l,    γ_l = σ(s_l)
    F_l  = E^l + γ_l ⊙ (z − E^l)       (= (1 − γ_l) E^l + γ_l z)
    E^{l+1} = Â F_l (+ n_l),            h = 1/(L+1−l₀) Σ_{l≥l₀} F_l

n_l: an optional perturbation of each propagated state (XSimGCL's noise, ``perturb``), a
function of Â F_l through sign(Â F_l) only, so ∂E^{l+1}/∂F_l = Â still and the backward
below is unchanged. l₀ = ``first_layer`` (0, or 1 for a readout without layer 0 as in
SimGCL/XSimGCL).

Backward, from ḡ_h (and ḡ_{E^l}, where the layer states are used elsewhere), l = L..0:

    G_l   = ḡ_h/(L+1−l₀) [l ≥ l₀] + Â G_{E^{l+1}}      (Âᵀ = Â; no Â term at l = L)
    g_s,l = rowsum(G_l ⊙ (z − E^l)) ⊙ γ_l (1 − γ_l)
    ∂z   += γ_l ⊙ G_l + g_s,l w_z,lᵀ,   ∂w_e,l = E^lᵀ g_s,l,   ∂w_z,l = zᵀ g_s,l,
    ∂w_d,l = d̃ᵀ g_s,l,   ∂b_l = Σ_v g_s,l
    G_{E^l} = (1 − γ_l) ⊙ G_l + g_s,l w_e,lᵀ + ḡ_{E^l}   (G_{E^0} = ∂E^0)

Autograd builds the same gradient from ~10 nodes per layer (sub, addcmul, addmv, sigmoid,
select of the layer's column of c, the layer mean's stack, ...), each with its own pass over an
[N, d] tensor, zero-filled temporaries and accumulations; written out, a layer's backward is
one sparse product fused with the mean's gradient (``addmm``) and seven [N, d] operations.
The forward uses the same operations in the same order as the autograd loop in
:meth:`recmind_dist.models.gate.Gate.propagate`, so both give the same h.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.autograd.function import once_differentiable


def gate_constants(z: torch.Tensor, deg_norm: torch.Tensor, pinned: torch.Tensor | None,
                   w_z: torch.Tensor, w_d: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """c = [c_0 .. c_L] as ``[L+1, N]``: the part of every gate logit that does not depend on
    the layer's state, for all layers in one matrix product (``pinned`` [N] bool or None)."""
    c = torch.addmm(b[:, None], w_z, z.t()).addcmul_(w_d[:, None], deg_norm[None, :])
    return c if pinned is None else c.masked_fill(pinned[None, :], 1e4)


def gated_propagation(adj: torch.Tensor, e0: torch.Tensor, z: torch.Tensor,
                      deg_norm: torch.Tensor, pinned: torch.Tensor | None, w_e: torch.Tensor,
                      w_z: torch.Tensor, w_d: torch.Tensor, b: torch.Tensor,
                      perturb: Callable[[torch.Tensor], torch.Tensor] | None = None,
                      first_layer: int = 0) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
    """(h, [E^0 .. E^L], [γ_0 .. γ_L] as [N, 1]) for a sparse symmetric ``adj``; L + 1 is
    the number of rows of the gate weights ``w_e``, ``w_z`` [L+1, d], ``w_d``, ``b`` [L+1].
    ``perturb``: x ↦ x + n(sign x), applied to every propagated state (None: no noise);
    ``first_layer``: h is the mean of F_l for l ≥ first_layer (0 or 1).

    h and the layer states carry gradients, the gates do not (a probe; their effect reaches
    the loss through h)."""
    n_layers = w_e.shape[0] - 1
    if not 0 <= first_layer <= n_layers:
        raise ValueError(f"first_layer must be in 0..{n_layers}, got {first_layer}")
    out = _GatedPropagation.apply(adj, e0, z, deg_norm, pinned, w_e, w_z, w_d, b, perturb,
                                  first_layer)
    h, states, gammas = out[0], out[1 : n_layers + 1], out[n_layers + 1 :]
    return h, [e0, *states], list(gammas)


class _GatedPropagation(torch.autograd.Function):
    @staticmethod
    def forward(ctx, adj, e0, z, deg_norm, pinned, w_e, w_z, w_d, b, perturb, first_layer):
        n_layers = w_e.shape[0] - 1
        c = gate_constants(z, deg_norm, pinned, w_z, w_d, b).unbind(0)
        w_rows = w_e.unbind(0)
        states, gammas, slopes = [e0], [], []
        h = None
        for layer in range(n_layers + 1):
            e = states[-1]
            gamma = torch.sigmoid(torch.addmv(c[layer], e, w_rows[layer]))
            slopes.append(torch.addcmul(gamma, gamma, gamma, value=-1.0))  # σ' = γ − γ²
            gamma = gamma.unsqueeze(1)
            f = torch.lerp(e, z, gamma)
            if layer >= first_layer:  # h owns its storage from its second term on
                h = f if h is None else (h + f if layer == first_layer + 1 else h.add_(f))
            gammas.append(gamma)
            if layer < n_layers:
                nxt = torch.sparse.mm(adj, f)
                states.append(nxt if perturb is None else perturb(nxt))
        if n_layers > first_layer:
            h.div_(n_layers + 1 - first_layer)
        ctx.save_for_backward(z, deg_norm, w_e, w_z, *states, *gammas, *slopes)
        ctx.adj, ctx.n_layers, ctx.first_layer = adj, n_layers, first_layer
        ctx.mark_non_differentiable(*gammas)
        ctx.set_materialize_grads(False)
        return (h, *states[1:], *gammas)

    @staticmethod
    @once_differentiable
    def backward(ctx, g_h: torch.Tensor | None, *g_out: torch.Tensor | None):
        n = ctx.n_layers
        z, deg_norm, w_e, w_z, *saved = ctx.saved_tensors
        states, gammas, slopes = saved[: n + 1], saved[n + 1 : 2 * n + 2], saved[2 * n + 2 :]
        g_states = g_out[:n]  # for E^1 .. E^L
        first = ctx.first_layer
        g_mean = None if g_h is None else g_h / (n + 1 - first)
        g_z = None  # Σ_l γ_l ⊙ G_l, started at the top layer
        g_c, g_w = [], []  # ∂c_l = g_s,l and ∂w_e,l, top layer first
        w_rows = w_e.unbind(0)
        g_e = None  # gradient of the state above the current layer, E^{l+1}
        for layer in range(n, -1, -1):
            e, gamma = states[layer], gammas[layer]
            mean = g_mean if layer >= first else None  # F_l's share of h's gradient
            if g_e is None:
                g_f = mean if mean is not None else torch.zeros_like(e)
            elif mean is None:
                g_f = torch.sparse.mm(ctx.adj, g_e)
            else:
                g_f = torch.addmm(mean, ctx.adj, g_e)  # ḡ_h/(L+1−l₀) + Â G_{E^{l+1}}
            g_s = (z - e).mul_(g_f).sum(1).mul_(slopes[layer])
            g_c.append(g_s)
            g_w.append(torch.mv(e.t(), g_s))
            g_z = g_f * gamma if g_z is None else g_z.addcmul_(g_f, gamma)
            g_e = torch.addcmul(g_f, g_f, gamma, value=-1.0).addr_(g_s, w_rows[layer])
            if layer > 0 and g_states[layer - 1] is not None:
                g_e.add_(g_states[layer - 1])
        g_c, g_w = torch.stack(g_c[::-1]), torch.stack(g_w[::-1])  # [L+1, N], [L+1, d]
        g_z.addmm_(g_c.t(), w_z)  # through c: Σ_l g_s,l w_z,lᵀ
        return (None, g_e, g_z, None, None, g_w, g_c @ z, torch.mv(g_c, deg_norm),
                g_c.sum(1), None, None)
