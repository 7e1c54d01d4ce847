"""``train --resume RUN``: continue a killed or failed run in place.

The run's logged spec is rebuilt, its dataset and split must be unchanged
(:func:`recmind_dist.pipeline.run_record.check_same_data`), and training continues into the
same MLflow run, ending at the same metrics as an uninterrupted run:

* single process: from the last resume checkpoint (``resume/state.pt``,
  :class:`recmind_dist.train.checkpoint.ResumeState`);
* Ray Train (``train.workers > 1``): from the last epoch checkpoint of the Ray Train run named
  after the MLflow run, in the storage folder the run was tagged with
  (``recmind.ray_storage``; runs without the tag: ``RECMIND_RAY_STORAGE`` or
  ``runs/ray_train``). Ray Train restarts a crashed worker group by itself within
  ``train.max_failures``; this is for a job whose driver died (the Ray head went away, the
  job was stopped).
"""

from __future__ import annotations

from pathlib import Path

from recmind_dist.errors import InputError
from recmind_dist.pipeline import lifecycle, run_record
from recmind_dist.pipeline.dataset import prepare
from recmind_dist.pipeline.training import TAG_RAY_STORAGE, ResumePoint, RunOutcome, run_training
from recmind_dist.specs import JobSpec
from recmind_dist.train.checkpoint import ResumeState
from recmind_dist.train.distributed import default_storage_path, ray_run_dir

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
    spec = spec.model_copy(update={"tracking": spec.tracking.model_copy(
        update={"uri": tracking_uri})})
    if spec.train.workers > 1:
        point = ResumePoint(run_id, ray_storage=_ray_storage(spec, run_id, tags))
    else:
        point = None
    dataset, data = prepare(spec)
    run_record.check_same_data(run_id, tags, dataset, data)
    if point is None:
        where = f"run {run_id}/resume/state.pt"
        path = run_record.artifact_of_run(run_id, "resume/state.pt", "resume checkpoint")
        point = ResumePoint(run_id, state=ResumeState.load(path, where))
    return run_training(spec, progress, point)


def _ray_storage(spec: JobSpec, run_id: str, tags: dict[str, str]) -> Path:
    """The Ray Train storage folder holding run ``run_id``'s epoch checkpoints (refused when
    there are none: the run ended before its first epoch did, or the folder moved)."""
    storage = Path(tags[TAG_RAY_STORAGE]) if tags.get(TAG_RAY_STORAGE) else default_storage_path()
    run_dir = ray_run_dir(storage, spec.name, run_id)
    if not any(run_dir.glob("checkpoint_*")):
        raise InputError("--resume", "run_id", f"run {run_id} trained on Ray Train workers but "
                         f"{run_dir} holds no checkpoint (it ended before its first epoch did, "
                         "or its storage moved: set RECMIND_RAY_STORAGE to the folder that "
                         "holds it); start it again with --config")
    return storage
