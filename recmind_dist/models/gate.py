"""RecMind's gate: how much of the language view z each node takes in each layer.

Gated propagation (l = 0..L; Â the normalised adjacency, d̃ the normalised degree):

    γ_v^l = σ(w_e,lᵀ E_v^l + w_z,lᵀ z_v + w_d,l d̃_v + b_l)     (``gate = learned``)
    γ_v^l = γ_fixed                                             (``gate = fixed``)
    Ẽ^l   = (1 − γ^l) ⊙ E^l + γ^l ⊙ z                          (``gate = none``: Ẽ^l = E^l)
    E^{l+1} = Â Ẽ^l,    h = 1/(L+1) Σ_{l=0..L} Ẽ^l   (``readout_layer0 = false``: l = 1..L)

With a noise-perturbed backbone (``perturb``, XSimGCL's x ↦ x + ε sign(x) ⊙ Δ/‖Δ‖) every
propagated state is perturbed, E'^{l+1} = Â Ẽ'^l + n_l, and the gates read E'^l.

The learned gate starts flat: weights 0, b_l = logit(``gate_init``). Its layer-independent
part c_l = w_z,lᵀ z + w_d,l d̃ + b_l (:meth:`Gate.constants`) is one matrix product for all
layers; a pinned node (no training edge, ``isolated_text_only``) has c_l = 10⁴, so γ ≡ 1
with zero gradient and its h is exactly z. With γ ≡ 0 (``gate = fixed``, ``fixed_gamma =
0``) Ẽ^l = E^l bit for bit (``torch.lerp``) and h is LightGCN's layer mean.

On a sparse Â the learned gate runs as one autograd node with its backward written out
(:func:`recmind_dist.models.gated_propagation.gated_propagation`); otherwise (fixed / no gate,
or a partitioned Â) :meth:`Gate.propagate` runs the same forward through autograd.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from recmind_dist.graph.propagate import layer_mean, propagate
from recmind_dist.models.gated_propagation import gate_constants, gated_propagation
from recmind_dist.specs import RecMindSpec

__all__ = ["Gate"]


class Gate(nn.Module):
    """γ^l per layer (``spec.gate``) and the gated propagation built on it.

    Parameters (learned gate only, in creation order): ``w_e``, ``w_z`` [L+1, d], ``w_d``,
    ``b`` [L+1]. The fixed and the absent gate have none."""

    def __init__(self, spec: RecMindSpec) -> None:
        super().__init__()
        self.spec = spec
        self.first_layer = 0 if spec.readout_layer0 else 1  # of the layer mean h
        if spec.gate == "learned":
            g = spec.layers + 1
            self.w_e = nn.Parameter(torch.zeros(g, spec.dim))
            self.w_z = nn.Parameter(torch.zeros(g, spec.dim))
            self.w_d = nn.Parameter(torch.zeros(g))
            b0 = math.log(spec.gate_init / (1.0 - spec.gate_init))
            self.b = nn.Parameter(torch.full((g,), b0))

    def constants(self, z: torch.Tensor, deg_norm: torch.Tensor,
                  pinned: torch.Tensor | None) -> torch.Tensor | None:
        """c = [c_0 .. c_L] as ``[N, L+1]`` (learned gate; None otherwise): the part of every
        gate logit that does not depend on the layer's state; a pinned node's is 10⁴."""
        if self.spec.gate != "learned":
            return None
        return gate_constants(z, deg_norm, pinned, self.w_z, self.w_d, self.b).t()

    def gamma(self, layer: int, e: torch.Tensor, constants: torch.Tensor | None) -> torch.Tensor:
        """γ^l [N, 1] for the layer's input states ``e``: the fixed γ, or the learned gate on
        ``constants`` (:meth:`constants`)."""
        if self.spec.gate == "fixed":
            return torch.full((e.shape[0], 1), self.spec.fixed_gamma, dtype=e.dtype,
                              device=e.device)
        return torch.sigmoid(torch.addmv(constants[:, layer], e, self.w_e[layer])).unsqueeze(1)

    def propagate(self, adj: Any, e0: torch.Tensor, z: torch.Tensor, deg_norm: torch.Tensor,
                  pinned: torch.Tensor | None,
                  perturb: Callable[[torch.Tensor], torch.Tensor] | None = None,
                  ) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
        """(h, [E^0 .. E^L], [γ^0 .. γ^L] as [N, 1]; no gates for ``gate = none``).

        ``adj``: a sparse Â, or anything :func:`recmind_dist.graph.propagate.propagate`
        accepts (a partitioned Â); ``pinned`` [N] bool or None; ``perturb`` the noise added
        to every propagated state (None: none)."""
        if self.spec.gate == "learned" and isinstance(adj, torch.Tensor):
            return gated_propagation(adj, e0, z, deg_norm, pinned, self.w_e, self.w_z,
                                     self.w_d, self.b, perturb, self.first_layer)
        constants = self.constants(z, deg_norm, pinned)
        layers, fused, gammas = [e0], [], []
        for layer in range(self.spec.layers + 1):
            e = layers[-1]
            if self.spec.gate == "none":
                f = e
            else:
                gamma = self.gamma(layer, e, constants)
                gammas.append(gamma)
                f = torch.lerp(e, z, gamma)  # (1 − γ) e + γ z; γ = 0 gives e exactly
            fused.append(f)
            if layer < self.spec.layers:
                nxt = propagate(adj, f)
                layers.append(nxt if perturb is None else perturb(nxt))
        return layer_mean(fused[self.first_layer :]), layers, gammas
