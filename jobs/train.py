"""Train a model from a job spec and log it to MLflow; Ray Train workers when train.workers > 1.

On a Ray cluster (the job driver connects through RAY_ADDRESS, which `ray job submit` sets)::

    ray job submit --address http://127.0.0.1:8265 --working-dir . -- \\
        python jobs/train.py --config configs/ml100k_lightgcn.yaml --workers 2 \\
        --set tracking.uri=sqlite:////abs/path/mlflow.db --set data.cache_dir=/abs/path/data

Locally (train.workers=1: in-process; >1: a private Ray on 127.0.0.1)::

    python jobs/train.py --config configs/synthetic_small.yaml --set train.epochs=5

train.mode=partitioned (LightGCN only) partitions the graph (train.partitioner=metis|random).
Prints the MLflow run id and the headline metrics. Relative paths in the spec (data.cache_dir,
the default sqlite MLflow store) resolve against the job's working directory, which
`--working-dir` makes a temporary copy: pass absolute paths or an MLflow server URI.
"""

from __future__ import annotations

import argparse

from _common import add_spec_args, emit, headline, load, main_guard


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="jobs/train.py", description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_spec_args(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def run() -> int:
        from recmind_dist.pipeline import final_metrics, run_training
        from recmind_dist.tracking import tracking_uri

        spec = load(args)
        out = run_training(spec, progress=False)
        emit({"run_id": out.run_id, "tracking_uri": tracking_uri(spec.tracking),
              "experiment": spec.tracking.experiment, "workers": spec.train.workers,
              "mode": spec.train.mode, "best_epoch": out.result.best_epoch,
              "stop_reason": out.result.stop_reason,
              "metrics": headline(final_metrics(out.result), spec.eval.ks)}, args.json)
        return 0

    return main_guard(run)


if __name__ == "__main__":
    raise SystemExit(main())
