"""Distributed training on Ray Train + torch.distributed (gloo on CPU, NCCL on GPU).

``train_distributed(spec, data, worker_model)`` runs ``spec.train.workers`` Ray Train workers
with the same model code as :func:`recmind_dist.train.loop.train_model`. The trainer never names
a model class: :class:`WorkerModel` (made by the pipeline from the model registry) says how a
worker gets its model and what DDP must know, and the model's declared hooks
(:class:`recmind_dist.models.base.Recommender`) do the rest.

* **replicated** (``train.mode: replicated``): every worker builds the full model (Â and the
  embedding table) with the run seed; DDP broadcasts rank 0's parameters and all-reduces
  gradients. Every worker draws the same seeded permutation and negatives
  (:func:`~recmind_dist.train.loop.shard_batches`) and trains on its disjoint slice of each
  global batch, the loss scaled by its share of the batch, so the N-worker trajectory is the
  single-process one up to float round-off (with 1 worker: equal).
* **partitioned** (``train.mode: partitioned``): nodes are split with METIS (or at random,
  ``train.partitioner``); each worker owns its rows of Â and of the embedding table, gathers
  the halo every layer and fetches the batch rows it does not own, all with differentiable
  collectives (:mod:`recmind_dist.graph.partitioned`); models with a partitioned builder
  only. Adam is per element, so this too
  follows the single-process trajectory.

Validation and test are ranked by all workers, each its share of the users
(:mod:`recmind_dist.train.worker_eval`; ``eval.over_workers: false``: by rank 0 alone). Rank 0
decides early stopping (broadcast to all), logs per-epoch
metrics to MLflow (train terms all-reduced over workers). Every epoch the workers report one
checkpoint with ``ray.train.report``, which Ray Train merges into one folder: each worker's
piece (``piece-{rank}.pt``: parameters, optimiser state, best parameters; partitioned: its
own rows, written by that worker, so no rank ever holds the whole model's training state;
replicated: rank 0's) and rank 0's ``state.pt`` (sampler RNG, torch RNG, epoch,
early-stopping state, history). ``FailureConfig(max_failures)`` restarts the
worker group after a crash; workers resume from ``ray.train.get_checkpoint()``.

Test hook: ``RECMIND_TRAIN_FAIL_AT_EPOCH=k`` (with ``RECMIND_TRAIN_FAIL_MARKER=path``, and
optionally ``RECMIND_TRAIN_FAIL_RANK``, default the last rank) makes that worker
``os._exit(1)`` after its first batch of epoch ``k``, once: the marker file records that it
happened. The variables are read by the driver and passed to the workers.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from recmind_dist.data.split import SplitData
from recmind_dist.errors import InputError
from recmind_dist.models.base import Batch, Recommender
from recmind_dist.specs import JobSpec
from recmind_dist.train.checkpoint import load_checkpoint, plain
from recmind_dist.train.loop import (
    BestTracker,
    TrainResult,
    epoch_row,
    is_eval_epoch,
    make_optimizer,
    peak_rss_mb,
    seed_everything,
    shard_batches,
    state_for_checkpoint,
    steps_per_epoch,
    train_epoch,
)
from recmind_dist.train.lr_rule import effective_lr

log = logging.getLogger(__name__)

__all__ = [
    "FAIL_AT_EPOCH_ENV",
    "FAIL_MARKER_ENV",
    "FAIL_RANK_ENV",
    "DistributedOutcome",
    "WorkerModel",
    "ray_run_dir",
    "train_distributed",
]

FAIL_AT_EPOCH_ENV = "RECMIND_TRAIN_FAIL_AT_EPOCH"
FAIL_MARKER_ENV = "RECMIND_TRAIN_FAIL_MARKER"
FAIL_RANK_ENV = "RECMIND_TRAIN_FAIL_RANK"
_STATE = "state.pt"
_RESULT = "result.json"


def _piece_file(rank: int) -> str:
    """A worker's share of a checkpoint: its parameters, optimiser state and best parameters
    (partitioned: its own rows; replicated: rank 0's copy)."""
    return f"piece-{rank}.pt"


@dataclass
class DistributedOutcome:
    result: TrainResult
    state_dict: dict[str, torch.Tensor] | None  # best parameters (replicated: full model)
    checkpoint_path: str | None
    restarts: int = 0


@dataclass
class WorkerModel:
    """How a worker gets its model; picklable (shipped to every worker).

    ``build(device)`` makes a fresh model (replicated mode, when no initial model is given);
    ``build_partitioned(local_graph, device, init)`` makes this rank's share of the model for
    ``train.mode: partitioned`` (None: the model has no partitioned form);
    ``find_unused_parameters`` is DDP's flag (parameters that may get no gradient in a step).
    """

    build: Callable[[torch.device], Recommender]
    find_unused_parameters: bool
    build_partitioned: Callable[[Any, torch.device, Recommender | None], Recommender] | None = None


class LossModule(nn.Module):
    """DDP needs ``forward``: route it to the model's ``training_loss``."""

    def __init__(self, model: Recommender) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: Batch, epoch: int):
        return self.model.training_loss(batch, epoch)


def _fault_from_env() -> dict[str, Any] | None:
    epoch = os.environ.get(FAIL_AT_EPOCH_ENV)
    if not epoch:
        return None
    marker = os.environ.get(FAIL_MARKER_ENV)
    if not marker:
        raise ValueError(f"{FAIL_AT_EPOCH_ENV} needs {FAIL_MARKER_ENV} (a marker file path)")
    rank = os.environ.get(FAIL_RANK_ENV)
    return {"epoch": int(epoch), "marker": marker, "rank": None if rank is None else int(rank)}


def _with_fault(batches, fault: dict | None, epoch: int, rank: int, world: int):
    """Pass batches through; the test hook kills this worker after one batch, once."""
    die_rank = None if fault is None else (world - 1 if fault["rank"] is None else fault["rank"])
    for i, item in enumerate(batches):
        if (die_rank == rank and fault["epoch"] == epoch and i == 1
                and not Path(fault["marker"]).exists()):
            Path(fault["marker"]).write_text(f"killed rank {rank} at epoch {epoch}\n")
            log.warning("test hook: rank %d exits at epoch %d", rank, epoch)
            os._exit(1)
        yield item


class _MlflowLogger:
    """Per-epoch metrics into an existing run (rank 0 only); no-op without a run id."""

    def __init__(self, run_id: str | None, uri: str | None) -> None:
        self.client = None
        self.run_id = run_id
        if run_id:
            from mlflow.tracking import MlflowClient

            logging.getLogger("mlflow").setLevel(logging.WARNING)
            logging.getLogger("alembic").setLevel(logging.WARNING)
            self.client = MlflowClient(tracking_uri=uri)

    def log(self, metrics: dict[str, float], step: int) -> None:
        if self.client is None:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        rows = [Metric(k, float(v), now, step) for k, v in metrics.items() if not math.isnan(v)]
        self.client.log_batch(self.run_id, metrics=rows)


def _save_checkpoint(files: dict[str, dict[str, Any]], extra_json: dict | None = None):
    from ray.train import Checkpoint

    d = tempfile.mkdtemp(prefix="recmind-ckpt-")
    for name, obj in files.items():
        torch.save(plain(obj), Path(d) / name)  # loadable weights-only (load_checkpoint)
    if extra_json is not None:
        (Path(d) / _RESULT).write_text(json.dumps(extra_json, default=float))
    return d, Checkpoint.from_directory(d)


class _NoReportLines(logging.Filter):
    """Drops Ray Train's "Reporting training result k: TrainingReport(...)" INFO line, which
    every worker logs for every report (the per-epoch numbers already go to MLflow)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Reporting training result")


def quiet_report_lines() -> None:
    """Attach :class:`_NoReportLines` to the logger that writes those lines (once). Ray
    names that logger by its module's file path (``logging.getLogger(__file__)``), outside
    ``ray.train``, so Ray Train's own ``LoggingConfig`` does not reach it."""
    try:
        from ray.train.v2._internal.execution import context as train_context
    except ImportError:  # another Ray layout: keep its lines
        return
    for name in (train_context.__file__, train_context.__name__):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _NoReportLines) for f in logger.filters):
            logger.addFilter(_NoReportLines())


def _report(metrics: dict[str, Any], files: dict[str, dict[str, Any]] | None, name: str,
            extra_json: dict | None = None) -> None:
    """Report ``metrics`` and this worker's checkpoint ``files`` (None: none); Ray Train merges
    the files of every worker into one checkpoint folder, ``name`` (the same on every rank)."""
    import shutil

    import ray.train

    if files:
        d, ckpt = _save_checkpoint(files, extra_json)
        try:
            ray.train.report(metrics, checkpoint=ckpt, checkpoint_dir_name=name)
        finally:
            shutil.rmtree(d, ignore_errors=True)
    else:
        ray.train.report(metrics, checkpoint=None)


def _broadcast(obj: Any) -> Any:
    import torch.distributed as dist

    if not dist.is_initialized() or dist.get_world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _worker_loop(cfg: dict[str, Any]) -> None:
    import ray
    import ray.train
    import torch.distributed as dist

    quiet_report_lines()

    from recmind_dist.sampling import NegativeSampler
    from recmind_dist.train.collectives import all_gather_autograd, all_reduce_max, all_reduce_sum
    from recmind_dist.train.worker_eval import WorkerEvaluation

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    spec = JobSpec.model_validate(cfg["spec"])
    ts = spec.train
    data: SplitData = cfg["data"]
    if isinstance(data, ray.ObjectRef):
        data = ray.get(data)
    if ts.device.startswith("cuda"):
        import ray.train.torch

        device = ray.train.torch.get_device()
    else:
        device = torch.device("cpu")
    if ts.num_threads:
        torch.set_num_threads(ts.num_threads)

    seed_everything(spec.seed)
    partitioned = ts.mode == "partitioned" and world > 1
    init = cfg.get("model")
    if isinstance(init, ray.ObjectRef):
        init = ray.get(init)
    worker_model: WorkerModel = cfg["worker_model"]
    if isinstance(worker_model, ray.ObjectRef):
        worker_model = ray.get(worker_model)
    if partitioned:
        plan = cfg["partition"]
        if isinstance(plan, ray.ObjectRef):
            plan = ray.get(plan)
        local_graph = plan[rank] if isinstance(plan, list) else plan
        if isinstance(local_graph, ray.ObjectRef):
            local_graph = ray.get(local_graph)
        model = worker_model.build_partitioned(local_graph, device, init)
    elif init is not None:  # the driver's model: same code, same initial parameters
        model = init.to(device)
    else:
        model = worker_model.build(device)
    del init
    net = None
    if world > 1:
        # cross-worker negatives: a contrastive loss gathers every worker's batch; replicated
        # workers each train on their slice of the global batch
        model.set_gather(all_gather_autograd)
        model.set_shard(rank, world)
    evaluation = WorkerEvaluation(data, spec.eval, rank, world, partitioned, device)
    logger = _MlflowLogger(cfg.get("mlflow_run_id"), cfg.get("tracking_uri")) if rank == 0 else None

    rng = np.random.default_rng(spec.seed)
    tracker = BestTracker(ts.stop_metric, best_state=state_for_checkpoint(model))
    history: list[dict[str, float]] = []
    train_seconds, stop_reason, start_epoch, restarts = 0.0, "epochs", 1, 0
    trainable = model.trainable and ts.epochs > 0
    opt, lr = None, effective_lr(ts)
    if trainable:
        if not partitioned and world > 1:
            from torch.nn.parallel import DistributedDataParallel

            # DDP gets its own process group: its backward-hook all-reduces run asynchronously
            # and must not interleave with collectives inside the model's backward (the
            # InfoNCE all-gather of RecMind) on the default group -- gloo would pair up
            # unrelated operations of equal size and mix their data.
            net = DistributedDataParallel(  # unused: e.g. RecMind's gates during warm-up
                LossModule(model), device_ids=[device.index] if device.type == "cuda" else None,
                find_unused_parameters=worker_model.find_unused_parameters,
                process_group=dist.new_group(),
            )
        opt = make_optimizer(model, lr)

    ckpt = ray.train.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            st = load_checkpoint(Path(d) / _STATE, device, "Ray Train checkpoint")
            own = rank if st["partitioned"] else 0
            piece = load_checkpoint(Path(d) / _piece_file(own), device, "Ray Train checkpoint")
        model.load_state_dict(piece["model"])
        if opt is not None and piece.get("opt") is not None:
            opt.load_state_dict(piece["opt"])
        tracker.load_state_dict({**st["tracker"], "best_state": piece["best_state"]})
        rng.bit_generator.state = st["rng"]
        torch.set_rng_state(st["torch_rng"])
        history = st["history"]
        train_seconds = st["train_seconds"]
        start_epoch = st["epoch"] + 1
        restarts = st.get("restarts", 0) + 1
        stop_reason = st.get("stop_reason") or "epochs"
        if rank == 0:
            log.warning("resumed from checkpoint after epoch %d", st["epoch"])
        if st.get("stopped"):
            start_epoch = ts.epochs + 1  # the run had finished its loop

    def snapshot(epoch: int, stopped: bool) -> dict[str, dict[str, Any]] | None:
        """This worker's checkpoint files: its piece (partitioned: every rank its own rows,
        written by itself, so no rank holds the whole model; replicated: rank 0's) and, on
        rank 0, the shared state (RNGs, tracker, history, epoch)."""
        tr = tracker.state_dict()
        files: dict[str, dict[str, Any]] = {}
        if partitioned or rank == 0:
            files[_piece_file(rank)] = {
                "model": state_for_checkpoint(model),
                "opt": opt.state_dict() if opt is not None else None,
                "best_state": tr["best_state"],
            }
        if rank != 0:
            return files or None
        del tr["best_state"]
        files[_STATE] = {
            "partitioned": partitioned,
            "world": world,
            "rng": rng.bit_generator.state,
            "torch_rng": torch.get_rng_state(),
            "tracker": tr,
            "history": history,
            "train_seconds": train_seconds,
            "epoch": epoch,
            "stop_reason": stop_reason,
            "stopped": stopped,
            "restarts": restarts,
        }
        return files

    epoch = start_epoch - 1
    if not trainable:
        stop_reason = "nothing to train"
    else:
        sampler = NegativeSampler(data.n_items, data.train)
        steps = steps_per_epoch(len(data.train), ts.batch_size, world)
        for epoch in range(start_epoch, ts.epochs + 1):
            model.train()
            model.on_epoch_start(epoch, steps)
            t0 = time.perf_counter()
            ep = epoch

            def step(batch: Batch, weight: float, ep: int = ep):
                if net is not None:
                    loss, parts = net(batch, ep)
                else:
                    loss, parts = model.training_loss(batch, ep)
                # replicated: DDP averages gradients over workers -> scale by share * world;
                # partitioned: the exchanges' backward sums into the owners -> by share
                scale = weight if partitioned else weight * world
                return (loss if scale == 1.0 else loss * scale), parts

            batches = shard_batches(data, sampler, ts.batch_size, rng, device, rank, world)
            sums, n_batches = train_epoch(
                step, opt, _with_fault(batches, cfg.get("fault"), epoch, rank, world)
            )
            keys = sorted(sums)
            totals = all_reduce_sum([sums[k] for k in keys], device)
            sums = dict(zip(keys, totals, strict=True))
            seconds = time.perf_counter() - t0
            train_seconds += seconds
            row = epoch_row(epoch, train_seconds, sums, n_batches, model.epoch_metrics(), lr,
                            seconds)
            row["peak_rss_mb"] = all_reduce_max([peak_rss_mb()])[0]  # the largest worker's
            valid, reason = None, None
            if is_eval_epoch(ts, epoch):
                t0 = time.perf_counter()
                if partitioned:
                    model.gather_for_eval()  # collective: every rank takes part
                valid = evaluation(model, "valid", buckets=False)  # spread: a collective
                if rank == 0:
                    row["valid_seconds"] = time.perf_counter() - t0
                    row.update({f"valid/{k}": v for k, v in valid.items()})
                    tracker.update(valid, epoch, model)
            if rank == 0:
                reason = tracker.stop_reason(ts, epoch, train_seconds)
                history.append(row)
                logger.log({k: v for k, v in row.items() if k != "epoch"}, step=epoch)
            valid, reason = _broadcast((valid, reason))
            if rank != 0 and valid is not None:
                tracker.update(valid, epoch, model)  # same decision; keeps own best rows
            if reason is not None:
                stop_reason = reason
            _report({"epoch": epoch, **row}, snapshot(epoch, reason is not None),
                    f"checkpoint_epoch{epoch:05d}")
            if reason is not None:
                break

    # final: best parameters, full validation and test metrics on rank 0
    if trainable and tracker.best_state is not None:
        model.load_state_dict(tracker.best_state)
    full_state = None
    if partitioned:
        full_state = model.gather_for_eval(full_state=True)  # collective
    final_files = snapshot(epoch, True)
    extra = None
    best_valid = evaluation(model, "valid")
    t0 = time.perf_counter()
    test = evaluation(model, "test")
    test_seconds = time.perf_counter() - t0
    if rank == 0:
        best_epoch = tracker.best_epoch if trainable else 0
        result = TrainResult(best_epoch, best_valid, test, history, train_seconds, epoch,
                             stop_reason, test_seconds)
        extra = {"result": asdict(result), "restarts": restarts, "world": world}
        final_files[_STATE]["final_model"] = (full_state if partitioned
                                              else state_for_checkpoint(model))
    _report({"epoch": epoch, "final": 1}, final_files, f"checkpoint_final{epoch:05d}", extra)
    if world > 1:
        dist.barrier()


def default_storage_path() -> Path:
    return Path(os.environ.get("RECMIND_RAY_STORAGE", "runs/ray_train")).resolve()


def ray_run_dir(storage: str | Path, spec_name: str, mlflow_run_id: str) -> Path:
    """The Ray Train run folder of MLflow run ``mlflow_run_id``: its checkpoints live there,
    and training again under the same name resumes from the latest (Ray Train V2)."""
    return Path(storage) / f"{spec_name}-{mlflow_run_id}"


def train_distributed(
    spec: JobSpec,
    data: SplitData,
    worker_model: WorkerModel,
    *,
    mlflow_run_id: str | None = None,
    tracking_uri: str | None = None,
    model: Recommender | None = None,
    storage_path: str | Path | None = None,
    run_name: str | None = None,
    ray_address: str | None = None,
    num_cpus: int | None = None,
) -> DistributedOutcome:
    """Train ``spec.model`` on ``data`` with ``spec.train.workers`` Ray Train workers.

    ``model`` (optional) is the driver's freshly built model: workers start from a copy of it
    (the same parameters as a single-process run; RecMind's text features included);
    without it every worker calls ``worker_model.build`` after seeding with ``spec.seed``.
    ``run_name`` + ``storage_path`` name the Ray Train run; re-running with the same pair
    resumes from its latest checkpoint (Ray Train V2 semantics). Default: a fresh name.
    """
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from recmind_dist.embed.ray_runtime import ensure_ray

    ts = spec.train
    ensure_ray(ray_address, num_cpus=num_cpus)
    use_gpu = ts.device.startswith("cuda")
    cfg: dict[str, Any] = {
        "spec": spec.model_dump(mode="json"),
        "data": ray.put(data),
        "mlflow_run_id": mlflow_run_id,
        "tracking_uri": tracking_uri,
        "fault": _fault_from_env(),
        "model": None if model is None else ray.put(model.cpu()),
        "worker_model": ray.put(worker_model),
    }
    if ts.mode == "partitioned" and ts.workers > 1:
        from recmind_dist.train.partition_plan import plan_partition

        if worker_model.build_partitioned is None:
            raise InputError("job spec", "train.mode", f"model {spec.model.name!r} has no "
                             f"partitioned form; use train.mode: replicated")
        cfg["partition"] = ray.put(plan_partition(spec, data, ts.workers))
    storage = Path(storage_path) if storage_path else default_storage_path()
    name = run_name or ray_run_dir(storage, spec.name, mlflow_run_id or uuid.uuid4().hex[:12]).name
    trainer = TorchTrainer(
        _worker_loop,
        train_loop_config=cfg,
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=ScalingConfig(num_workers=ts.workers, use_gpu=use_gpu,
                                     resources_per_worker=None if use_gpu else {"CPU": 1}),
        run_config=RunConfig(
            name=name, storage_path=str(storage),
            failure_config=FailureConfig(max_failures=ts.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
        ),
    )
    out = trainer.fit()
    if out.checkpoint is None:
        raise RuntimeError(f"distributed training produced no checkpoint (error: {out.error})")
    with out.checkpoint.as_directory() as d:
        info = json.loads((Path(d) / _RESULT).read_text())
        st = load_checkpoint(Path(d) / _STATE, "cpu", "Ray Train checkpoint")
    result = TrainResult(**info["result"])
    return DistributedOutcome(result, st["final_model"], out.checkpoint.path,
                              info.get("restarts", 0))


def train_for_pipeline(spec: JobSpec, data: SplitData, model: Recommender,
                       worker_model: WorkerModel, mlflow_run_id: str | None,
                       storage_path: str | Path | None = None) -> TrainResult:
    """``pipeline.run_training``'s path for ``train.workers > 1``: train with Ray Train,
    log per-epoch metrics from rank 0 into the active MLflow run, load the best parameters
    into ``model`` (so the caller logs the same artefacts as a single-process run).

    The Ray Train run is named after the MLflow run (:func:`ray_run_dir`), so training the
    same MLflow run again with the same ``storage_path`` continues from its last checkpoint
    (``train --resume``)."""
    from recmind_dist import tracking

    device = next(iter(model.parameters()), torch.empty(0)).device
    out = train_distributed(
        spec, data, worker_model, model=model, mlflow_run_id=mlflow_run_id,
        tracking_uri=tracking.tracking_uri(spec.tracking), storage_path=storage_path,
    )
    if out.state_dict is not None and model.trainable:
        model.load_state_dict(out.state_dict)
    model.to(device)
    if mlflow_run_id:
        tracking.log_metrics({"dist/workers": spec.train.workers, "dist/restarts": out.restarts})
    return out.result
