"""The train job end to end: dataset -> split -> model -> training -> MLflow.

The same functions back the CLI (``recmind-dist train``) and the Ray job entrypoints
(``jobs/train.py``), so a run is reproducible from (job spec, seed) alone: both are logged.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from recmind_dist import tracking
from recmind_dist.data.schema import Dataset
from recmind_dist.data.split import SplitData
from recmind_dist.errors import InputError
from recmind_dist.eval.evaluator import SplitEvaluator
from recmind_dist.eval.topk import rank_topk
from recmind_dist.models.base import Recommender
from recmind_dist.models.inputs import ModelInputs
from recmind_dist.models.registry import build_model, model_entry, needed_inputs
from recmind_dist.specs import JobSpec
from recmind_dist.train.checkpoint import ResumeState, load_checkpoint
from recmind_dist.train.distributed import WorkerModel, default_storage_path, train_for_pipeline
from recmind_dist.train.loop import TrainResult, seed_everything, state_for_checkpoint, train_model

log = logging.getLogger(__name__)


from recmind_dist.pipeline import lifecycle, preflight, run_record
from recmind_dist.pipeline.dataset import prepare


def model_inputs(spec: JobSpec, dataset: Dataset, data: SplitData,
                 progress: bool = False) -> ModelInputs:
    """Gather what ``spec.model`` needs beyond its spec and the split (the registry says
    which: :func:`recmind_dist.models.registry.needed_inputs`).

    Text features are computed once by the embedding job and cached under
    ``model.features_cache`` (default ``<data.cache_dir>/features``), keyed by dataset
    checksum, split key, text and embed spec; LLMRec's augmentation artefact is made once
    (:mod:`recmind_dist.pipeline.augmentation`) and reused.
    """
    needs = needed_inputs(spec.model)
    features = None
    if "profiles" in needs:  # GAT-LLM with LM-written profiles
        from recmind_dist.generation import Generator
        from recmind_dist.pipeline.features import profile_features

        features = profile_features(dataset, data, Generator(spec.model.profiles), spec.text,
                                    spec.embed, features_root(spec),
                                    backend=spec.model.features_backend)
    elif "text_features" in needs:
        from recmind_dist.pipeline.features import node_text_features

        features = node_text_features(dataset, data, spec.text, spec.embed, features_root(spec),
                                      backend=spec.model.features_backend, progress=progress)
    if "node_texts" in needs:
        from recmind_dist.pipeline.features import attach_node_texts

        features = attach_node_texts(features, dataset, data, spec.text, spec.embed)
    augmentation = None
    if "augmentation" in needs:
        from recmind_dist.pipeline.augmentation import augmentation_inputs

        augmentation = augmentation_inputs(spec, dataset, data, progress)
    return ModelInputs(features=features, augmentation=augmentation)


def worker_model(spec: JobSpec, data: SplitData, inputs: ModelInputs) -> WorkerModel:
    """How Ray Train workers get ``spec.model`` (from its registry entry)."""
    entry = model_entry(spec.model)
    partitioned = None
    if entry.partitioned is not None:
        partitioned = functools.partial(_partitioned, entry.partitioned, spec.model, data,
                                        spec.seed)
    return WorkerModel(functools.partial(build_model, spec.model, data, inputs),
                       entry.ddp_find_unused_parameters, partitioned)


def _partitioned(build, model_spec, data, seed, local_graph, device, init):
    return build(model_spec, data, local_graph, device, init, seed)


def features_root(spec: JobSpec) -> Path:
    """Where node text features are cached: ``model.features_cache`` or
    ``<data.cache_dir>/features`` (the embed command and training share it)."""
    return getattr(spec.model, "features_cache", None) or Path(spec.data.cache_dir) / "features"


def run_embedding(spec: JobSpec, backend: str = "ray", progress: bool = True,
                  ray_address: str | None = None) -> tuple[str, dict]:
    """The embedding job for ``spec`` (items + training-only user profiles), into the same
    cache training reads; throughput and wall time logged to MLflow. Returns (run id, stats)."""
    from recmind_dist.pipeline.features import node_text_features

    seed_everything(spec.seed)
    dataset, data = prepare(spec)
    preflight.check_job(spec, dataset, data, texts=True)
    kwargs = {"ray_address": ray_address} if backend == "ray" and ray_address else {}
    with lifecycle.tracked_run(spec, {"job": "embed", "dataset_checksum": str(dataset.checksum),
                                      "split_key": data.key}) as run:
        feats = node_text_features(dataset, data, spec.text, spec.embed, features_root(spec),
                                   backend=backend, progress=progress, **kwargs)
        stats: dict[str, float] = dict(feats.summary())
        for kind, res in feats.info.get("results", {}).items():
            stats.update({f"embed/{kind}/texts_per_s": res.texts_per_s,
                          f"embed/{kind}/tokens_per_s": res.tokens_per_s,
                          f"embed/{kind}/wall_s": res.wall_s,
                          f"embed/{kind}/n_encoded": float(res.n_encoded),
                          f"embed/{kind}/shards_skipped": float(res.shards_skipped)})
        tracking.log_metrics(stats)
        tracking.log_json({k: str(v) for k, v in feats.info.items() if k != "results"},
                          "features.json")
        return run.info.run_id, stats


def log_probes(model: Recommender, spec: JobSpec, data: SplitData,
               run_label: str) -> dict[str, float]:
    """Log a model's probes (:meth:`Recommender.probes`; RecMind's gate γ per degree bucket and
    layer) as metrics, JSON and a PNG titled with ``run_label``. Empty for models without."""
    probes = model.probes()
    if not probes:
        return {}
    import tempfile

    from recmind_dist.eval.gate_probe import probe_report

    degree = np.concatenate([data.user_degree, data.item_degree])
    with tempfile.TemporaryDirectory() as tmp:
        png = Path(tmp) / "gate_vs_degree.png"
        report = probe_report(probes, data.n_users, degree, spec.eval.cold_degree,
                              spec.eval.head_fraction, png, run_label)
        if report:
            tracking.log_metrics(report)
            tracking.log_json(report, "gate_probe.json")
        if png.exists():
            tracking.log_file(png, "plots")
    return report


def log_run_plots(result: TrainResult, spec: JobSpec, run_id: str) -> None:
    """Log ``plots/training_curves.png`` (loss terms and validation metrics per epoch) and
    ``plots/test_buckets.png`` (test metrics per degree bucket), titled with run name, id and
    best epoch (:mod:`recmind_dist.plots`)."""
    import tempfile

    from recmind_dist import plots

    title = plots.run_title(spec.tracking.run_name or spec.name, run_id, result.best_epoch)
    with tempfile.TemporaryDirectory() as tmp:
        curves = plots.training_curves(result.history, title, Path(tmp) / "training_curves.png",
                                       result.best_epoch)
        buckets = plots.bucket_bars(result.test, spec.eval.ks, title,
                                    Path(tmp) / "test_buckets.png")
        tracking.log_file(curves, "plots")
        tracking.log_file(buckets, "plots")


@dataclass
class RunOutcome:
    run_id: str
    result: TrainResult
    data: SplitData
    spec: JobSpec | None = None  # the spec trained (a resumed run's own logged spec)


def final_metrics(result: TrainResult) -> dict[str, float]:
    return {
        **tracking.prefixed(result.best_valid, "valid"),
        **tracking.prefixed(result.test, "test"),
        "best_epoch": float(result.best_epoch),
        "train_seconds": result.train_seconds,
        "test_seconds": result.test_seconds,
        "epochs_run": float(result.epochs_run),
    }


TAG_RAY_STORAGE = "recmind.ray_storage"  # where a Ray Train run keeps its checkpoints


@dataclass(frozen=True)
class ResumePoint:
    """Where ``train --resume`` continues MLflow run ``run_id``: single-process, from its
    logged resume ``state``; Ray Train, from the checkpoints under ``ray_storage``."""

    run_id: str
    state: ResumeState | None = None
    ray_storage: Path | None = None


def run_training(spec: JobSpec, progress: bool = True,
                 resume: ResumePoint | None = None) -> RunOutcome:
    """Train ``spec.model`` and log everything to MLflow; returns the run id and results.

    Every input is checked before the run starts (:mod:`recmind_dist.pipeline.preflight`).
    Single-process training logs a resume checkpoint (``resume/state.pt``); Ray Train
    keeps its checkpoints under the storage folder tagged ``recmind.ray_storage``.
    ``resume`` continues that run from either (see ``pipeline.resume``)."""
    seed_everything(spec.seed)
    dataset, data = prepare(spec)
    preflight.check_job(spec, dataset, data,
                        texts=bool({"text_features", "profiles"} & needed_inputs(spec.model)))
    device = torch.device(spec.train.device)
    inputs = model_inputs(spec, dataset, data, progress)
    features = inputs.features
    model = build_model(spec.model, data, inputs, device)
    evaluator = SplitEvaluator(data, spec.eval)
    tags = {"dataset_checksum": str(dataset.checksum), "split_key": data.key,
            "dataset_source": str(dataset.meta.get("source", ""))}
    with lifecycle.tracked_run(spec, tags, resume.run_id if resume else None) as run:
        tracking.log_metrics({f"data/{k}": v for k, v in data.summary().items()})
        if features is not None:
            tracking.log_metrics({f"features/{k}": v for k, v in features.summary().items()})
        if inputs.augmentation is not None:
            from recmind_dist.pipeline.augmentation import log_augmentation

            log_augmentation(spec, data)

        def on_epoch(epoch: int, row: dict[str, float], _: Recommender) -> None:
            tracking.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=epoch)
            lifecycle.heartbeat()

        if spec.train.workers > 1:  # Ray Train workers (recmind_dist.train.distributed)
            storage = (resume.ray_storage if resume else None) or default_storage_path()
            tracking.set_tags({TAG_RAY_STORAGE: str(storage)})
            result = train_for_pipeline(spec, data, model, worker_model(spec, data, inputs),
                                        run.info.run_id, storage)
        else:
            result = train_model(model, data, spec.train, evaluator, spec.seed, on_epoch, progress,
                                 resume.state if resume else None, log_resume_state)
        metrics = final_metrics(result)
        # logged one step after the last epoch: the series' last point is the best checkpoint's
        tracking.log_metrics(metrics, step=result.epochs_run + 1)
        tracking.log_json(metrics, "metrics.json")
        tracking.log_json(result.history, "history.json")
        log_run_plots(result, spec, run.info.run_id)
        log_probes(model, spec, data, f"{spec.name} · run {run.info.run_id[:8]} · best epoch "
                   f"{result.best_epoch}")
        if spec.tracking.log_checkpoint and model.trainable:
            tracking.log_torch(state_for_checkpoint(model), "model.pt")
        tracking.log_text(result.stop_reason, "stop_reason.txt")
        return RunOutcome(run.info.run_id, result, data, spec)


def log_resume_state(state: ResumeState) -> None:
    """Log a single-process resume checkpoint to the active run (``resume/state.pt``)."""
    import tempfile

    with lifecycle.signals_deferred(), tempfile.TemporaryDirectory() as tmp:
        tracking.log_file(state.save(Path(tmp) / "state.pt"), "resume")


def load_run(
    run_id: str, tracking_uri: str | None = None
) -> tuple[JobSpec, Dataset, SplitData, Recommender]:
    """Rebuild a finished run's dataset, split and model (best checkpoint) from MLflow.

    Refused (InputError): an unknown, unfinished or killed run, a dataset or split that
    changed since the run (:func:`recmind_dist.pipeline.run_record.check_same_data`), a
    missing, truncated or code-carrying checkpoint."""
    import mlflow

    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    tags = lifecycle.require_finished(run_id, tracking_uri or mlflow.get_tracking_uri())
    spec = run_record.spec_of_run(run_id)
    seed_everything(spec.seed)
    dataset, data = prepare(spec)
    run_record.check_same_data(run_id, tags, dataset, data)
    model = build_model(spec.model, data, model_inputs(spec, dataset, data), "cpu")
    if model.trainable:
        where = f"run {run_id}/checkpoint/model.pt"
        ckpt = run_record.artifact_of_run(run_id, "checkpoint/model.pt", "checkpoint")
        try:
            model.load_state_dict(load_checkpoint(ckpt, "cpu", where))
        except RuntimeError as exc:
            raise InputError(where, "checkpoint", f"does not fit the run's model "
                             f"({str(exc).splitlines()[0][:160]})") from None
    return spec, dataset, data, model


def export_item_columns(dataset: Dataset, text_spec) -> pd.DataFrame:
    """Per dataset item id: ``title`` (``text.title_column``, empty when absent) and ``text``
    (the item's templated text, what the language model reads)."""
    from recmind_dist.text.templates import item_texts

    texts = item_texts(dataset, text_spec).set_index("id")["text"]
    titles = pd.Series("", index=texts.index, dtype=object)
    items = dataset.items
    if items is not None and text_spec.title_column in items.columns:
        titles.loc[items["id"].to_numpy()] = items[text_spec.title_column].fillna("").astype(
            str).to_numpy()
    return pd.DataFrame({"title": titles.astype(str), "text": texts.astype(str)})


def export_topk(
    model: Recommender, data: SplitData, evaluator: SplitEvaluator, raw_user: np.ndarray,
    raw_item: np.ndarray, k: int, out: Path, batch_users: int = 1024,
    item_columns: pd.DataFrame | None = None,
) -> int:
    """Write every test user's top-``k`` atomically: ``user`` and ``item`` are the raw ids of
    the source data, ``rank`` 1..k, ``score`` the model's; then ``item_index`` (the item's
    ``id`` in the dataset's ``items.parquet``) and the columns of ``item_columns`` (indexed
    by that id, e.g. :func:`export_item_columns`: ``title``, ``text``)."""
    from recmind_dist.io import write_parquet

    model.eval()
    with torch.no_grad():
        user_repr, item_repr = model.representations()
    users = np.unique(data.test[:, 0])
    frames = []
    for start in range(0, len(users), batch_users):
        batch = users[start : start + batch_users]
        scores, items = rank_topk(user_repr, item_repr, batch, evaluator.test_exclude, k,
                                  evaluator.spec.chunk_items)
        kk = items.shape[1]
        frames.append(pd.DataFrame({
            "user": raw_user[data.user_ids[np.repeat(batch, kk)]],
            "rank": np.tile(np.arange(1, kk + 1), len(batch)),
            "item": raw_item[data.item_ids[items.numpy().ravel()]],
            "score": scores.numpy().ravel().astype(np.float32),
            "item_index": data.item_ids[items.numpy().ravel()].astype(np.int64),
        }))
    table = pd.concat(frames, ignore_index=True)
    if item_columns is not None:
        table = table.join(item_columns, on="item_index")
    write_parquet(table, out)
    return len(table)
