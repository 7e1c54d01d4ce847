"""MLflow helpers: one run per job, the whole resolved spec as params, metrics with stable keys.

Metric keys: ``{split}/{metric}_at_{k}`` (``valid/ndcg_at_20``), bucket metrics
``{split}/{bucket}/{metric}_at_{k}`` (``test/cold/recall_at_20``), per-epoch training terms
``train/{term}``. The same final numbers are logged as the ``metrics.json`` artifact.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import re
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from recmind_dist.errors import InputError
from recmind_dist.io import dumps_json
from recmind_dist.specs import JobSpec, TrackingSpec

RUN_ID_MIN_PREFIX = 8


def tracking_uri(spec: TrackingSpec) -> str:
    """Spec value, else ``$MLFLOW_TRACKING_URI``, else ``sqlite:///<cwd>/mlflow.db``."""
    if spec.uri:
        return spec.uri
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return f"sqlite:///{Path.cwd().resolve() / 'mlflow.db'}"


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///...`` tracking URI (None for other stores)."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri.removeprefix("sqlite:///").split("?", 1)[0])


def artifact_root(uri: str, experiment: str) -> str | None:
    """Where a new experiment of a sqlite store keeps its artefacts: beside the database,
    ``<db dir>/mlartifacts/<experiment>``, so stores never share a folder and nothing lands in
    the current directory (MLflow's default is ``./mlruns/<id>`` of whatever the cwd is).
    None for other stores (a ``file:`` store or a server keeps its own artefact root)."""
    db = sqlite_path(uri)
    if db is None:
        return None
    folder = re.sub(r"[^A-Za-z0-9._-]+", "_", experiment).strip("._") or "experiment"
    if folder != experiment:  # two names that clean to the same folder stay apart
        folder += "-" + hashlib.sha256(experiment.encode()).hexdigest()[:8]
    return (db.resolve().parent / "mlartifacts" / folder).as_uri()


def use_experiment(experiment: str, uri: str) -> str:
    """Make ``experiment`` the active one, creating it with :func:`artifact_root` when new;
    returns its id."""
    from mlflow.exceptions import MlflowException

    mlflow = _mlflow()
    mlflow.set_tracking_uri(uri)
    exp = mlflow.get_experiment_by_name(experiment)
    if exp is None:
        try:
            mlflow.create_experiment(experiment, artifact_location=artifact_root(uri, experiment))
        except MlflowException:  # created concurrently by another process
            pass
    return mlflow.set_experiment(experiment).experiment_id


def existing_store(uri: str, option: str = "--tracking-uri") -> str:
    """``uri`` if its store exists; a sqlite file that does not exist is refused (reading
    commands must not leave an empty ``mlflow.db`` in whatever folder they ran from)."""
    db = sqlite_path(uri)
    if db is not None and not db.exists():
        raise InputError(option, "tracking_uri",
                         f"no MLflow store at {uri} (file {db} does not exist); run from the "
                         "folder that holds mlflow.db or pass --tracking-uri sqlite:///PATH")
    return uri


def resolve_run_id(run: str, uri: str, option: str = "--run") -> str:
    """The full id of the run whose id starts with ``run`` (at least
    :data:`RUN_ID_MIN_PREFIX` characters; the whole id always works)."""
    run = run.strip()
    if len(run) < RUN_ID_MIN_PREFIX or not re.fullmatch(r"[0-9a-fA-F]+", run):
        raise InputError(option, "run_id", f"{run!r} is not a run id (give at least "
                         f"{RUN_ID_MIN_PREFIX} hex characters of it)")
    client = _mlflow().MlflowClient(tracking_uri=existing_store(uri))
    matches: set[str] = set()
    for exp in client.search_experiments(view_type=3):  # ViewType.ALL
        token = None
        while True:
            page = client.search_runs([exp.experiment_id], run_view_type=3, max_results=5000,
                                      page_token=token)
            matches.update(r.info.run_id for r in page if r.info.run_id.startswith(run.lower()))
            token = page.token
            if not token:
                break
    if not matches:
        raise InputError(option, "run_id", f"no such MLflow run {run} in {uri}")
    if len(matches) > 1:
        raise InputError(option, "run_id", f"{run} matches {len(matches)} runs "
                         f"({', '.join(sorted(m[:12] for m in matches))}); give more characters")
    return matches.pop()


def training_run(run: str, uri: str, option: str = "--run") -> str:
    """:func:`resolve_run_id`, refusing runs that hold no trained model (e.g. ``embed`` runs)."""
    run_id = resolve_run_id(run, uri, option)
    info = _mlflow().MlflowClient(tracking_uri=uri).get_run(run_id)
    job = info.data.tags.get("job", "train")
    if job != "train":
        raise InputError(option, "run_id", f"run {run_id} is a {job!r} run, not a training "
                         "run; pass the id that `recmind-dist train` printed")
    return run_id


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
    uri = tracking_uri(spec.tracking)
    mlflow.set_tracking_uri(uri)
    use_experiment(spec.tracking.experiment, uri)
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
