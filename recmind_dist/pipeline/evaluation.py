"""Evaluate a finished training run: its best checkpoint on the test split, logged back to it.

Shared by ``recmind-dist evaluate`` / ``recmind-dist pipeline`` and the Ray job entrypoints
(``jobs/evaluate.py``, ``jobs/pipeline.py`` run those same commands).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from recmind_dist import tracking
from recmind_dist.errors import InputError
from recmind_dist.eval.evaluator import SplitEvaluator
from recmind_dist.pipeline.training import export_item_columns, export_topk, load_run
from recmind_dist.specs import JobSpec


@dataclass
class Evaluation:
    run_id: str
    spec: JobSpec  # the run's own (logged) spec
    test: dict[str, float]
    topk_rows: int | None = None


def newest_run_of(spec: JobSpec, uri: str | None = None) -> str:
    """The newest FINISHED run of ``spec.tracking.experiment`` trained with exactly ``spec``
    (its ``spec_fingerprint`` tag), in the store ``uri`` (default: the spec's). The spec is
    matched as given: resolving its ``tracking.uri`` first would change the fingerprint."""
    import mlflow

    mlflow.set_tracking_uri(uri or tracking.tracking_uri(spec.tracking))
    exp = mlflow.get_experiment_by_name(spec.tracking.experiment)
    if exp is None:
        raise InputError("--config", "tracking.experiment",
                         f"no MLflow experiment {spec.tracking.experiment!r}")
    runs = mlflow.search_runs([exp.experiment_id], output_format="list",
                              filter_string=f"tags.spec_fingerprint = '{spec.fingerprint()}' "
                              "and attributes.status = 'FINISHED'",
                              order_by=["attributes.start_time DESC"], max_results=1)
    if not runs:
        raise InputError("--run", None, "no finished run trained with this spec; pass --run")
    return runs[0].info.run_id


def check_export(path: Path, k: int | None) -> None:
    """An export target must be a file path (not a folder) and K at least 1."""
    if k is not None and k < 1:
        raise InputError("--k", "k", f"K must be >= 1, got {k}")
    if Path(path).is_dir():
        raise InputError(path, "--export-topk", "is a folder; give a .parquet file path")


def evaluate_run(run_id: str, tracking_uri: str, export_to: Path | None = None,
                 k: int | None = None, log: bool = True,
                 progress: bool = False) -> Evaluation:
    """Rebuild the run's model (best checkpoint), compute its test metrics, log them to the
    run as ``eval/test/...`` (``log``) and optionally write every test user's top-``k``."""
    import mlflow

    if export_to is not None:
        check_export(export_to, k)
    spec, dataset, data, model = load_run(run_id, tracking_uri)
    k = spec.eval.export_k if k is None else k
    if export_to is not None and k > data.n_items:
        raise InputError("--k", "k", f"K={k} exceeds the {data.n_items} items of run "
                         f"{run_id}'s split")
    evaluator = SplitEvaluator(data, spec.eval)
    test = evaluator.evaluate(model, "test", progress=progress)
    if log:
        metrics = tracking.prefixed(test, "eval/test")
        with mlflow.start_run(run_id=run_id):
            tracking.log_metrics(metrics)
            tracking.log_json(metrics, "eval_metrics.json")
    rows = None
    if export_to is not None:
        rows = export_topk(model, data, evaluator, dataset.user_raw_ids, dataset.item_raw_ids,
                           k, export_to,
                           item_columns=export_item_columns(dataset, spec.text))
    return Evaluation(run_id, spec, test, rows)
