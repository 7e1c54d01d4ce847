"""Ray job entrypoint: ``recmind-dist train`` (see ``python jobs/train.py --help``).

    ray job submit --address http://127.0.0.1:8265 --working-dir . -- \\
        python jobs/train.py --config configs/ml100k_lightgcn.yaml --workers 2 \\
        --set tracking.uri=sqlite:////abs/path/mlflow.db --set data.cache_dir=/abs/path/data

Relative paths in the spec resolve against the job's working directory (a temporary copy
under ``--working-dir``): pass absolute paths or an MLflow server URI.
"""

from _common import run_command

if __name__ == "__main__":
    run_command("train")
