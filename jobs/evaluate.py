"""Evaluate a trained run's best checkpoint on the test split and log the numbers to its run.

    ray job submit --address http://127.0.0.1:8265 --working-dir . -- \\
        python jobs/evaluate.py --config configs/ml100k_lightgcn.yaml --run RUN_ID

Without --run, the newest finished run of the spec's MLflow experiment whose
``spec_fingerprint`` tag matches the (overridden) spec is evaluated. Metrics are logged to
that run as ``eval/test/...`` and printed; --export-topk writes every test user's top-K.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from _common import add_spec_args, emit, headline, load, main_guard


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="jobs/evaluate.py", description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_spec_args(p)
    p.add_argument("--run", default=None, help="MLflow run id (default: newest matching run)")
    p.add_argument("--export-topk", type=Path, default=None,
                   help="write every test user's top-K (raw ids) to this Parquet file")
    return p


def find_run(spec) -> str:
    import mlflow

    from recmind_dist.errors import InputError

    exp = mlflow.get_experiment_by_name(spec.tracking.experiment)
    if exp is None:
        raise InputError("--config", "tracking.experiment",
                         f"no MLflow experiment {spec.tracking.experiment!r}")
    runs = mlflow.search_runs([exp.experiment_id], output_format="list",
                              filter_string=f"tags.spec_fingerprint = '{spec.fingerprint()}' "
                              "and attributes.status = 'FINISHED'",
                              order_by=["attributes.start_time DESC"], max_results=1)
    if not runs:
        raise InputError("--run", None, "no finished run with this spec; pass --run RUN_ID")
    return runs[0].info.run_id


def evaluate_run(spec, run_id: str | None, export_topk: Path | None = None) -> dict:
    import mlflow

    from recmind_dist import tracking
    from recmind_dist.eval.evaluator import SplitEvaluator
    from recmind_dist.pipeline import export_topk as do_export
    from recmind_dist.pipeline import load_run

    uri = tracking.tracking_uri(spec.tracking)
    mlflow.set_tracking_uri(uri)
    run_id = run_id or find_run(spec)
    rspec, ds, data, model = load_run(run_id, uri)
    evaluator = SplitEvaluator(data, rspec.eval)
    test = evaluator.evaluate(model, "test")
    metrics = tracking.prefixed(test, "eval/test")
    with mlflow.start_run(run_id=run_id):
        tracking.log_metrics(metrics)
        tracking.log_json(metrics, "eval_metrics.json")
    out = {"run_id": run_id, "tracking_uri": uri,
           "metrics": headline(tracking.prefixed(test, "test"), rspec.eval.ks)}
    if export_topk is not None:
        out["topk_rows"] = do_export(model, data, evaluator, ds.user_raw_ids, ds.item_raw_ids,
                                     rspec.eval.export_k, export_topk)
    return out


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def run() -> int:
        spec = load(args)
        emit(evaluate_run(spec, args.run, args.export_topk), args.json)
        return 0

    return main_guard(run)


if __name__ == "__main__":
    raise SystemExit(main())
