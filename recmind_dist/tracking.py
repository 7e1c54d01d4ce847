"""MLflow helpers: one run per job, the whole resolved spec as params, metrics with stable keys.

Metric keys: ``{split}/{metric}_at_{k}`` (``valid/ndcg_at_20``), bucket metrics
``{split}/{bucket}/{metric}_at_{k}`` (``test/cold/recall_at_20``), per-epoch training terms
``train/{term}``. The same final numbers are logged as the ``metrics.json`` artifact.
"""

from __future__ import annotations

import contextlib
import math
import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from recmind_dist.io import dumps_json
from recmind_dist.specs import JobSpec, TrackingSpec


def tracking_uri(spec: TrackingSpec) -> str:
    """Spec value, else ``$MLFLOW_TRACKING_URI``, else ``sqlite:///<cwd>/mlflow.db``."""
    if spec.uri:
        return spec.uri
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return f"sqlite:///{Path.cwd().resolve() / 'mlflow.db'}"


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def prefixed(metrics: dict[str, float], prefix: str) -> dict[str, float]:
    return {f"{prefix}/{k}": float(v) for k, v in metrics.items()}


def _mlflow():
    import logging

    import mlflow

    logging.getLogger("alembic").setLevel(logging.WARNING)
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    return mlflow


@contextlib.contextmanager
def mlflow_run(spec: JobSpec, tags: dict[str, str] | None = None) -> Iterator[Any]:
    """Start a run under ``spec.tracking.experiment`` and log the spec, seed and git commit."""
    mlflow = _mlflow()
    mlflow.set_tracking_uri(tracking_uri(spec.tracking))
    mlflow.set_experiment(spec.tracking.experiment)
    with mlflow.start_run(run_name=spec.tracking.run_name or spec.name) as run:
        params = flatten(spec.model_dump(mode="json"))
        mlflow.log_params({k: ("" if v is None else v) for k, v in params.items()})
        mlflow.set_tags(
            {
                "seed": str(spec.seed),
                "git_commit": git_commit(),
                "spec_fingerprint": spec.fingerprint(),
                "model": spec.model.name,
                **(tags or {}),
            }
        )
        log_text(yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False), "job_spec.yaml")
        yield run


def log_metrics(metrics: dict[str, float], step: int | None = None) -> None:
    clean = {k: float(v) for k, v in metrics.items() if not math.isnan(v)}  # drop NaN (empty buckets)
    _mlflow().log_metrics(clean, step=step)


def set_tags(tags: dict[str, str]) -> None:
    _mlflow().set_tags(tags)


def log_text(text: str, artifact_file: str) -> None:
    _mlflow().log_text(text, artifact_file)


def log_json(obj: Any, artifact_file: str) -> None:
    """Strict JSON (NaN/inf as null, never bare ``NaN``)."""
    log_text(dumps_json(obj), artifact_file)


def log_file(path: str | Path, artifact_path: str | None = None) -> None:
    _mlflow().log_artifact(str(path), artifact_path)


def log_torch(obj: Any, name: str, artifact_path: str = "checkpoint") -> None:
    import torch

    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / name
        torch.save(obj, p)
        log_file(p, artifact_path)


def download_artifact(run_id: str, path: str, tracking: TrackingSpec | None = None) -> Path:
    mlflow = _mlflow()
    if tracking is not None:
        mlflow.set_tracking_uri(tracking_uri(tracking))
    return Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path))
