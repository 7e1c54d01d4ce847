"""LLMRec end to end: candidates -> LM augmentation -> artefact -> LightGCN on E ∪ E_A.

* :func:`ensure_augmentation` returns the job's augmentation artefact, making it once:
  base model candidates (an MLflow run's best checkpoint, or LightGCN trained in-process),
  implicit-feedback triples, enriched item attributes and user profiles, their encoder
  vectors; saved as Parquet under ``model.augment_cache`` and reused by every later run with
  the same inputs (no base model, generator or encoder is loaded on a hit).
* :func:`run_llmrec` is the train job for ``model.name == "llmrec"``: ensure the artefact,
  then the ordinary :func:`recmind_dist.pipeline.run_training` (the factory finds the
  artefact through its pointer), then log the artefact and who made it to the same MLflow run.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from recmind_dist.augment.artifact import (
    PROMPT_VERSION,
    AugmentArtifact,
    artifact_key,
    load_artifact,
    log_to_mlflow,
    read_pointer,
    save_artifact,
    write_pointer,
)
from recmind_dist.data.split import SplitData
from recmind_dist.errors import InputError
from recmind_dist.hashing import stable_hash

log = logging.getLogger(__name__)

__all__ = [
    "augment_root",
    "base_job_spec",
    "ensure_augmentation",
    "find_artifact",
    "generate_spec",
    "pointer_key",
    "run_llmrec",
]


def augment_root(model_spec: Any) -> Path:
    return Path(model_spec.augment_cache)


def generate_spec(model_spec: Any):
    """The LM spec with its prompt cache defaulting to ``<augment_cache>/generations``."""
    lm = model_spec.lm
    if lm.cache_dir is None:
        lm = lm.model_copy(update={"cache_dir": augment_root(model_spec) / "generations"})
    return lm


def _aug_settings(model_spec: Any) -> dict[str, Any]:
    lm = model_spec.lm.model_dump(mode="json", include={
        "backend", "model", "base_url", "temperature", "top_p", "max_new_tokens", "seed",
        "max_retries"})
    return {"prompt_version": PROMPT_VERSION, "candidates": model_spec.candidates,
            "max_history": model_spec.max_history, "enrich_fields": list(model_spec.enrich_fields),
            "max_users": model_spec.max_users, "lm": lm}


def pointer_key(model_spec: Any, split_key: str) -> str:
    """What the job spec says (before the base is resolved) -> artefact pointer."""
    return stable_hash({"split": split_key, "base_run": model_spec.base_run, **_aug_settings(model_spec)})


def find_artifact(model_spec: Any, data: SplitData) -> AugmentArtifact | None:
    """The artefact a previous :func:`ensure_augmentation` made for this spec and split."""
    root = augment_root(model_spec)
    key = read_pointer(root, data.dataset_checksum, pointer_key(model_spec, data.key))
    return load_artifact(root, data.dataset_checksum, key) if key else None


def base_job_spec(spec: Any) -> Any:
    """The in-process base: LightGCN with the job's dim/layers/reg, split, seed and training."""
    from recmind_dist.specs import JobSpec, LightGCNSpec

    m = spec.model
    return JobSpec.model_validate({
        **spec.model_dump(mode="json", exclude={"model"}),
        "model": LightGCNSpec(dim=m.dim, layers=m.layers, reg=m.reg).model_dump(mode="json"),
    })


def ensure_augmentation(spec: Any, dataset: Any, data: SplitData, generator: Any = None,
                        encoder: Any = None, progress: bool = False) -> AugmentArtifact:
    """Load or make the augmentation artefact of ``spec`` (a JobSpec with an LLMRec model).

    ``generator``: a pre-built :class:`recmind_dist.generation.Generator` (e.g. over an HF
    model object); default: built from ``model.lm``. ``encoder``: the side-text encoder
    (default: the offline backend's, else the bundled MiniLM).
    """
    from recmind_dist.augment import attributes, candidates, implicit

    m = spec.model
    root = augment_root(m)
    checksum = str(dataset.checksum)
    settings = _aug_settings(m)
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
    if m.base_run:
        cands, base_data = candidates.candidates_from_run(m.base_run, m.candidates, data.key)
    else:
        cands, base_data = candidates.candidates_in_process(base_job_spec(spec), m.candidates,
                                                            progress)
    if base_data.key != data.key:
        raise InputError("job spec", "model.base_run", "base model split differs from the job's")
    t_cand = time.perf_counter() - t0
    if generator is None:
        from recmind_dist.generation import Generator

        generator = Generator(generate_spec(m))
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


def run_llmrec(spec: Any, progress: bool = True, generator: Any = None, encoder: Any = None
               ) -> Any:
    """Train job for an LLMRec spec: artefact, training (MLflow run), artefact logged to it."""
    import mlflow

    from recmind_dist import tracking
    from recmind_dist.pipeline import prepare, run_training

    if getattr(spec.model, "name", None) != "llmrec":
        raise InputError("job spec", "model.name", "run_llmrec needs model.name: llmrec")
    dataset, data = prepare(spec)
    art = ensure_augmentation(spec, dataset, data, generator, encoder, progress)
    outcome = run_training(spec, progress)
    mlflow.set_tracking_uri(tracking.tracking_uri(spec.tracking))
    with mlflow.start_run(run_id=outcome.run_id):
        log_to_mlflow(art)
        if spec.model.base_run:
            mlflow.set_tag("base_run", spec.model.base_run)
    return outcome
