"""Ray job entrypoint: ``recmind-dist evaluate`` (see ``python jobs/evaluate.py --help``).

    ray job submit --address http://127.0.0.1:8265 --working-dir . -- \\
        python jobs/evaluate.py --config configs/ml100k_lightgcn.yaml \\
        --set tracking.uri=sqlite:////abs/path/mlflow.db

``--config`` picks the newest finished run trained with that spec; ``--run RUN_ID`` names one.
"""

from _common import run_command

if __name__ == "__main__":
    run_command("evaluate")
