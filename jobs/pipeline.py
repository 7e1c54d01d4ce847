"""The whole pipeline as one Ray job: embed node texts -> train -> evaluate, from one job spec.

    ray job submit --address http://127.0.0.1:8265 --working-dir . -- \\
        python jobs/pipeline.py --config configs/ml100k_recmind.yaml --workers 2 \\
        --set tracking.uri=sqlite:////abs/path/mlflow.db --set data.cache_dir=/abs/path/data

1. embed: ``recmind_dist.embed.job.embed_dataset`` over the dataset's item/user texts
   (``text`` and ``embed`` sections of the spec; Ray Data actors; resumable shards, so a
   re-run skips finished shards). Skipped with --skip-embed or for models without text.
2. train: ``recmind_dist.pipeline.run_training`` (Ray Train workers when train.workers > 1),
   one MLflow run.
3. evaluate: the run's best checkpoint on the test split, logged to the same run.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from _common import add_spec_args, emit, headline, load, main_guard
from evaluate import evaluate_run


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="jobs/pipeline.py", description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_spec_args(p)
    p.add_argument("--skip-embed", action="store_true", help="do not run the embedding step")
    p.add_argument("--embed-out", type=Path, default=None,
                   help="embedding output root (default: the dataset directory)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def run() -> int:
        from recmind_dist.pipeline import final_metrics, prepare, run_training

        spec = load(args)
        out: dict = {"stages": {}}
        t0 = time.perf_counter()
        dataset, _ = prepare(spec)
        if not args.skip_embed and spec.model.name not in ("mf", "lightgcn", "popularity"):
            from recmind_dist.embed.job import embed_dataset

            res = embed_dataset(dataset.path, text_spec=spec.text, embed_spec=spec.embed,
                                out_dir=args.embed_out, split_spec=spec.split,
                                seed=spec.seed, progress=False)  # fmt: skip
            out["embed"] = {"texts": res.n_texts, "encoded": res.n_encoded,
                            "texts_per_s": round(res.texts_per_s, 1)}  # fmt: skip
        out["stages"]["embed_s"] = round(time.perf_counter() - t0, 1)
        t1 = time.perf_counter()
        trained = run_training(spec, progress=False)
        out["stages"]["train_s"] = round(time.perf_counter() - t1, 1)
        out["run_id"] = trained.run_id
        out["train_metrics"] = headline(final_metrics(trained.result), spec.eval.ks)
        t2 = time.perf_counter()
        ev = evaluate_run(spec, trained.run_id)
        out["stages"]["evaluate_s"] = round(time.perf_counter() - t2, 1)
        out["tracking_uri"] = ev["tracking_uri"]
        out["experiment"] = spec.tracking.experiment
        out["workers"] = spec.train.workers
        out["eval_metrics"] = ev["metrics"]
        emit(out, args.json)
        return 0

    return main_guard(run)


if __name__ == "__main__":
    raise SystemExit(main())
