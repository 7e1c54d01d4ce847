"""The scaling table of real training jobs: LightGCN and RecMind by graph size and worker count.

    # run the grid (each cell one `recmind-dist train` job, logged to MLflow), then tabulate:
    python benchmarks/scale_jobs.py --run 30000:70000:1111112 --workers 1 2 \\
        --config configs/synthetic_1m_lightgcn.yaml --config configs/synthetic_1m_recmind.yaml
    # tabulate and plot every finished run of the experiment (e.g. the 1M-node jobs submitted
    # with `ray job submit`, docs/benchmarks.md § Scaling, RecMind):
    python benchmarks/scale_jobs.py --plot docs/img/scaling.png

A size is USERS:ITEMS:INTERACTIONS of the synthetic generator (the configs' own size when no
--run is given). Each job trains its config's fixed number of epochs; what the trainers log per
epoch is what is tabulated (nothing is re-timed here):

* ``epoch_seconds``: training seconds of each epoch (every training edge once, negative sampling
  included, validation not), the mean over the run's epochs and the first epoch apart;
* ``peak_rss_mb``: peak resident memory, one process (Ray Train: the largest worker's);
* ``valid_seconds`` (the configs' ``eval.valid_users`` sample) and ``test_seconds`` (full
  ranking of every test user over every item, spread over the workers);
* test Recall@20 / NDCG@20, all items and items with ≤ ``eval.cold_degree`` training edges.

--plot draws epoch seconds and peak RSS against training edges, one line per model and worker
count, from the same rows.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
COLUMNS = ("model", "nodes", "train edges", "workers", "epochs", "epoch s (mean)",
           "epoch 1 s", "valid s", "test s", "peak RSS MB", "test R@20", "test N@20",
           "cold R@20", "cold N@20", "within-cold R@20", "within-cold N@20", "run")


PROJECT_FACTOR = 10  # the plot's dashed segment: the largest measured size, ×10 edges


def run_job(config: Path, size: str | None, workers: int, uri: str, experiment: str) -> None:
    """One `recmind-dist train` job of ``config`` at ``size`` with ``workers`` workers."""
    sets = [f"train.workers={workers}", f"tracking.uri={uri}",
            f"tracking.experiment={experiment}"]
    if size is not None:
        users, items, inter = (int(x) for x in size.split(":"))
        sets += [f"data.synthetic.n_users={users}", f"data.synthetic.n_items={items}",
                 f"data.synthetic.n_interactions={inter}"]
    if workers == 1:
        sets.append("train.mode=replicated")
    cmd = [sys.executable, "-m", "recmind_dist.cli", "train", "--config", str(config),
           "--no-progress"]
    for s in sets:
        cmd += ["--set", s]
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)


def _series(client, run_id: str, key: str) -> list[float]:
    return [m.value for m in sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)]


def collect(uri: str, experiments: list[str]) -> list[dict]:
    """One row per finished training run of ``experiments`` (oldest first)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    rows = []
    for name in experiments:
        exp = client.get_experiment_by_name(name)
        if exp is None:
            continue
        for run in reversed(client.search_runs([exp.experiment_id],
                                               "attributes.status = 'FINISHED'")):
            m, p = run.data.metrics, run.data.params
            epochs = _series(client, run.info.run_id, "epoch_seconds")
            if not epochs:  # an embedding run, or one logged before epoch_seconds existed
                continue
            rss = _series(client, run.info.run_id, "peak_rss_mb")
            valid = _series(client, run.info.run_id, "valid_seconds")
            rows.append({
                "model": p.get("model.name", "?") + (
                    f" ({p['model.variant']})" if p.get("model.variant", "full") != "full"
                    else ""),
                "nodes": int(m["data/n_users"] + m["data/n_items"]),
                "train edges": int(m["data/n_train"]),
                "workers": int(p.get("train.workers", 1)),
                "epochs": len(epochs),
                "epoch s (mean)": float(np.mean(epochs)),
                "epoch 1 s": epochs[0],
                "valid s": float(np.mean(valid)) if valid else float("nan"),
                "test s": m.get("test_seconds", float("nan")),
                "peak RSS MB": max(rss) if rss else float("nan"),
                "test R@20": m.get("test/recall_at_20", float("nan")),
                "test N@20": m.get("test/ndcg_at_20", float("nan")),
                "cold R@20": m.get("test/cold/recall_at_20", float("nan")),
                "cold N@20": m.get("test/cold/ndcg_at_20", float("nan")),
                # cold items ranked among themselves (eval.rank_within): logged by the run's
                # test, or by a later `recmind-dist evaluate --run` (eval/test/...)
                "within-cold R@20": _first(m, "within_cold/recall_at_20"),
                "within-cold N@20": _first(m, "within_cold/ndcg_at_20"),
                "run": run.info.run_id[:8],
            })
    return rows


def _first(metrics: dict[str, float], key: str) -> float:
    """``test/{key}`` of the training run, else ``eval/test/{key}`` of a later evaluate."""
    return metrics.get(f"test/{key}", metrics.get(f"eval/test/{key}", float("nan")))


def _cell(v) -> str:
    if isinstance(v, float):
        if np.isnan(v):
            return "–"
        return f"{v:.4f}" if v < 1 else f"{v:,.0f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def table(rows: list[dict]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in sorted(rows, key=lambda r: (r["train edges"], r["model"], r["workers"])):
        lines.append("| " + " | ".join(_cell(r[c]) for c in COLUMNS) + " |")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    """Epoch time and peak RSS against training edges, a line per (model, workers) from each
    size's newest run; the largest size also projected ×PROJECT_FACTOR edges (dashed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (t_ax, m_ax) = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
    top = max(r["train edges"] for r in rows)
    groups: dict[tuple[str, int], list[dict]] = {}
    newest = {(r["model"], r["workers"], r["train edges"]): r for r in rows}  # oldest first
    for r in newest.values():
        groups.setdefault((r["model"], r["workers"]), []).append(r)
    for (model, workers), rs in sorted(groups.items()):
        rs = sorted(rs, key=lambda r: r["train edges"])
        x = [r["train edges"] for r in rs]
        label = f"{model}, {workers} worker{'s' if workers > 1 else ''}"
        line = t_ax.plot(x, [r["epoch s (mean)"] for r in rs], marker="o", label=label)[0]
        m_ax.plot(x, [r["peak RSS MB"] / 1024 for r in rs], marker="o", label=label,
                  color=line.get_color())
        if rs[-1]["train edges"] == top:  # the next size up, projected linearly in edges
            last, grow = rs[-1], PROJECT_FACTOR
            px = [last["train edges"], last["train edges"] * grow]
            t_ax.plot(px, [last["epoch s (mean)"], last["epoch s (mean)"] * grow], ls="--",
                      marker="o", mfc="none", color=line.get_color())
            m_ax.plot(px, [last["peak RSS MB"] / 1024, last["peak RSS MB"] / 1024 * grow],
                      ls="--", marker="o", mfc="none", color=line.get_color())
    t_ax.plot([], [], ls="--", marker="o", mfc="none", color="grey",
              label=f"{PROJECT_FACTOR}× edges, projected (linear in edges)")
    t_ax.set(xscale="log", yscale="log", xlabel="training edges", ylabel="seconds per epoch",
             title="epoch time (every training edge once)")
    ram_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    m_ax.axhline(ram_gb, color="black", lw=1, ls=":",
                 label=f"this machine's RAM ({ram_gb:.0f} GB; workers share it)")
    m_ax.set(xscale="log", yscale="log", xlabel="training edges", ylabel="GB",
             title="peak RSS per process (largest worker)")
    for ax in (t_ax, m_ax):
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    tmp.replace(path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--config", type=Path, action="append", default=[],
                   help="job spec to run (repeatable); with --run")
    p.add_argument("--run", nargs="*", default=None, metavar="USERS:ITEMS:INTERACTIONS",
                   help="run every config at these sizes (no value: the configs' own size)")
    p.add_argument("--workers", type=int, nargs="+", default=[2])
    p.add_argument("--tracking-uri", default=f"sqlite:///{ROOT / 'mlflow.db'}")
    p.add_argument("--experiment", action="append", default=None,
                   help="experiments to tabulate (default: synthetic_1m, synthetic_scale)")
    p.add_argument("--run-experiment", default="synthetic_scale",
                   help="experiment the --run jobs log to")
    p.add_argument("--plot", type=Path, default=None)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    if args.run is not None:
        if not args.config:
            p.error("--run needs at least one --config")
        for size in args.run or [None]:
            for config in args.config:
                for w in args.workers:
                    run_job(config, size, w, args.tracking_uri, args.run_experiment)
    rows = collect(args.tracking_uri, args.experiment or ["synthetic_1m", "synthetic_scale"])
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    if args.plot and rows:
        plot(rows, args.plot)
        print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
