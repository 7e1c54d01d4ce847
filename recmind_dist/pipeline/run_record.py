"""What a training run recorded about itself, and the guards that compare it with now.

A run logs its job spec (``job_spec.yaml``) and tags ``dataset_checksum`` and
``split_key``. Re-reading the run (``evaluate``, ``recommend``, ``--export-topk``,
``train --resume``) rebuilds the dataset and split from the spec; :func:`check_same_data`
refuses to go on when either differs (the dataset folder was re-imported with other data,
or the split code/spec changed), since the checkpoint's ids would then silently point at
other users and items.
"""

from __future__ import annotations

from pathlib import Path

from recmind_dist import tracking
from recmind_dist.data.schema import Dataset
from recmind_dist.data.split import SplitData
from recmind_dist.errors import InputError
from recmind_dist.specs import JobSpec, parse_spec
from recmind_dist.specs.yaml_source import load_yaml

__all__ = ["artifact_of_run", "check_same_data", "spec_of_run"]


def artifact_of_run(run_id: str, path: str, what: str) -> Path:
    """Download ``path`` of ``run_id``; a missing artefact is an InputError saying ``what``."""
    try:
        return tracking.download_artifact(run_id, path)
    except Exception as exc:  # noqa: BLE001 - mlflow raises several types for missing files
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ""
        raise InputError(f"run {run_id}/{path}", what, f"missing from the run ({first})"
                         ) from None


def spec_of_run(run_id: str) -> JobSpec:
    """The job spec a run logged (validated; old variant presets accepted)."""
    path = artifact_of_run(run_id, "job_spec.yaml", "job spec")
    source = f"run {run_id}/job_spec.yaml"
    return parse_spec(load_yaml(path.read_text(), source), source, logged=True)


def check_same_data(run_id: str, tags: dict[str, str], dataset: Dataset, data: SplitData
                    ) -> None:
    """Refuse when the dataset checksum or split key differs from the run's tags."""
    logged_sum, logged_key = tags.get("dataset_checksum"), tags.get("split_key")
    if logged_sum and logged_sum != str(dataset.checksum):
        raise InputError(dataset.path, "dataset_checksum", f"the dataset changed since run "
                         f"{run_id} was trained (checksum {str(dataset.checksum)[:12]}, the run "
                         f"used {logged_sum[:12]}); its metrics and checkpoint do not apply: "
                         "restore the data or train again")
    if logged_key and logged_key != data.key:
        raise InputError(dataset.path, "split_key", f"the split changed since run {run_id} "
                         f"was trained (key {data.key}, the run used {logged_key}); train again")
