"""The CLI end to end on a tiny dataset with a real (sqlite) MLflow store."""

from pathlib import Path

import pandas as pd
import yaml
from typer.testing import CliRunner

from recmind_dist.cli import app

runner = CliRunner()


def _spec(tmp_path: Path, dataset: Path, **train) -> Path:
    spec = {
        "name": "tiny", "seed": 1,
        "data": {"source": None, "path": str(dataset)},
        "split": {"threshold": None},
        "model": {"name": "lightgcn", "dim": 8, "layers": 2},
        "train": {"epochs": 3, "batch_size": 64, "lr": 0.01, "stop_metric": "ndcg_at_10", **train},
        "eval": {"ks": [5, 10], "export_k": 5},
        "tracking": {"uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "experiment": "tiny"},
    }
    p = tmp_path / "spec.yaml"
    p.write_text(yaml.safe_dump(spec))
    return p


def test_train_evaluate_export_compare(tiny_dataset, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = _spec(tmp_path, tiny_dataset.path)
    res = runner.invoke(app, ["train", "--config", str(spec), "--no-progress", "--set", "seed=3"])
    assert res.exit_code == 0, res.output
    run_id = res.output.split("RUN_ID=")[1].split()[0]
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"

    import mlflow

    mlflow.set_tracking_uri(uri)
    run = mlflow.get_run(run_id)
    assert run.data.params["seed"] == "3" and run.data.tags["seed"] == "3"
    assert run.data.tags["dataset_checksum"] == tiny_dataset.checksum
    for key in ("test/recall_at_10", "test/ndcg_at_5", "valid/ndcg_at_10", "test/head/recall_at_5"):
        assert key in run.data.metrics
    history = mlflow.MlflowClient().get_metric_history(run_id, "valid/ndcg_at_10")
    assert len(history) == 4  # 3 epochs + the best checkpoint's value as the final point
    assert history[-1].value == max(m.value for m in history[:3])

    out = tmp_path / "top.parquet"
    res = runner.invoke(app, ["evaluate", "--run", run_id, "--export-topk", str(out),
                              "--tracking-uri", uri])
    assert res.exit_code == 0, res.output
    top = pd.read_parquet(out)
    assert list(top.columns) == ["user", "rank", "item", "score", "item_index", "title", "text"]
    assert top.groupby("user")["rank"].max().eq(5).all()
    assert top["user"].str.startswith("u").all() and top["item"].str.startswith("i").all()
    # joins with the source ids and with items.parquet: raw item "i7" is items.parquet id 7
    assert (top["item"] == "i" + top["item_index"].astype(str)).all()
    assert (top["title"] == "Movie " + top["item_index"].astype(str)).all()
    assert top["text"].str.contains("Movie").all()
    # recompute recall@5 from the export and the plain split files: equals the logged value
    split_dir = next((Path(tiny_dataset.path) / "splits").iterdir())
    test = pd.read_parquet(split_dir / "test.parquet")
    raw_u, raw_i = tiny_dataset.user_raw_ids, tiny_dataset.item_raw_ids
    truth = test.assign(user=raw_u[test.user], item=raw_i[test.item])
    truth_sets = truth.groupby("user")["item"].apply(set)
    recalls = [len(set(g.item) & truth_sets[u]) / len(truth_sets[u])
               for u, g in top.groupby("user")]
    assert abs(sum(recalls) / len(recalls) - run.data.metrics["test/recall_at_5"]) < 1e-6

    res = runner.invoke(app, ["compare", "--experiment", "tiny", "--tracking-uri", uri])
    assert res.exit_code == 0, res.output
    assert run_id[:12] in res.output


def test_first_hour_has_no_dead_ends(tiny_dataset, tmp_path, monkeypatch):
    """The post-train hint works from another folder; 8-character run ids work; reading
    commands never create a store; artefacts live beside the database; plots are logged."""
    work, elsewhere = tmp_path / "work", tmp_path / "elsewhere"
    work.mkdir(), elsewhere.mkdir()
    monkeypatch.chdir(work)
    spec = _spec(work, tiny_dataset.path)
    res = runner.invoke(app, ["train", "--config", str(spec), "--no-progress"])
    assert res.exit_code == 0, res.output
    run_id = res.output.split("RUN_ID=")[1].split()[0]
    uri = f"sqlite:///{work / 'mlflow.db'}"
    hint = next(line.strip() for line in res.output.splitlines() if "recmind-dist compare" in line)
    assert hint == f"recmind-dist compare --experiment tiny --tracking-uri {uri}"

    monkeypatch.chdir(elsewhere)  # the printed command, run from another folder
    res = runner.invoke(app, hint.split()[1:] + ["--plot", str(elsewhere / "cmp.png")])
    assert res.exit_code == 0, res.output
    assert (elsewhere / "cmp.png").stat().st_size > 0
    shown_id = run_id[:12]
    assert shown_id in res.output
    res = runner.invoke(app, ["evaluate", "--run", run_id[:8], "--tracking-uri", uri])
    assert res.exit_code == 0, res.output
    assert f"RUN_ID={run_id}" in res.output
    res = runner.invoke(app, ["evaluate", "--run", run_id[:7], "--tracking-uri", uri])
    assert res.exit_code == 2 and "at least 8" in res.output, res.output

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # mlflow exports the last one
    for cmd in (["compare", "--experiment", "tiny"], ["evaluate", "--run", run_id]):
        res = runner.invoke(app, cmd)  # no mlflow.db here: refused, and none created
        assert res.exit_code == 2 and "no MLflow store" in res.output, res.output
    assert list(elsewhere.iterdir()) == [elsewhere / "cmp.png"]

    import mlflow

    client = mlflow.MlflowClient(tracking_uri=uri)
    run = client.get_run(run_id)
    assert run.info.artifact_uri.startswith((work / "mlartifacts" / "tiny").as_uri())
    logged = {f.path for f in client.list_artifacts(run_id, "plots")}
    assert {"plots/training_curves.png", "plots/test_buckets.png"} <= logged
    assert not (work / "mlruns").exists() and not (tmp_path / "mlruns").exists()

    # an embed run's id (any run without a trained model) is one clear error, no traceback
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("tiny")
    with mlflow.start_run(tags={"job": "embed"}) as embed_run:
        pass
    res = runner.invoke(app, ["compare", "--experiment", "tiny", "--tracking-uri", uri])
    assert res.exit_code == 0 and embed_run.info.run_id[:12] not in res.output, res.output
    for cmd in (["evaluate", "--run", embed_run.info.run_id],
                ["recommend", "--run", embed_run.info.run_id[:8], "--user", "u1"]):
        res = runner.invoke(app, cmd + ["--tracking-uri", uri])
        assert res.exit_code == 2 and "'embed' run, not a training run" in res.output, res.output
        assert "Traceback" not in res.output


def test_set_typo_gets_did_you_mean(tmp_path, tiny_dataset):
    spec = _spec(tmp_path, tiny_dataset.path)
    res = runner.invoke(app, ["train", "--config", str(spec), "--set", "train.epoch=3"])
    assert res.exit_code == 2
    assert "--set, field 'train.epoch': unknown key; did you mean 'epochs'?" in res.output


def test_bad_inputs_give_one_clear_line(tiny_dataset, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: {source: ml-100k}\nmodel: {name: lightgcn, dim: -1}\n")
    res = runner.invoke(app, ["train", "--config", str(bad)])
    assert res.exit_code == 2
    assert "bad.yaml" in res.output and "model.lightgcn.dim" in res.output
    assert "Traceback" not in res.output

    spec = _spec(tmp_path, tmp_path / "missing-dataset")
    res = runner.invoke(app, ["train", "--config", str(spec)])
    assert res.exit_code == 2 and "missing-dataset" in res.output, res.output

    res = runner.invoke(app, ["data", "fetch", "no-such-set", "--cache-dir", str(tmp_path)])
    assert res.exit_code == 2 and "no-such-set" in res.output

    res = runner.invoke(app, ["evaluate", "--run", "0123", "--tracking-uri",
                              f"sqlite:///{tmp_path / 'm.db'}"])
    assert res.exit_code == 2 and "run" in res.output


def test_embed_command_writes_the_cache_training_reads(tiny_dataset, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = _spec(tmp_path, tiny_dataset.path)
    args = ["embed", "--config", str(spec), "--backend", "local", "--no-progress",
            "--set", f"data.cache_dir={tmp_path / 'cache'}"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "embed/items/texts_per_s" in res.output
    files = sorted((tmp_path / "cache" / "features").rglob("items.parquet"))
    assert files, "item vectors not written to the features cache"
    mtime = files[0].stat().st_mtime_ns
    res = runner.invoke(app, args)  # cache hit: nothing re-encoded
    assert res.exit_code == 0, res.output
    assert "embed/items/texts_per_s" not in res.output
    assert files[0].stat().st_mtime_ns == mtime


def test_user_left_out_of_the_split_is_told_why(tiny_dataset):
    import numpy as np

    from recmind_dist.cli import why_user_left_out
    from recmind_dist.specs import SplitSpec

    u = int(np.flatnonzero(tiny_dataset.user_raw_ids == "u2")[0])
    top = tiny_dataset.interactions.loc[tiny_dataset.interactions.user == u, "rating"].max()
    msg = why_user_left_out(tiny_dataset, SplitSpec(threshold=top + 1), np.array([u]))
    assert msg == (f"none of the user's 12 ratings is >= split.threshold {top + 1:g} "
                   f"(max {top:g})")
    assert why_user_left_out(tiny_dataset, SplitSpec(), np.array([], dtype=int)) == (
        "no such raw user id in the dataset")


def test_validation_curves_leave_out_counts():
    from recmind_dist.plots import validation_columns

    cols = ["epoch", "train/bpr", "valid/n_users", "valid/hit_at_10", "valid/ndcg_at_10",
            "valid/recall_at_10"]
    assert validation_columns(cols) == ["valid/ndcg_at_10", "valid/recall_at_10"]
    assert validation_columns(["valid/n_users", "valid/mrr_at_5"]) == ["valid/mrr_at_5"]


def test_evaluate_config_finds_the_run_of_a_spec_without_uri(tiny_dataset, tmp_path, monkeypatch):
    """`evaluate --config` matches the spec as written (tracking.uri unset: ./mlflow.db)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    spec = _spec(tmp_path, tiny_dataset.path, epochs=1)
    raw = yaml.safe_load(spec.read_text())
    del raw["tracking"]["uri"]
    spec.write_text(yaml.safe_dump(raw))
    res = runner.invoke(app, ["train", "--config", str(spec), "--no-progress"])
    assert res.exit_code == 0, res.output
    run_id = res.output.split("RUN_ID=")[1].split()[0]
    res = runner.invoke(app, ["evaluate", "--config", str(spec)])
    assert res.exit_code == 0, res.output
    assert f"RUN_ID={run_id}" in res.output
