"""Read an experiment's runs back from MLflow as a table: spec differences and metrics."""

from __future__ import annotations

import pandas as pd

DEFAULT_METRICS = (
    "test/recall_at_20", "test/ndcg_at_20", "test/recall_at_40", "test/ndcg_at_40",
    "test/cold/recall_at_20", "test/within_cold/recall_at_20", "train_seconds",
)


def runs_table(
    experiment: str, tracking_uri: str, metrics: tuple[str, ...] = DEFAULT_METRICS
) -> pd.DataFrame:
    """One training run per row (``embed`` runs left out): run id, name, status (FINISHED,
    RUNNING, KILLED, FAILED; the reason a run ended early as ``end_reason``), the params that
    differ between runs, metrics."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    exp = mlflow.get_experiment_by_name(experiment)
    if exp is None:
        return pd.DataFrame()
    runs = mlflow.search_runs([exp.experiment_id], order_by=["start_time ASC"])
    if "tags.job" in runs.columns:  # embed runs share the experiment but rank nothing
        runs = runs[runs["tags.job"].isna() | (runs["tags.job"] == "train")]
    if runs.empty:
        return pd.DataFrame()
    params = [c for c in runs.columns if c.startswith("params.")]
    varying = [c for c in params if runs[c].astype(str).nunique(dropna=False) > 1]
    cols = {"run_id": "run_id", "tags.mlflow.runName": "run", "status": "status"}
    reason = "tags.recmind.end_reason"
    if reason in runs.columns and runs[reason].fillna("").astype(str).str.len().gt(0).any():
        cols[reason] = "end_reason"
    cols.update({c: c.removeprefix("params.") for c in varying})
    cols.update({f"metrics.{m}": m for m in metrics if f"metrics.{m}" in runs.columns})
    present = [c for c in cols if c in runs.columns]
    return runs[present].rename(columns=cols)


def experiment_names(tracking_uri: str) -> list[str]:
    """The experiments of a store (for "did you mean" in errors)."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    return sorted(e.name for e in client.search_experiments())
