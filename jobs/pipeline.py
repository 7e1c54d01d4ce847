"""Ray job entrypoint: ``recmind-dist pipeline`` -- embed node texts -> train -> evaluate.

    ray job submit --address http://127.0.0.1:8265 --working-dir . -- \\
        python jobs/pipeline.py --config configs/ml100k_recmind.yaml --workers 2 \\
        --set tracking.uri=sqlite:////abs/path/mlflow.db --set data.cache_dir=/abs/path/data
"""

from _common import run_command

if __name__ == "__main__":
    run_command("pipeline")
