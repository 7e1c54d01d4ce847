"""Pictures of runs, written as PNG files (matplotlib ``Figure`` objects, no pyplot state).

* :func:`training_curves`: per-epoch training loss terms (``train/{term}``, the mean over the
  epoch's batches) and validation metrics (``valid/{metric}_at_{k}``) against the epoch, the
  best epoch marked;
* :func:`bucket_bars`: test ``{metric}@k`` overall and per item-degree bucket
  (``cold|tail|head|unseen``);
* :func:`compare_chart`: the test metrics of several runs side by side.

Each picture is titled by the caller with the run's name, id and epoch (:func:`run_title`).
Inputs are plain dicts / frames, so this module depends on nothing else of the project.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

BUCKETS = ("cold", "tail", "head", "unseen")


def run_title(name: str, run_id: str, epoch: int) -> str:
    """``<name> · run <first 8 of id> · best epoch <epoch>`` (8 characters work as a run id)."""
    return f"{name} · run {run_id[:8]} · best epoch {epoch}"


def _figure(width: float, height: float, ncols: int = 1):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, list(axes)


def _finite(values: Sequence[float]) -> bool:
    return any(v is not None and not math.isnan(v) for v in values)


def validation_columns(columns: Sequence[str],
                       metrics: Sequence[str] = ("recall", "ndcg")) -> list[str]:
    """The ``valid/{metric}_at_{k}`` columns worth a curve: ``metrics`` (ranking quality in
    [0, 1]) when present, else every ``_at_`` metric; counts such as ``valid/n_users`` never."""
    ranked = sorted(c for c in columns if str(c).startswith("valid/") and "_at_" in str(c))
    chosen = [c for c in ranked if c.removeprefix("valid/").split("_at_")[0] in metrics]
    return chosen or ranked


def training_curves(
    history: Sequence[Mapping[str, float]], title: str, path: str | Path,
    best_epoch: int | None = None,
) -> Path:
    """Left: each ``train/*`` term per epoch; right: the validation ranking metrics
    (:func:`validation_columns`) per evaluated epoch; a dashed line at ``best_epoch``."""
    frame = pd.DataFrame(list(history))
    fig, (loss_ax, valid_ax) = _figure(11, 4.2, ncols=2)
    epochs = frame["epoch"] if "epoch" in frame else pd.Series(range(1, len(frame) + 1))
    for col in sorted(c for c in frame.columns if c.startswith("train/")):
        if _finite(frame[col].tolist()):
            loss_ax.plot(epochs, frame[col], marker=".", label=col.removeprefix("train/"))
    loss_ax.set(title="training loss terms (mean per batch)", xlabel="epoch", ylabel="loss")
    for col in validation_columns(frame.columns):
        rows = frame[col].notna()
        if rows.any():
            valid_ax.plot(epochs[rows], frame[col][rows], marker="o",
                          label=col.removeprefix("valid/").replace("_at_", "@"))
    valid_ax.set(title="validation metrics", xlabel="epoch", ylabel="value")
    for ax in (loss_ax, valid_ax):
        if best_epoch:
            ax.axvline(best_epoch, color="grey", linestyle="--", linewidth=1, label="best epoch")
        if ax.has_data():
            ax.legend(fontsize=8, loc="best" if len(frame) < 200 else "upper right")
        ax.grid(alpha=0.3)
    if frame.empty or not loss_ax.has_data():
        loss_ax.text(0.5, 0.5, "no training epochs\n(model has nothing to train)",
                     ha="center", va="center", transform=loss_ax.transAxes)
    fig.suptitle(title)
    fig.savefig(path)
    return Path(path)


def bucket_bars(
    test: Mapping[str, float], ks: Sequence[int], title: str, path: str | Path,
    metrics: Sequence[str] = ("recall", "ndcg"),
) -> Path:
    """Grouped bars: one group per ``metric@k``, one bar per group of items (all test items,
    then each degree bucket present in ``test``; keys ``{bucket}/{metric}_at_{k}``)."""
    groups = ["all"] + [b for b in BUCKETS if any(k.startswith(f"{b}/") for k in test)]
    names = [f"{m}_at_{k}" for m in metrics for k in ks]
    fig, (ax,) = _figure(max(6.0, 1.4 * len(names) + 2), 4.2)
    width = 0.8 / len(groups)
    for g_idx, group in enumerate(groups):
        keys = [n if group == "all" else f"{group}/{n}" for n in names]
        values = [float(test.get(key, math.nan)) for key in keys]
        xs = [i + (g_idx - (len(groups) - 1) / 2) * width for i in range(len(names))]
        bars = ax.bar(xs, [0 if math.isnan(v) else v for v in values], width, label=group)
        for bar, v in zip(bars, values, strict=True):
            ax.annotate("n/a" if math.isnan(v) else f"{v:.3f}",
                        (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                        ha="center", va="bottom", fontsize=7, rotation=90)
    ax.set_xticks(range(len(names)), [n.replace("_at_", "@") for n in names])
    ax.set(ylabel="test value", title="test metrics by item-degree bucket")
    ax.margins(y=0.25)
    ax.legend(fontsize=8, title="items", title_fontsize=8, loc="upper right")
    ax.grid(axis="y", alpha=0.3)
    fig.suptitle(title)
    fig.savefig(path)
    return Path(path)


def compare_chart(runs: pd.DataFrame, title: str, path: str | Path) -> Path:
    """One bar group per run (labelled ``<run name> <first 8 of id>``), one bar per
    ``test/...`` metric column of ``runs`` (a :func:`recmind_dist.compare.runs_table`)."""
    metric_cols = [c for c in runs.columns if str(c).startswith("test/")]
    labels = [f"{row.get('run', '')}\n{str(row['run_id'])[:8]}" for _, row in runs.iterrows()]
    fig, (ax,) = _figure(max(7.0, 1.1 * len(runs) * max(1, len(metric_cols)) / 2 + 3), 4.8)
    width = 0.8 / max(1, len(metric_cols))
    for m_idx, col in enumerate(metric_cols):
        values = pd.to_numeric(runs[col], errors="coerce").fillna(0.0).tolist()
        xs = [i + (m_idx - (len(metric_cols) - 1) / 2) * width for i in range(len(runs))]
        ax.bar(xs, values, width, label=str(col).removeprefix("test/").replace("_at_", "@"))
    ax.set_xticks(range(len(runs)), labels, fontsize=8)
    ax.set(ylabel="test value", title="test metrics per run (run name, id)")
    if metric_cols:
        ax.legend(fontsize=8, ncols=min(3, len(metric_cols)), loc="upper right")
    ax.grid(axis="y", alpha=0.3)
    fig.suptitle(title)
    fig.savefig(path)
    return Path(path)
