"""Ray Train trainer: 1 worker == single process; 2 workers (replicated, with a worker killed
mid-epoch and resumed from the last checkpoint; partitioned) follow the single-process run.

One local Ray (127.0.0.1, num_cpus=2) for the module; tiny graphs.
"""

from __future__ import annotations

import pytest
from _dist_helpers import single_process, tiny_spec, write_tiny

from recmind_dist.errors import InputError
from recmind_dist.models.inputs import ModelInputs
from recmind_dist.pipeline import worker_model
from recmind_dist.train.distributed import (
    FAIL_AT_EPOCH_ENV,
    FAIL_MARKER_ENV,
    FAIL_RANK_ENV,
    train_distributed,
)


@pytest.fixture(scope="module")
def ray_local():
    from recmind_dist.embed.ray_runtime import ensure_ray, shutdown_ray

    ensure_ray(num_cpus=2)
    yield
    shutdown_ray()


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    root = tmp_path_factory.mktemp("dist")
    spec = tiny_spec(write_tiny(root), epochs=4)
    data, init, result, model = single_process(spec)
    return root, spec, data, init, result, model


def _max_diff(a: dict, b: dict) -> float:
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def test_one_worker_equals_single_process(ray_local, reference):
    root, spec, data, init, ref, ref_model = reference
    out = train_distributed(spec, data, worker_model(spec, data, ModelInputs()), model=init, storage_path=root / "ray1")
    assert _max_diff(out.state_dict, ref_model.state_dict()) <= 1e-6
    assert out.result.best_epoch == ref.best_epoch
    for a, b in zip(out.result.history, ref.history, strict=True):
        assert a["train/bpr"] == pytest.approx(b["train/bpr"], abs=1e-7)
        assert a["valid/ndcg_at_20"] == pytest.approx(b["valid/ndcg_at_20"], abs=1e-9)
    for k in ("recall_at_20", "ndcg_at_20"):
        assert out.result.test[k] == pytest.approx(ref.test[k], abs=1e-9)


def test_killed_worker_resumes_from_checkpoint(ray_local, reference, tmp_path, monkeypatch):
    root, spec, data, init, ref, ref_model = reference
    marker = tmp_path / "killed.marker"
    monkeypatch.setenv(FAIL_AT_EPOCH_ENV, "3")
    monkeypatch.setenv(FAIL_MARKER_ENV, str(marker))
    monkeypatch.setenv(FAIL_RANK_ENV, "1")
    spec2 = spec.model_copy(update={"train": spec.train.model_copy(
        update={"workers": 2, "max_failures": 2})})
    out = train_distributed(spec2, data, worker_model(spec2, data, ModelInputs()), model=init, storage_path=root / "ray2")
    assert marker.exists(), "the test hook did not fire"
    assert out.restarts == 1
    assert [r["epoch"] for r in out.result.history] == [1, 2, 3, 4]
    # 2 workers split every global batch in halves: the same trajectory up to round-off
    assert _max_diff(out.state_dict, ref_model.state_dict()) <= 1e-4
    for k in ("recall_at_20", "ndcg_at_20"):
        assert out.result.test[k] == pytest.approx(ref.test[k], abs=0.01)
    for a, b in zip(out.result.history, ref.history, strict=True):
        assert a["train/bpr"] == pytest.approx(b["train/bpr"], abs=1e-4)


def test_partitioned_two_workers_follow_single_process(ray_local, reference):
    root, spec, data, init, ref, ref_model = reference
    spec2 = spec.model_copy(update={"train": spec.train.model_copy(
        update={"workers": 2, "mode": "partitioned", "partitioner": "metis"})})
    spec2 = spec2.model_copy(update={"data": spec2.data.model_copy(
        update={"cache_dir": root / "cache"})})
    out = train_distributed(spec2, data, worker_model(spec2, data, ModelInputs()), model=init, storage_path=root / "ray3")
    assert list((root / "cache" / "partitions").glob("*-metis-2-*.npy"))
    assert _max_diff(out.state_dict, ref_model.state_dict()) <= 1e-4
    for k in ("recall_at_20", "ndcg_at_20"):
        assert out.result.test[k] == pytest.approx(ref.test[k], abs=0.01)


def test_failed_ray_train_job_resumes_into_the_same_run(ray_local, reference, tmp_path,
                                                        monkeypatch):
    """`train --resume RUN` of a Ray Train job whose worker group died for good (no restarts
    left): the same MLflow run continues from the last epoch checkpoint and ends on the
    single-process trajectory."""
    import mlflow
    import yaml
    from typer.testing import CliRunner

    from recmind_dist.cli import app
    from recmind_dist.pipeline.resume import _ray_storage
    from recmind_dist.pipeline.training import TAG_RAY_STORAGE

    _, spec, _, _, ref, _ = reference
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    job = spec.model_dump(mode="json")
    job["train"].update(workers=2, max_failures=0)
    job["tracking"] = {"uri": uri, "experiment": "dist-resume"}
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(job))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RECMIND_RAY_STORAGE", str(tmp_path / "ray"))
    monkeypatch.setenv(FAIL_AT_EPOCH_ENV, "3")
    monkeypatch.setenv(FAIL_MARKER_ENV, str(tmp_path / "killed.marker"))
    runner = CliRunner()
    cut = runner.invoke(app, ["train", "-c", str(tmp_path / "job.yaml"), "--no-progress"])
    assert cut.exit_code != 0 and (tmp_path / "killed.marker").exists(), cut.output
    client = mlflow.MlflowClient(uri)
    (failed,) = client.search_runs([client.get_experiment_by_name("dist-resume").experiment_id])
    run_id = failed.info.run_id
    assert failed.info.status == "FAILED" and "test/ndcg_at_20" not in failed.data.metrics
    assert failed.data.tags[TAG_RAY_STORAGE] == str(tmp_path / "ray")

    # resumed from another folder: the tag, not the environment, says where the checkpoints are
    monkeypatch.delenv(FAIL_AT_EPOCH_ENV)
    monkeypatch.setenv("RECMIND_RAY_STORAGE", str(tmp_path / "elsewhere"))
    res = runner.invoke(app, ["train", "--resume", run_id, "--tracking-uri", uri, "--no-progress"])
    assert res.exit_code == 0, res.output
    done = client.get_run(run_id)
    assert done.info.status == "FINISHED" and done.data.metrics["dist/restarts"] == 1
    bpr = sorted((m.step, m.value) for m in client.get_metric_history(run_id, "train/bpr"))
    # epochs 1-2 before the cut, 3-4 resumed (an epoch whose checkpoint the controller had
    # not recorded when the group died is trained, and logged, again: with the same value)
    assert {s for s, _ in bpr} == {1, 2, 3, 4}, bpr
    for step, got in bpr:
        assert got == pytest.approx(ref.history[step - 1]["train/bpr"], abs=1e-4), bpr
    for k in ("recall_at_20", "ndcg_at_20"):
        assert done.data.metrics[f"test/{k}"] == pytest.approx(ref.test[k], abs=0.01)

    # a Ray Train run whose folder holds no checkpoint is refused, naming the folder
    with pytest.raises(InputError, match="holds no checkpoint"):
        _ray_storage(spec, "0" * 32, {TAG_RAY_STORAGE: str(tmp_path / "empty")})


def test_private_ray_workers_quiet_the_placement_group_cleaner(ray_local):
    """The private local Ray has no State API: its worker processes raise the logger of Ray
    Train's placement-group cleaner to ERROR (its warnings would repeat every few seconds)."""
    import logging

    import ray

    from recmind_dist.embed.ray_runtime import PG_CLEANER_LOGGER

    def level() -> int:
        return logging.getLogger(PG_CLEANER_LOGGER).level

    assert ray.get(ray.remote(num_cpus=0)(level).remote()) == logging.ERROR
