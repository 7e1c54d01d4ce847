"""The ``recmind-dist`` command line: data | train | evaluate | compare.

Every bad input ends in one line ``error: <file>: field '<field>': <what is wrong>`` and exit
status 2, never a library traceback.
"""

from __future__ import annotations

import functools
import logging
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from recmind_dist.errors import InputError

app = typer.Typer(
    help="Train LLM-enhanced graph recommenders (LightGCN, RecMind, GAT+LLM, LLMRec) and "
    "compare runs in MLflow. Each job is described by a YAML job spec (see configs/).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Fetch, import, generate and split datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")
console = Console(width=160) if not sys.stdout.isatty() else Console()
err_console = Console(stderr=True, width=160)

ConfigOpt = Annotated[Path, typer.Option("--config", "-c", help="YAML job spec (see configs/)")]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="override a spec key, e.g. --set seed=7 --set train.lr=0.005"),
]


def friendly(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn InputError / OutputRefused into one clear line and exit status 2; an interrupt
    (SIGINT/SIGTERM, its run marked KILLED) into one line and 130/143."""
    from recmind_dist.io import OutputRefused
    from recmind_dist.pipeline.lifecycle import Interrupted

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (InputError, OutputRefused) as exc:
            err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except (Interrupted, KeyboardInterrupt) as exc:
            name = getattr(exc, "signal_name", "SIGINT")
            run = getattr(exc, "run_id", None)
            tail = (f"; MLflow run {run} marked KILLED (continue it: recmind-dist train "
                    f"--resume {run})") if run else ""
            err_console.print(f"[bold red]interrupted:[/] {name}{tail}", highlight=False,
                              soft_wrap=True)
            raise typer.Exit(getattr(exc, "exit_status", 130)) from None

    return wrapper


@app.callback()
def _main(verbose: Annotated[bool, typer.Option(
        "--verbose", "-v", help="debug logging (also MLflow's, Ray's and the HTTP clients')",
)] = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not verbose:
        for noisy in ("alembic", "mlflow", "urllib3", "filelock", "httpx"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    quiet_output()


def on_terminal(progress: bool) -> bool:
    """Progress bars only for a person watching a terminal (never in piped / job logs)."""
    return progress and sys.stderr.isatty()


def quiet_output() -> None:
    """No download bars from MLflow; no colour codes from Ray when the output is not a
    terminal (job logs, files)."""
    import os

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    if not (sys.stdout.isatty() and sys.stderr.isatty()):
        os.environ.setdefault("RAY_COLOR_PREFIX", "0")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # transformers' bars too


def print_metrics(title: str, metrics: dict[str, float], ks: list[int]) -> None:
    table = Table(title=title)
    table.add_column("group")
    names = [f"{m}@{k}" for m in ("recall", "ndcg") for k in ks]
    for n in names:
        table.add_column(n, justify="right")
    groups = sorted({k.rsplit("/", 1)[0] for k in metrics if "/" in k and "_at_" in k})
    for g in ["test"] + [x for x in groups if x != "test" and x.startswith("test/")]:
        vals = [metrics.get(f"{g}/{m}_at_{k}") for m in ("recall", "ndcg") for k in ks]
        table.add_row(g, *["-" if v is None or math.isnan(v) else f"{v:.4f}" for v in vals])
    console.print(table)
    shown = [g.removeprefix("test/") for g in groups if g.startswith("test/")]
    legend = [BUCKET_LABELS[b] for b in BUCKET_LABELS if b in shown]
    if legend:
        console.print("buckets: " + "; ".join(legend), highlight=False)


def next_steps(run_id: str, experiment: str, uri: str) -> str:
    """The commands that work on a finished run from any folder (experiment and URI given)."""
    return (f"next:\n  recmind-dist compare --experiment {experiment} --tracking-uri {uri}\n"
            f"  recmind-dist evaluate --run {run_id[:8]} --tracking-uri {uri}\n"
            f"  mlflow ui --backend-store-uri {uri} --host 127.0.0.1   # plots under Artifacts")


def why_user_left_out(ds: Any, split: Any, canon: Any) -> str:
    """Why a user has no row in a split: unknown id, too few ratings >= threshold, k-core."""
    if not len(canon):
        return "no such raw user id in the dataset"
    rows = ds.interactions[ds.interactions["user"] == int(canon[0])]
    if split.threshold is not None and "rating" in rows.columns:
        kept = int((rows["rating"] >= split.threshold).sum())
        if kept == 0:
            return (f"none of the user's {len(rows)} ratings is >= split.threshold "
                    f"{split.threshold:g} (max {rows['rating'].max():g})")
        return (f"{kept} of the user's {len(rows)} ratings are >= split.threshold "
                f"{split.threshold:g}; the k-core filter (split.kcore={split.kcore}) or the "
                "protocol left none in training")
    return f"the k-core filter (split.kcore={split.kcore}) removed the user's {len(rows)} rows"


BUCKET_LABELS = {
    "cold": "cold: items with <= eval.cold_degree training interactions",
    "tail": "tail: neither cold nor head",
    "head": "head: top eval.head_fraction by training degree",
    "unseen": "unseen: only the items the cold_item split kept out of training",
    **{f"within_{b}": f"within_{b}: {b} items ranked among themselves only (eval.rank_within)"
       for b in ("cold", "tail", "head", "unseen")},
}


# ----------------------------------------------------------------------------- data


@data_app.command("fetch")
@friendly
def data_fetch(
    name: Annotated[str, typer.Argument(help="dataset name, e.g. ml-100k")],
    cache_dir: Annotated[Path, typer.Option(help="cache directory")] = Path("data"),
    offline: Annotated[bool, typer.Option(help="skip the official archive")] = False,
) -> None:
    """Fetch a known dataset into the cache (official archive, then the offline fallback)."""
    from recmind_dist.data.fetch import fetch_dataset
    from recmind_dist.data.schema import load_dataset

    path = fetch_dataset(name, cache_dir, offline=offline)
    ds = load_dataset(path)
    console.print(f"{name}: {ds.n_users} users, {ds.n_items} items, "
                  f"{len(ds.interactions)} interactions -> {path}")


@data_app.command("import")
@friendly
def data_import(
    src: Annotated[Path, typer.Argument(help="source file or directory")],
    out: Annotated[Path, typer.Option(help="canonical dataset directory to write")],
    fmt: Annotated[str, typer.Option("--format", help="recbole | movielens | table")] = "table",
    name: Annotated[str | None, typer.Option(help="RecBole dataset name (file stem)")] = None,
    user: Annotated[str, typer.Option(help="table: user column")] = "user_id",
    item: Annotated[str, typer.Option(help="table: item column")] = "item_id",
    rating: Annotated[str | None, typer.Option(help="table: rating column")] = None,
    timestamp: Annotated[str | None, typer.Option(help="table: timestamp column")] = None,
    items: Annotated[Path | None, typer.Option(help="table: item attribute file")] = None,
    users: Annotated[Path | None, typer.Option(help="table: user attribute file")] = None,
) -> None:
    """Import RecBole atomic files, MovieLens raw files, or a CSV/Parquet table."""
    from recmind_dist.data import importers

    if fmt == "recbole":
        path = importers.import_recbole_atomic(src, name or src.name, out)
    elif fmt == "movielens":
        path = importers.import_movielens_raw(src, out)
    elif fmt == "table":
        mapping = {"user": user, "item": item, "item_id_col": "item_id", "user_id_col": "user_id"}
        if rating:
            mapping["rating"] = rating
        if timestamp:
            mapping["timestamp"] = timestamp
        path = importers.import_table(src, mapping, out, items, users)
    else:
        raise InputError("--format", "format", f"unknown format {fmt!r}: recbole|movielens|table")
    console.print(f"wrote {path}")


@data_app.command("synthetic")
@friendly
def data_synthetic(
    out: Annotated[Path, typer.Option(help="canonical dataset directory to write")],
    users: Annotated[int, typer.Option(help="number of users")] = 2000,
    items: Annotated[int, typer.Option(help="number of items")] = 3000,
    interactions: Annotated[int, typer.Option(help="number of interactions")] = 60000,
    topics: Annotated[int, typer.Option(help="latent topics")] = 16,
    seed: Annotated[int, typer.Option(help="random seed")] = 0,
) -> None:
    """Generate a synthetic dataset whose text carries the latent topics."""
    from recmind_dist.data.synthetic import generate_synthetic

    path = generate_synthetic(out, users, items, interactions, topics, seed)
    console.print(f"wrote {path}")


@data_app.command("split")
@friendly
def data_split(config: ConfigOpt, set_: SetOpt = None) -> None:
    """Build (and cache as Parquet) the job spec's deterministic split; print its summary."""
    from recmind_dist.pipeline import prepare
    from recmind_dist.specs import load_spec

    spec = load_spec(config, set_)
    dataset, data = prepare(spec)
    console.print({"split": data.key, **data.summary(),
                   "files": str(Path(dataset.path) / "splits" / data.key)})


# ----------------------------------------------------------------------------- train / eval


@app.command()
@friendly
def train(
    config: Annotated[Path | None, typer.Option(
        "--config", "-c", help="YAML job spec (see configs/)")] = None,
    set_: SetOpt = None,
    progress: Annotated[bool, typer.Option(
        help="show progress bars (only ever on a terminal)")] = True,
    resume: Annotated[str | None, typer.Option(
        "--resume", help="continue this killed/failed run (single-process or Ray Train) "
        "from its last epoch checkpoint, into the same MLflow run (instead of --config)")] = None,
    resume_uri: Annotated[str | None, typer.Option(
        "--tracking-uri", help="with --resume: MLflow tracking URI")] = None,
) -> None:
    """Train the spec's model, evaluate the best-validation checkpoint, log to MLflow.

    `--set train.workers=N` trains on N Ray Train workers (replicated, or
    `--set train.mode=partitioned`); an llmrec spec makes its augmentation artefact first."""
    from recmind_dist.pipeline import run_training
    from recmind_dist.specs import TrackingSpec, load_spec
    from recmind_dist.tracking import tracking_uri

    if (config is None) == (resume is None):
        raise InputError("train", "--config", "give exactly one of --config SPEC or --resume RUN")
    if resume is not None:
        from recmind_dist.pipeline.resume import resume_training

        outcome = resume_training(resume, resume_uri or tracking_uri(TrackingSpec()),
                                   on_terminal(progress))
        spec = outcome.spec
    else:
        spec = load_spec(config, set_)
        outcome = run_training(spec, progress=on_terminal(progress))
    r = outcome.result
    metrics = {f"test/{k}": v for k, v in r.test.items()}
    print_metrics(f"{spec.name} (best epoch {r.best_epoch}, {r.train_seconds:.1f}s training)",
                  metrics, spec.eval.ks)
    console.print(f"stopped: {r.stop_reason}")
    console.print(f"MLflow run id: [bold]{outcome.run_id}[/]  experiment: {spec.tracking.experiment}"
                  f"  tracking URI: {tracking_uri(spec.tracking)}")
    console.print(next_steps(outcome.run_id, spec.tracking.experiment,
                             tracking_uri(spec.tracking)), highlight=False)
    print(f"RUN_ID={outcome.run_id}")


@app.command()
@friendly
def embed(
    config: ConfigOpt,
    set_: SetOpt = None,
    backend: Annotated[str, typer.Option(
        help="auto (in-process below embed.local_below_texts texts, else Ray), ray (Ray Data "
        "actor pool) or local (in-process)")] = "auto",
    ray_address: Annotated[str | None, typer.Option(help="Ray cluster (default: local)")] = None,
    progress: Annotated[bool, typer.Option(
        help="show progress bars (only ever on a terminal)")] = True,
) -> None:
    """Embed item texts and training-only user profiles with the frozen LM (spec `embed`).

    Vectors land in the cache that training reads; finished shards are skipped on a rerun.
    `--set embed.tensor_parallel=N` shards the model over N DeepSpeed ranks per Ray replica.
    """
    from recmind_dist.pipeline import run_embedding
    from recmind_dist.specs import load_spec

    if backend not in ("auto", "ray", "local"):
        raise InputError("--backend", "backend", f"expected auto, ray or local, got {backend!r}")
    spec = load_spec(config, set_)
    run_id, stats = run_embedding(spec, backend, on_terminal(progress), ray_address)
    for k, v in sorted(stats.items()):
        console.print(f"{k}: {v:.4g}" if isinstance(v, float) else f"{k}: {v}")
    console.print(f"MLflow run id: [bold]{run_id}[/]")
    print(f"RUN_ID={run_id}")


@app.command()
@friendly
def evaluate(
    run: Annotated[str | None, typer.Option(
        "--run", help="MLflow run id (or >= 8 leading characters) of a finished training run"
    )] = None,
    config: Annotated[Path | None, typer.Option(
        "--config", "-c", help="instead of --run: the newest finished run trained with this "
        "job spec (after --set) in its experiment")] = None,
    set_: SetOpt = None,
    export_topk: Annotated[
        Path | None, typer.Option(help="write every test user's top-K to this Parquet: user, "
                                  "rank, item (raw ids as in your data), score, title")
    ] = None,
    k: Annotated[int | None, typer.Option(help="K of the export (default: spec eval.export_k)")] = None,
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow tracking URI")] = None,
) -> None:
    """Re-evaluate a run's best checkpoint on the test split (logged to the run as
    eval/test/...); optionally export every test user's top-K."""
    from recmind_dist.pipeline.evaluation import evaluate_run, newest_run_of
    from recmind_dist.specs import TrackingSpec, load_spec
    from recmind_dist.tracking import existing_store, training_run
    from recmind_dist.tracking import tracking_uri as resolve_uri

    if (run is None) == (config is None):
        raise InputError("evaluate", "--run", "give exactly one of --run RUN_ID or --config SPEC")
    if config is not None:
        spec = load_spec(config, set_)
        uri = existing_store(tracking_uri or resolve_uri(spec.tracking))
        run = newest_run_of(spec, uri)
    else:
        uri = existing_store(tracking_uri or resolve_uri(TrackingSpec()))
        run = training_run(run, uri)
    ev = evaluate_run(run, uri, export_topk, k, progress=on_terminal(True))
    print_metrics(f"run {run}", {f"test/{k_}": v for k_, v in ev.test.items()}, ev.spec.eval.ks)
    if ev.topk_rows is not None:
        console.print(f"wrote {ev.topk_rows} rows to {export_topk}")
    print(f"RUN_ID={run}")


@app.command()
@friendly
def pipeline(
    config: ConfigOpt,
    set_: SetOpt = None,
    skip_embed: Annotated[bool, typer.Option(help="do not run the embedding stage")] = False,
    progress: Annotated[bool, typer.Option(
        help="show progress bars (only ever on a terminal)")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="end with one JSON line: run id, "
                                          "experiment, tracking URI, test metrics, stage times")
                       ] = False,
) -> None:
    """The whole job: embed node texts (models that read them) -> train -> evaluate.

    The embedding stage fills the cache training reads (the same as `recmind-dist embed`),
    so training re-encodes nothing; each stage's wall time is printed."""
    import time

    from recmind_dist.models.registry import needed_inputs
    from recmind_dist.pipeline import run_embedding, run_training
    from recmind_dist.pipeline.evaluation import evaluate_run
    from recmind_dist.specs import load_spec
    from recmind_dist.tracking import tracking_uri

    spec = load_spec(config, set_)
    stages: dict[str, float] = {}
    t0 = time.perf_counter()
    if not skip_embed and "text_features" in needed_inputs(spec.model) and \
            "profiles" not in needed_inputs(spec.model):
        run_embedding(spec, spec.model.features_backend, on_terminal(progress))
        stages["embed_s"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    outcome = run_training(spec, progress=on_terminal(progress))
    stages["train_s"] = time.perf_counter() - t1
    t2 = time.perf_counter()
    ev = evaluate_run(outcome.run_id, tracking_uri(spec.tracking), progress=on_terminal(progress))
    stages["evaluate_s"] = time.perf_counter() - t2
    print_metrics(f"{spec.name} (best epoch {outcome.result.best_epoch})",
                  {f"test/{k}": v for k, v in ev.test.items()}, spec.eval.ks)
    console.print("  ".join(f"{k} {v:.1f}" for k, v in stages.items()))
    console.print(f"MLflow run id: [bold]{outcome.run_id}[/]  experiment: "
                  f"{spec.tracking.experiment}  tracking URI: {tracking_uri(spec.tracking)}")
    console.print(next_steps(outcome.run_id, spec.tracking.experiment,
                             tracking_uri(spec.tracking)), highlight=False)
    print(f"RUN_ID={outcome.run_id}")
    if as_json:
        import json

        print(json.dumps({"run_id": outcome.run_id, "experiment": spec.tracking.experiment,
                          "tracking_uri": tracking_uri(spec.tracking),
                          "workers": spec.train.workers, "best_epoch": outcome.result.best_epoch,
                          "test": ev.test, "stages_s": stages}, sort_keys=True))


@app.command()
@friendly
def compare(
    experiment: Annotated[str, typer.Option(help="MLflow experiment")] = "recmind-dist",
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow tracking URI")] = None,
    csv: Annotated[Path | None, typer.Option(help="also write the table as CSV")] = None,
    plot: Annotated[Path | None, typer.Option(
        help="also draw the runs' test metrics side by side into this PNG")] = None,
    columns: Annotated[list[str] | None, typer.Option(
        "--columns", help="show only spec keys containing this text (repeatable), e.g. "
        "--columns variant --columns seed")] = None,
) -> None:
    """Print an experiment's runs: the spec keys that differ and the main metrics."""
    from recmind_dist.compare import experiment_names, runs_table
    from recmind_dist.pipeline.lifecycle import reap_dead_runs
    from recmind_dist.specs import TrackingSpec
    from recmind_dist.tracking import existing_store
    from recmind_dist.tracking import tracking_uri as resolve_uri

    uri = existing_store(tracking_uri or resolve_uri(TrackingSpec()))
    reap_dead_runs(uri)  # runs left RUNNING by a dead process show as KILLED
    df = runs_table(experiment, uri)
    if df.empty:
        known = ", ".join(experiment_names(uri)) or "none"
        raise InputError("--experiment", "experiment", f"no finished runs in experiment "
                         f"{experiment!r} of {uri} (experiments there: {known})")
    if columns:  # keep the run id, the chosen keys and the metrics
        keep = [c for c in df.columns if c in ("run_id", "status") or c.startswith("test/")
                or any(sel in c for sel in columns)]
        df = df[keep]
    shown = df.rename(columns=lambda c: str(c).removeprefix("test/")).copy()
    shown["run_id"] = shown["run_id"].astype(str).str[:12]
    if len(shown.columns) > 12:  # a rich table would fold every cell: print plain wide rows
        print(f"experiment {experiment} ({len(shown)} runs; --columns KEY narrows the keys)")
        print(shown.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    else:
        table = Table(title=f"experiment {experiment}")
        for c in shown.columns:
            table.add_column(str(c), overflow="fold")
        for _, row in shown.iterrows():
            table.add_row(*[f"{v:.4f}" if isinstance(v, float) else str(v) for v in row])
        console.print(table)
    if csv is not None:
        df.to_csv(csv, index=False)
    if plot is not None:
        from recmind_dist.plots import compare_chart

        compare_chart(df, f"experiment {experiment} ({len(df)} runs)", plot)
        console.print(f"wrote {plot}")


@app.command()
@friendly
def recommend(
    run: Annotated[str, typer.Option(
        "--run", help="MLflow run id (or >= 8 leading characters) of a finished training run")],
    user: Annotated[str, typer.Option("--user", help="raw user id (as in the source data)")],
    k: Annotated[int, typer.Option(help="list length")] = 10,
    rerank: Annotated[bool, typer.Option("--rerank/--no-rerank",
                                         help="re-order with the LM and justify each item")] = True,
    backend: Annotated[str, typer.Option(help="generative backend: offline | hf | openai")] = (
        "offline"),
    lm_model: Annotated[str | None, typer.Option(help="hf path/hub id or openai model")] = None,
    base_url: Annotated[str | None, typer.Option(help="openai-compatible base URL")] = None,
    cache_dir: Annotated[Path, typer.Option(help="generation cache")] = Path("data/generations"),
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow tracking URI")] = None,
) -> None:
    """Top-K for one user from a run's best checkpoint, re-ranked with justifications."""
    import numpy as np

    from recmind_dist.eval.evaluator import SplitEvaluator
    from recmind_dist.generation import Generator
    from recmind_dist.pipeline import load_run
    from recmind_dist.rerank import Reranker
    from recmind_dist.rerank.core import topk_for_users
    from recmind_dist.specs import GenerateSpec, TrackingSpec
    from recmind_dist.tracking import existing_store, training_run
    from recmind_dist.tracking import tracking_uri as resolve_uri

    if backend not in ("offline", "hf", "openai"):
        raise InputError("--backend", "backend", f"expected offline|hf|openai, got {backend!r}")
    if k < 1:
        raise InputError("--k", "k", f"K must be >= 1, got {k}")
    uri = existing_store(tracking_uri or resolve_uri(TrackingSpec()))
    run = training_run(run, uri)
    spec, ds, data, model = load_run(run, uri)
    canon = np.flatnonzero(np.asarray(ds.user_raw_ids).astype(str) == str(user))
    local = np.flatnonzero(data.user_ids == canon[0]) if len(canon) else []
    if not len(local):
        raise InputError("--user", "user", f"user {user!r} is not in run {run[:8]}'s split: "
                         + why_user_left_out(ds, spec.split, canon))
    u = int(local[0])
    ev = SplitEvaluator(data, spec.eval)
    unseen = data.n_items - ev.test_exclude[u].nnz  # never pad with the user's own items
    if k > unseen:
        raise InputError("--k", "k", f"K={k} exceeds the {unseen} items user {user} has not "
                         f"interacted with (catalogue: {data.n_items})")
    items = topk_for_users(model, data, ev.test_exclude, np.array([u]), k)
    gen = Generator(GenerateSpec(backend=backend, model=lm_model, base_url=base_url,
                                 cache_dir=cache_dir))
    rr = Reranker(gen, ds, data, spec.text)
    if rerank:
        (res,) = rr.rerank([u], items)
        order, why, who = res.items, res.justifications, f"{res.backend}:{res.model}"
    else:
        order, why, who = [int(i) for i in items[0]], [""] * items.shape[1], "model order"
    held_out = set(data.test[data.test[:, 0] == u, 1].tolist())
    table = Table(title=f"user {user} · run {run[:12]} ({spec.model.name}) · {who}")
    for c in ("#", "item", "title", "held-out", "why"):
        table.add_column(c, overflow="fold")
    for r, i in enumerate(order, 1):
        table.add_row(str(r), str(ds.item_raw_ids[data.item_ids[i]]), rr.info(i).title,
                      "yes" if i in held_out else "", why[r - 1])
    console.print(f"profile: {rr.profile.get(int(data.user_ids[u]), '')}", highlight=False)
    console.print(table)


if __name__ == "__main__":  # pragma: no cover
    app()
