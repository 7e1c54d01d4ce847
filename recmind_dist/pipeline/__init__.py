"""The jobs end to end: dataset -> split -> the model's inputs -> build -> train -> MLflow.

The only layer that knows the order of the stages. The same functions back the CLI
(``recmind-dist train``) and the Ray job entrypoints (``jobs/``), so a run is reproducible
from (job spec, seed) alone: both are logged.
"""

from recmind_dist.pipeline.dataset import prepare, resolve_dataset
from recmind_dist.pipeline.training import (
    RunOutcome,
    export_topk,
    features_root,
    final_metrics,
    load_run,
    log_probes,
    model_inputs,
    run_embedding,
    run_training,
    worker_model,
)

__all__ = ["RunOutcome", "export_topk", "features_root", "final_metrics", "load_run",
           "log_probes", "model_inputs", "prepare", "resolve_dataset", "run_embedding",
           "run_training", "worker_model"]
