"""``train --resume RUN``: continue a killed or failed single-process run in place.

The run's logged spec is rebuilt, its dataset and split must be unchanged
(:func:`recmind_dist.pipeline.run_record.check_same_data`), and training continues from the
last resume checkpoint (``resume/state.pt``, :class:`recmind_dist.train.checkpoint.ResumeState`)
into the same MLflow run, ending at the same metrics as an uninterrupted run.
"""

from __future__ import annotations

from recmind_dist.errors import InputError
from recmind_dist.pipeline import lifecycle, run_record
from recmind_dist.pipeline.dataset import prepare
from recmind_dist.pipeline.training import RunOutcome, run_training
from recmind_dist.train.checkpoint import ResumeState

__all__ = ["resume_training"]


def resume_training(run_id: str, tracking_uri: str, progress: bool = True) -> RunOutcome:
    """Continue run ``run_id`` (status KILLED or FAILED) from its last epoch checkpoint."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    status, tags = lifecycle.run_status(run_id, tracking_uri)
    if status == "RUNNING":
        raise InputError("--resume", "run_id", f"run {run_id} is still RUNNING (process "
                         f"{tags.get(lifecycle.TAG_PID, '?')} on "
                         f"{tags.get(lifecycle.TAG_HOST, '?')})")
    if status == "FINISHED":
        raise InputError("--resume", "run_id", f"run {run_id} already FINISHED; nothing to "
                         "resume")
    spec = run_record.spec_of_run(run_id)
    if spec.train.workers > 1:
        raise InputError("--resume", "train.workers", "resume continues single-process runs; "
                         "Ray Train runs restart from their own checkpoints (train.max_failures)")
    spec = spec.model_copy(update={"tracking": spec.tracking.model_copy(
        update={"uri": tracking_uri})})
    dataset, data = prepare(spec)
    run_record.check_same_data(run_id, tags, dataset, data)
    where = f"run {run_id}/resume/state.pt"
    path = run_record.artifact_of_run(run_id, "resume/state.pt", "resume checkpoint")
    state = ResumeState.load(path, where)
    return run_training(spec, progress, (run_id, state))
