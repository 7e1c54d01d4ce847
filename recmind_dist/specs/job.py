"""The job spec: one YAML file per dataset/experiment, validated with pydantic.

Unknown keys and wrong types are errors naming the key (``model.dim``). ``--set key=value``
overrides are applied to the raw YAML before validation, so they are checked the same way.
"""

from __future__ import annotations

import difflib
import typing
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from recmind_dist.errors import InputError
from recmind_dist.hashing import stable_hash
from recmind_dist.specs.base import Spec
from recmind_dist.specs.data import DataSpec, SplitSpec
from recmind_dist.specs.embed import EmbedSpec
from recmind_dist.specs.models import LEGACY_PRESETS, LightGCNSpec, ModelSpec
from recmind_dist.specs.text import TextSpec
from recmind_dist.specs.yaml_source import load_yaml


class TrainSpec(Spec):
    epochs: int = Field(300, ge=0)
    batch_size: int = Field(2048, gt=0)
    lr: float = Field(1e-3, gt=0, description="Adam step size at lr_reference_batch")
    lr_scaling: Literal["none", "linear", "sqrt"] = Field(
        "none", description="grow lr with the batch: lr·(batch_size/lr_reference_batch)^p, "
        "p = 0 (none), 1 (linear) or 1/2 (sqrt); recmind_dist.train.lr_rule")
    lr_reference_batch: int = Field(
        2048, gt=0, description="the batch size lr was chosen at (for lr_scaling)")
    eval_every: int = Field(1, gt=0, description="validate every N epochs")
    patience: int = Field(
        30, ge=1, description="validations without improvement of the stop metric before stopping"
    )
    min_epochs: int = Field(
        0, ge=0, description="never stop before this epoch (guards against early plateaus)"
    )
    stop_metric: str = "ndcg_at_20"
    max_seconds: float | None = Field(None, gt=0, description="wall-time budget for training")
    device: str = Field("cpu", pattern=r"^(cpu|cuda(:\d+)?|mps)$",
                        description="torch device: cpu, cuda, cuda:N or mps")
    num_threads: int | None = Field(None, gt=0, description="torch threads (None: torch default)")
    workers: int = Field(1, ge=1, description="Ray Train workers; 1 = single process")
    mode: Literal["replicated", "partitioned"] = Field(
        "replicated", description="replicated: Â and embeddings on every worker, edges sharded;"
        " partitioned: each worker owns its rows of Â and of the embeddings (halo exchange)"
    )
    partitioner: Literal["metis", "metis_nnz", "random"] = Field(
        "metis", description="partitioned mode: METIS balancing nodes (metis) or non-zeros of Â "
        "(metis_nnz: equal work per worker on power-law graphs), or random")
    max_failures: int = Field(1, ge=0, description="worker-group restarts from the last checkpoint")
    checkpoint_every: int = Field(
        1, ge=0, description="single process: save a resume checkpoint to the MLflow run every "
        "N epochs (0: only when the loop stops); `train --resume RUN` continues from it")


class EvalSpec(Spec):
    ks: list[int] = Field(default_factory=lambda: [10, 20, 40], min_length=1,
                          description="cut-offs K (each >= 1, distinct; at most the catalogue)")
    batch_users: int = Field(1024, gt=0, description="users ranked together (user chunk)")
    chunk_items: int = Field(
        32768, gt=0, description="items scored together per user chunk, merged into a running "
        "top-K: scores take batch_users x chunk_items floats (128 MB at the defaults)")
    over_workers: bool = Field(
        True, description="multi-worker training: every worker ranks its share of the users "
        "(metric sums all-reduced); false: rank 0 ranks them all")
    valid_users: int | None = Field(
        None, gt=0, description="validate on a fixed random sample of this many users with "
        "validation items (the same users in every run on the same split); None = every user. "
        "For large graphs, where ranking every user after each epoch costs more than the "
        "epoch (docs/benchmarks.md § Scaling, RecMind). The test split ranks every user.")
    rank_within: list[Literal["cold", "tail", "head", "unseen"]] = Field(
        default_factory=lambda: ["cold"], description="test: also rank each listed bucket's "
        "items among themselves only, logged as within_{bucket}/{metric}_at_{k} (the "
        "cold-start protocol: how well the model orders the cold items, whatever the head "
        "items score; in a large catalogue cold items rarely reach the full top-K). A bucket "
        "with fewer items than the largest K, or none, is skipped; [] = off")
    cold_degree: int = Field(3, ge=0, description="items with ≤ this many training edges are cold")
    head_fraction: float = Field(0.2, gt=0, lt=1)
    export_k: int = Field(40, gt=0, description="top-K written by evaluate --export-topk")

    @field_validator("ks")
    @classmethod
    def _ks_positive_distinct(cls, ks: list[int]) -> list[int]:
        if any(k < 1 for k in ks):
            raise ValueError(f"every K must be >= 1, got {ks}")
        if len(set(ks)) != len(ks):
            raise ValueError(f"K values must be distinct, got {ks}")
        return ks


#: URI schemes MLflow can track to (``postgresql+psycopg2`` counts as ``postgresql``).
TRACKING_SCHEMES = frozenset({"sqlite", "file", "http", "https", "databricks", "postgresql",
                              "mysql", "mssql"})


class TrackingSpec(Spec):
    uri: str | None = Field(None, description="MLflow tracking URI; default sqlite:///./mlflow.db")
    experiment: str = Field("recmind-dist", min_length=1, pattern=r"\S")
    run_name: str | None = None
    log_checkpoint: bool = True

    @field_validator("uri")
    @classmethod
    def _known_scheme(cls, uri: str | None) -> str | None:
        if uri is None:
            return uri
        if not uri.strip():
            raise ValueError("empty tracking URI (leave it out for the default)")
        scheme = uri.split("://", 1)[0] if "://" in uri else "file" if uri.startswith("file:") \
            else None
        if scheme is not None and scheme.split("+")[0] not in TRACKING_SCHEMES:
            raise ValueError(f"unknown tracking URI scheme {scheme!r}; use one of "
                             f"{sorted(TRACKING_SCHEMES)} or a local path")
        if scheme == "sqlite" and not uri.startswith("sqlite:///"):
            raise ValueError("a sqlite URI is sqlite:///relative.db or sqlite:////abs/path.db")
        return uri


class JobSpec(Spec):
    name: str = "job"
    seed: int = 2020
    data: DataSpec = Field(default_factory=DataSpec)
    split: SplitSpec = Field(default_factory=SplitSpec)
    model: ModelSpec = Field(default_factory=LightGCNSpec)
    train: TrainSpec = Field(default_factory=TrainSpec)
    eval: EvalSpec = Field(default_factory=EvalSpec)
    tracking: TrackingSpec = Field(default_factory=TrackingSpec)
    text: TextSpec = Field(default_factory=TextSpec)
    embed: EmbedSpec = Field(default_factory=EmbedSpec)

    @model_validator(mode="after")
    def _stop_metric_is_computed(self) -> JobSpec:
        valid = {f"{m}_at_{k}" for m in ("recall", "ndcg", "precision", "hit", "mrr")
                 for k in self.eval.ks}
        if self.train.stop_metric not in valid:
            raise ValueError(
                f"train.stop_metric {self.train.stop_metric!r} is not computed with eval.ks="
                f"{self.eval.ks}; use one of {sorted(valid)}"
            )
        return self

    def fingerprint(self) -> str:
        return stable_hash(self.model_dump(mode="json"))


#: Sections every job spec file must have.
REQUIRED_SECTIONS = ("data", "model")


def _set_path(tree: dict[str, Any], dotted: str, value: Any, source: str) -> None:
    keys = dotted.split(".")
    node = tree
    for k in keys[:-1]:
        nxt = node.setdefault(k, {})
        if not isinstance(nxt, dict):
            raise InputError(source, dotted, f"'{k}' is not a section")
        node = nxt
    node[keys[-1]] = value


def apply_overrides(raw: dict[str, Any], overrides: list[str] | None) -> dict[str, Any]:
    """Apply ``key.path=value`` overrides (values parsed as YAML scalars/lists)."""
    for item in overrides or []:
        if "=" not in item:
            raise InputError("--set", item, "expected key.path=value")
        key, value = item.split("=", 1)
        _set_path(raw, key.strip(), load_yaml(value, "--set", key.strip()), "--set")
    return raw


def _fields_at(path: list[str]) -> set[str]:
    """Field names a spec section at ``path`` (a validation error's location) can hold; a
    union's members all count, a location part that is no field (a union tag) is skipped."""
    from pydantic import BaseModel

    def models_in(annotation: Any) -> list[type[BaseModel]]:
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            return [annotation]
        return [m for arg in typing.get_args(annotation) for m in models_in(arg)]

    models: list[type[BaseModel]] = [JobSpec]
    for part in path:
        inner = [m for cls in models if part in cls.model_fields
                 for m in models_in(cls.model_fields[part].annotation)]
        if inner:
            models = inner
    return {name for cls in models for name in cls.model_fields}


def _did_you_mean(loc: list[str]) -> str:
    """``; did you mean 'epochs'?`` for an unknown key close to a known one, else ``""``."""
    close = difflib.get_close_matches(loc[-1], sorted(_fields_at(loc[:-1])), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


def _first_error(exc: ValidationError) -> tuple[str, str]:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"] if not str(p).startswith("function-"))
    msg = err["msg"]
    if err["type"] == "extra_forbidden":
        msg = "unknown key" + _did_you_mean([str(p) for p in err["loc"]])
    if len(exc.errors()) > 1:
        msg += f" (and {len(exc.errors()) - 1} more problem(s))"
    return loc, msg


def parse_spec(raw: Any, source: str, logged: bool = False) -> JobSpec:
    """Validate a raw job spec. ``logged``: the spec of a run already logged, whose variant
    presets may predate the conflict check (``specs.models.LEGACY_PRESETS``)."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise InputError(source, None, "a job spec must be a YAML mapping")
    try:
        return JobSpec.model_validate(raw, context={LEGACY_PRESETS: logged})
    except ValidationError as exc:
        loc, msg = _first_error(exc)
        raise InputError(source, loc, msg) from None


def load_spec(path: str | Path, overrides: list[str] | None = None) -> JobSpec:
    """Read, override and validate a YAML job spec."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, None, "job spec file not found")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(path, None, f"cannot read the job spec ({exc})") from None
    raw = load_yaml(text, path)
    if raw is None:
        raise InputError(path, None, "the job spec is empty (it needs at least data: and "
                         "model: sections)")
    if not isinstance(raw, dict):
        raise InputError(path, None, "a job spec must be a YAML mapping")
    for section in REQUIRED_SECTIONS:  # a spec file never silently runs a default job
        if section not in raw:
            raise InputError(path, section, "missing section (a job spec names its data and "
                             "its model)")
    raw = apply_overrides(raw, overrides)
    try:
        return parse_spec(raw, str(path))
    except InputError as exc:  # a key given by --set is blamed on --set, not on the file
        keys = [o.split("=", 1)[0].strip() for o in overrides or [] if "=" in o]
        if exc.field and any(exc.field == k or exc.field.startswith(k + ".") or
                             k.startswith(exc.field + ".") or _same_key(exc.field, k) for k in keys):
            raise InputError("--set", exc.field, exc.message) from None
        raise


def _same_key(location: str, key: str) -> bool:
    """A location with a union tag (``model.lightgcn.dim``) names the --set key ``model.dim``."""
    parts, wanted = location.split("."), key.split(".")
    return parts[0] == wanted[0] and parts[-1] == wanted[-1] and len(parts) == len(wanted) + 1
