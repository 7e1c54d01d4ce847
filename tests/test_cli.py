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
    assert list(top.columns) == ["user", "rank", "item", "score"]
    assert top.groupby("user")["rank"].max().eq(5).all()
    assert top["user"].str.startswith("u").all() and top["item"].str.startswith("i").all()
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
