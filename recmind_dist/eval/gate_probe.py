"""Gate probe for RecMind: how much language (γ) each node takes, by training degree.

``gate_summary(gamma [n, L+1], degree [n])`` -> flat metrics
``{prefix}/{bucket}/l{l}/{mean|median}`` for the degree buckets of
:func:`recmind_dist.eval.ranking.degree_buckets` (cold ≤ ``cold_degree``, head = top
``head_fraction``, tail = rest) plus ``deg0`` (nodes with no training edge, e.g. the unseen
items of a cold-item split) and ``all``; ``{prefix}/all/{mean|median}`` averages over
layers, and ``{prefix}/spearman_degree/l{l}`` is Spearman's ρ between γ and degree (ρ < 0:
γ falls as degree rises). ``plot_gate_vs_degree`` writes a PNG (matplotlib, Agg).

``probe_report(model.probes(), ...)`` turns a model's ``gate`` probe (γ [N, L+1], users then
items) into the item metrics (``gate/item/...``, with degree buckets) and the user metrics
(``gate/user/...``), plus the items' PNG.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from recmind_dist.eval.ranking import degree_buckets


def gate_summary(
    gamma: np.ndarray, degree: np.ndarray, cold_degree: int | None = 3,
    head_fraction: float | None = 0.2, prefix: str = "gate",
) -> dict[str, float]:
    gamma = np.asarray(gamma, dtype=np.float64)
    if gamma.ndim == 1:
        gamma = gamma[:, None]
    degree = np.asarray(degree)
    groups: dict[str, np.ndarray] = {"all": np.ones(len(degree), bool)}
    if cold_degree is not None and head_fraction is not None:
        groups.update(degree_buckets(degree, cold_degree, head_fraction))
    groups["deg0"] = degree == 0
    out: dict[str, float] = {}
    for name, mask in groups.items():
        if not mask.any():
            continue
        for layer in range(gamma.shape[1]):
            v = gamma[mask, layer]
            out[f"{prefix}/{name}/l{layer}/mean"] = float(v.mean())
            out[f"{prefix}/{name}/l{layer}/median"] = float(np.median(v))
        out[f"{prefix}/{name}/mean"] = float(gamma[mask].mean())
        out[f"{prefix}/{name}/median"] = float(np.median(gamma[mask].mean(1)))
        out[f"{prefix}/{name}/n"] = float(mask.sum())
    if len(np.unique(degree)) > 1:
        from scipy.stats import spearmanr

        for layer in range(gamma.shape[1]):
            if np.ptp(gamma[:, layer]) > 0:
                rho = spearmanr(gamma[:, layer], degree).statistic
                out[f"{prefix}/spearman_degree/l{layer}"] = float(rho)
    return out


def probe_report(
    probes: Mapping[str, torch.Tensor], n_users: int, node_degree: np.ndarray,
    cold_degree: int, head_fraction: float, png_path: Path | None, title: str,
) -> dict[str, float]:
    """Metrics of the ``gate`` probe (γ [N, L+1] of N = ``n_users`` + I nodes, users first;
    ``node_degree`` [N] their training degrees): :func:`gate_summary` of the items with
    degree buckets (prefix ``gate/item``) and of the users (``gate/user``); the items' γ vs
    degree PNG at ``png_path`` (None: no plot). Empty without a ``gate`` probe."""
    gamma = probes.get("gate")
    if gamma is None:
        return {}
    g = gamma.detach().cpu().numpy()
    deg = np.asarray(node_degree)
    nu = n_users
    metrics = gate_summary(g[nu:], deg[nu:], cold_degree, head_fraction, prefix="gate/item")
    metrics.update(gate_summary(g[:nu], deg[:nu], None, None, prefix="gate/user"))
    if png_path is not None:
        plot_gate_vs_degree(g[nu:], deg[nu:], png_path, title=title)
    return metrics


def plot_gate_vs_degree(
    gamma: np.ndarray, degree: np.ndarray, path: str | Path, title: str = "RecMind gate"
) -> Path:
    """Scatter of γ (per layer) against training degree (log scale) with binned means."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    gamma = np.asarray(gamma, dtype=np.float64)
    if gamma.ndim == 1:
        gamma = gamma[:, None]
    degree = np.asarray(degree)
    x = degree + 1.0
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    edges = np.unique(np.geomspace(1, x.max() + 1, 12).round())
    for layer in range(gamma.shape[1]):
        (line,) = ax.plot([], [])
        color = line.get_color()
        ax.scatter(x, gamma[:, layer], s=4, alpha=0.25, color=color)
        idx = np.digitize(x, edges)
        cx, cy = [], []
        for b in np.unique(idx):
            m = idx == b
            cx.append(np.exp(np.log(x[m]).mean()))
            cy.append(gamma[m, layer].mean())
        ax.plot(cx, cy, "-o", ms=3, color=color, label=f"layer {layer} (binned mean)")
    ax.set_xscale("log")
    ax.set_xlabel("training degree + 1")
    ax.set_ylabel("γ (weight on language view z)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
