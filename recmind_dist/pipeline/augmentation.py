"""LLMRec's augmentation as the upstream stage of its training job.

    base model -> top-N candidates -> LM: implicit triples, item attributes, user profiles
    -> side-text vectors -> versioned artefact -> LLMRec's inputs

* :func:`ensure_augmentation` returns the job's augmentation artefact, making it once: the
  base model (an MLflow run's best checkpoint, or LightGCN trained in-process with the job's
  dim/layers/reg, split, seed and training settings), its candidates, implicit-feedback
  triples, enriched item attributes and user profiles, their encoder vectors; saved as
  Parquet under ``model.augment_cache`` and reused by every later run with the same inputs
  (no base model, generator or encoder is loaded on a hit).
* :func:`augmentation_inputs` is what training needs: the artefact (made if missing) as
  :class:`recmind_dist.models.inputs.LLMRecInputs` on the split's local ids.
* :func:`log_augmentation` logs the artefact to the training run;
  :func:`run_llmrec` makes the artefact with a pre-built generator/encoder, then trains.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from recmind_dist.augment.artifact import (
    PROMPT_VERSION,
    AugmentArtifact,
    artifact_key,
    augment_root,
    augment_settings,
    find_artifact,
    load_artifact,
    log_to_mlflow,
    pointer_key,
    save_artifact,
    write_pointer,
)
from recmind_dist.augment.candidates import Candidates, topn_candidates
from recmind_dist.data.schema import Dataset
from recmind_dist.data.split import SplitData
from recmind_dist.errors import InputError
from recmind_dist.models.base import Recommender
from recmind_dist.models.inputs import LLMRecInputs
from recmind_dist.pipeline.dataset import prepare
from recmind_dist.pipeline.training import RunOutcome, load_run, run_training
from recmind_dist.specs import GenerateSpec, JobSpec, LightGCNSpec, LLMRecSpec

log = logging.getLogger(__name__)

__all__ = [
    "augmentation_inputs",
    "base_candidates",
    "base_job_spec",
    "ensure_augmentation",
    "generate_spec",
    "log_augmentation",
    "run_llmrec",
]


def _llmrec_spec(spec: JobSpec) -> LLMRecSpec:
    if not isinstance(spec.model, LLMRecSpec):
        raise InputError("job spec", "model.name", "an LLMRec augmentation needs model.name: "
                         "llmrec")
    return spec.model


def generate_spec(model_spec: LLMRecSpec) -> GenerateSpec:
    """The LM spec with its prompt cache defaulting to ``<augment_cache>/generations``."""
    lm = model_spec.lm
    if lm.cache_dir is None:
        lm = lm.model_copy(update={"cache_dir": augment_root(model_spec) / "generations"})
    return lm


# ------------------------------------------------------------------------------ base model


def base_job_spec(spec: JobSpec) -> JobSpec:
    """The in-process base: LightGCN with the job's dim/layers/reg, split, seed and training."""
    m = spec.model
    return JobSpec.model_validate({
        **spec.model_dump(mode="json", exclude={"model"}),
        "model": LightGCNSpec(dim=m.dim, layers=m.layers, reg=m.reg).model_dump(mode="json"),
    })


def _base_from_run(run_id: str, split_key: str) -> tuple[Recommender, SplitData, dict]:
    """The best checkpoint of a finished MLflow run (LightGCN / MF / ...) on the job's split
    (a base trained on another split is refused: its local ids would not line up)."""
    spec, _, data, model = load_run(run_id)
    if data.key != split_key:
        raise InputError("job spec", "model.base_run",
                         f"run {run_id} was trained on split {data.key}, not {split_key} "
                         "(same dataset, split spec and seed needed)")
    return model, data, {"kind": "mlflow_run", "run_id": run_id, "model": spec.model.name,
                         "split_key": data.key}


def _base_in_process(base_spec: JobSpec, progress: bool
                     ) -> tuple[Recommender, SplitData, dict]:
    """Train ``base_spec`` (LightGCN/MF) in this process, without MLflow."""
    from recmind_dist.eval.evaluator import SplitEvaluator
    from recmind_dist.models.registry import build_model
    from recmind_dist.train.loop import seed_everything, train_model

    seed_everything(base_spec.seed)
    _, data = prepare(base_spec)
    model = build_model(base_spec.model, data, None, base_spec.train.device)
    res = train_model(model, data, base_spec.train, SplitEvaluator(data, base_spec.eval),
                      base_spec.seed, progress=progress)
    log.info("base %s trained in-process: best epoch %d", base_spec.model.name, res.best_epoch)
    return model, data, {"kind": "in_process", "model": base_spec.model.name,
                         "spec_fingerprint": base_spec.fingerprint(),
                         "best_epoch": res.best_epoch, "split_key": data.key}


def base_candidates(spec: JobSpec, data: SplitData, progress: bool = False) -> Candidates:
    """The job's candidates: top-``model.candidates`` of its base model (``model.base_run``,
    else LightGCN trained in-process), training positives excluded."""
    m = _llmrec_spec(spec)
    if m.base_run:
        model, base_data, source = _base_from_run(m.base_run, data.key)
    else:
        model, base_data, source = _base_in_process(base_job_spec(spec), progress)
    if base_data.key != data.key:
        raise InputError("job spec", "model.base_run", "base model split differs from the job's")
    was_training = model.training
    model.eval()
    with torch.no_grad():
        user_repr, item_repr = model.representations()
    model.train(was_training)
    return topn_candidates(user_repr, item_repr, base_data.train, m.candidates, source=source)


# ------------------------------------------------------------------------------ artefact


def ensure_augmentation(spec: JobSpec, dataset: Dataset, data: SplitData, generator: Any = None,
                        encoder: Any = None, progress: bool = False) -> AugmentArtifact:
    """Load or make the augmentation artefact of ``spec`` (a JobSpec with an LLMRec model).

    ``generator``: a pre-built :class:`recmind_dist.generation.Generator` (e.g. over an HF
    model object); default: built from ``model.lm``. ``encoder``: the side-text encoder
    (default: the offline backend's, else the bundled MiniLM).
    """
    from recmind_dist.augment import attributes, implicit

    m = _llmrec_spec(spec)
    root = augment_root(m)
    checksum = str(dataset.checksum)
    settings = augment_settings(m)
    if generator is not None:  # the object decides the backend/model identity
        settings["lm"] = {**settings["lm"], "backend": generator.backend_name,
                          "model": generator.model_name}
    if m.base_run:
        base = {"run": m.base_run}
    else:
        base = {"in_process": base_job_spec(spec).fingerprint()}
    inputs = {"dataset": checksum, "split": data.key, "base": base, **settings}
    key = artifact_key(inputs)
    pkey = pointer_key(m, data.key)
    art = load_artifact(root, checksum, key)
    if art is not None:
        log.info("augmentation artefact hit: %s (backend %s)", art.path, art.backend)
        write_pointer(root, checksum, pkey, key)
        return art

    t0 = time.perf_counter()
    cands = base_candidates(spec, data, progress)
    t_cand = time.perf_counter() - t0
    if generator is None:
        from recmind_dist.generation import Generator

        generator = Generator(generate_spec(m))
    generator.progress = progress
    item_texts = attributes.item_base_texts(dataset, data, spec.text)
    users = None if m.max_users is None else list(range(min(m.max_users, data.n_users)))
    triples, imp_stats = implicit.augment_implicit(generator, data, cands, item_texts,
                                                   m.max_history, spec.seed, users)
    items, item_stats = attributes.enrich_items(generator, dataset, data, spec.text,
                                                tuple(m.enrich_fields))
    users_t, user_stats = attributes.user_profiles(generator, dataset, data, spec.text)
    if encoder is None and getattr(generator, "backend_name", "") == "offline":
        encoder = generator.backend.encoder
    t1 = time.perf_counter()
    item_vec = attributes.embed_side_texts(items["text"].tolist(), encoder)
    user_vec = attributes.embed_side_texts(users_t["text"].tolist(), encoder)
    t_embed = time.perf_counter() - t1
    # canonical ids in the artefact (a split re-indexes; the dataset ids are stable)
    canon = triples.copy()
    canon["user"] = data.user_ids[triples["user"].to_numpy()]
    canon["pos"] = data.item_ids[triples["pos"].to_numpy()]
    canon["neg"] = data.item_ids[triples["neg"].to_numpy()]
    stats = {
        "users_prompted": imp_stats["prompted"], "triples": imp_stats["ok"],
        "skipped": imp_stats["skipped"], "invalid": imp_stats["invalid"],
        "implicit_seconds": imp_stats["seconds"], "users_per_s": imp_stats["users_per_s"],
        "candidate_seconds": t_cand, "embed_seconds": t_embed,
        "items_enriched": item_stats["enriched"], "items_skipped": item_stats["skipped"],
        "users_profiled": user_stats["profiled"], "profiles_skipped": user_stats["skipped"],
        "total_seconds": time.perf_counter() - t0,
        **{f"generator_{k}": float(v) for k, v in getattr(generator, "stats", {}).items()},
    }
    meta = {"inputs": inputs, "backend": generator.backend_name, "model": generator.model_name,
            "prompt_version": PROMPT_VERSION, "candidates_source": cands.source,
            "item_enrichment": item_stats.get("how"), "stats": stats,
            "backends": imp_stats.get("backends", {})}
    art = save_artifact(root, checksum, key, canon, items, item_vec, users_t, user_vec, meta)
    write_pointer(root, checksum, pkey, key)
    log.info("augmentation artefact written: %s (%d triples, %.1f users/s)", art.path,
             len(canon), stats["users_per_s"])
    return art


@contextlib.contextmanager
def _global_rng_kept() -> Iterator[None]:
    """Leave torch's and numpy's global RNG as they were (making an artefact trains a base
    model; the job's model must start from the same state whether the artefact existed)."""
    np_state = np.random.get_state()
    with torch.random.fork_rng():
        yield
    np.random.set_state(np_state)


def augmentation_inputs(spec: JobSpec, dataset: Dataset, data: SplitData,
                        progress: bool = False) -> LLMRecInputs:
    """LLMRec's inputs for ``spec`` on ``data``: its augmentation artefact (the one last made
    for this model spec and split, else made now with ``model.lm``) on local ids; side
    features only with ``model.side_features``. Global RNG states are left unchanged."""
    m = _llmrec_spec(spec)
    art = find_artifact(m, data)
    if art is None:
        with _global_rng_kept():
            art = ensure_augmentation(spec, dataset, data, progress=progress)
    fu, fi = art.local_features(data) if m.side_features else (None, None)
    return LLMRecInputs(art.local_triples(data), fu, fi)


# ------------------------------------------------------------------------------ train job


def log_augmentation(spec: JobSpec, data: SplitData) -> None:
    """Log the spec's augmentation artefact (files, who made it, its statistics) to the
    ACTIVE MLflow run (called by :func:`recmind_dist.pipeline.training.run_training`)."""
    from recmind_dist import tracking

    art = find_artifact(_llmrec_spec(spec), data)
    if art is None:
        return
    log_to_mlflow(art)
    if spec.model.base_run:
        tracking.set_tags({"base_run": spec.model.base_run})


def run_llmrec(spec: JobSpec, progress: bool = True, generator: Any = None, encoder: Any = None
               ) -> RunOutcome:
    """Train job for an LLMRec spec with a pre-built generator/encoder (tests, benchmarks):
    the artefact made with them, then the ordinary training job (which logs it). Without
    them, ``run_training`` alone does the same."""
    dataset, data = prepare(spec)
    ensure_augmentation(spec, dataset, data, generator, encoder, progress)
    return run_training(spec, progress)
