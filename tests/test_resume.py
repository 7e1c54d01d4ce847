"""`train --resume RUN` ends at the same metrics as an uninterrupted run; checkpoints are
weights-only (a pickle payload is refused)."""

from __future__ import annotations

import pickle
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from recmind_dist.cli import app
from recmind_dist.errors import InputError
from recmind_dist.pipeline import lifecycle
from recmind_dist.train.checkpoint import ResumeState, load_checkpoint, save_checkpoint

runner = CliRunner()


def _spec(tmp_path: Path, dataset: Path, experiment: str) -> Path:
    spec = {
        "name": "resume", "seed": 5,
        "data": {"source": None, "path": str(dataset)},
        "split": {"threshold": None},
        "model": {"name": "lightgcn", "dim": 8, "layers": 2},
        "train": {"epochs": 5, "batch_size": 32, "lr": 0.01, "patience": 50,
                  "stop_metric": "ndcg_at_10"},
        "eval": {"ks": [5, 10], "export_k": 5},
        "tracking": {"uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "experiment": experiment},
    }  # fmt: skip
    p = tmp_path / f"{experiment}.yaml"
    p.write_text(yaml.safe_dump(spec))
    return p


def _run_id(output: str) -> str:
    return output.split("RUN_ID=")[1].split()[0]


def test_resume_ends_at_the_uninterrupted_metrics(tiny_dataset, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    full = runner.invoke(app, ["train", "-c", str(_spec(tmp_path, tiny_dataset.path, "full")),
                               "--no-progress"])
    assert full.exit_code == 0, full.output

    beats = {"n": 0}
    real_heartbeat = lifecycle.heartbeat

    def dies_at_epoch_3() -> None:  # SIGTERM arriving during epoch 3's bookkeeping
        beats["n"] += 1
        real_heartbeat()
        if beats["n"] == 3:
            raise lifecycle.Interrupted("SIGTERM")

    monkeypatch.setattr(lifecycle, "heartbeat", dies_at_epoch_3)
    cut = runner.invoke(app, ["train", "-c", str(_spec(tmp_path, tiny_dataset.path, "cut")),
                              "--no-progress"])
    assert cut.exit_code == 143, cut.output
    assert "Traceback" not in cut.output and "marked KILLED" in cut.output
    run_id = cut.output.split("MLflow run ")[1].split()[0]
    client = mlflow.MlflowClient(uri)
    killed = client.get_run(run_id)
    assert killed.info.status == "KILLED"
    assert killed.data.tags[lifecycle.TAG_END_REASON] == "interrupted by SIGTERM"
    assert "test/ndcg_at_10" not in killed.data.metrics
    monkeypatch.setattr(lifecycle, "heartbeat", real_heartbeat)

    # evaluating the killed run is refused, naming the way out
    res = runner.invoke(app, ["evaluate", "--run", run_id, "--tracking-uri", uri])
    assert res.exit_code == 2 and "did not finish" in res.output and "--resume" in res.output

    res = runner.invoke(app, ["train", "--resume", run_id, "--tracking-uri", uri, "--no-progress"])
    assert res.exit_code == 0, res.output
    assert _run_id(res.output) == run_id  # the same MLflow run, continued
    done = client.get_run(run_id)
    ref = client.get_run(_run_id(full.output))
    assert done.info.status == "FINISHED"
    finals = {k: v for k, v in ref.data.metrics.items() if k.startswith(("test/", "valid/"))}
    assert finals and all(done.data.metrics[k] == pytest.approx(v, abs=1e-7)
                          for k, v in finals.items())
    assert done.data.metrics["best_epoch"] == ref.data.metrics["best_epoch"]

    # a finished run cannot be resumed; an unknown one is named
    res = runner.invoke(app, ["train", "--resume", run_id, "--tracking-uri", uri])
    assert res.exit_code == 2 and "already FINISHED" in res.output
    res = runner.invoke(app, ["train", "--resume", "f" * 32, "--tracking-uri", uri])
    assert res.exit_code == 2 and "no such MLflow run" in res.output


class _Payload:
    """Unpickling this runs code (``__reduce__``): what a weights-only load must refuse."""

    def __reduce__(self):
        return (Path.touch, (Path(PAYLOAD_MARK),))


PAYLOAD_MARK = "/tmp/recmind-pickle-payload-ran"


def test_pickle_payload_checkpoint_is_refused(tmp_path):
    Path(PAYLOAD_MARK).unlink(missing_ok=True)
    evil = tmp_path / "model.pt"
    torch.save({"weight": torch.zeros(2), "extra": _Payload()}, evil)
    with pytest.raises(InputError) as exc:
        load_checkpoint(evil)
    assert exc.value.field == "checkpoint" and "refused" in str(exc.value)
    assert not Path(PAYLOAD_MARK).exists()  # the payload never ran
    # a plain pickle (not a torch zip) carrying the payload is refused too
    raw = tmp_path / "raw.pt"
    raw.write_bytes(pickle.dumps(_Payload()))
    with pytest.raises(InputError):
        load_checkpoint(raw)
    assert not Path(PAYLOAD_MARK).exists()


def test_checkpoints_written_by_the_project_load_weights_only(tmp_path):
    rng = np.random.default_rng(3)
    state = ResumeState(2, 1.5, {"w": torch.ones(3)}, {"state": {}, "param_groups": []},
                        {"best_score": np.float64(0.5), "best_valid": {"ndcg": np.float32(0.25)}},
                        rng.bit_generator.state, torch.get_rng_state(), [{"loss": np.float64(1)}])
    back = ResumeState.load(state.save(tmp_path / "s.pt"))
    assert back.epoch == 2 and back.tracker["best_score"] == 0.5
    again = np.random.default_rng()
    again.bit_generator.state = back.rng
    assert again.random() == rng.random()
    save_checkpoint({"x": np.arange(3)}, tmp_path / "a.pt")
    assert torch.equal(load_checkpoint(tmp_path / "a.pt")["x"], torch.arange(3))
    (tmp_path / "cut.pt").write_bytes((tmp_path / "a.pt").read_bytes()[:40])
    with pytest.raises(InputError, match="truncated"):
        load_checkpoint(tmp_path / "cut.pt")
    with pytest.raises(InputError, match="missing"):
        load_checkpoint(tmp_path / "none.pt")
