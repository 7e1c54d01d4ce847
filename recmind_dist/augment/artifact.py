"""The LLMRec augmentation as a versioned, content-keyed Parquet artefact.

Layout (one directory per key, written atomically)::

    <root>/<dataset checksum[:16]>/llmrec-<key>/
        triples.parquet        user, pos, neg (CANONICAL ids), backend, model
        items.parquet          id (canonical), text, backend, vec (list<float32>)
        users.parquet          id (canonical), text, backend, vec
        meta.json              version, key inputs, statistics (throughput, skipped, ...)

``key = sha256(ARTIFACT_VERSION, dataset checksum, split key, base (MLflow run id, or the
in-process base spec fingerprint) and candidate count, backend, model, prompt version,
augmentation settings)``. A rerun with the same inputs finds ``meta.json`` with the same key
and loads the files: no base model, no generator, no encoder is touched.

A small pointer ``<root>/<ds>/pointers/<pointer key>.json`` maps what the model spec says
(split key + augmentation settings, without resolving the base) to the artefact key, so
:func:`find_artifact` finds the artefact of a job from ``(model spec, split)`` alone.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from recmind_dist.data.split import SplitData
from recmind_dist.hashing import stable_hash
from recmind_dist.io import atomic_dir, write_json
from recmind_dist.specs import LLMRecSpec

log = logging.getLogger(__name__)

__all__ = [
    "ARTIFACT_VERSION",
    "PROMPT_VERSION",
    "AugmentArtifact",
    "artifact_dir",
    "artifact_key",
    "augment_root",
    "augment_settings",
    "find_artifact",
    "load_artifact",
    "log_to_mlflow",
    "pointer_key",
    "read_pointer",
    "save_artifact",
    "write_pointer",
]

#: bump when the artefact's files or their meaning change
ARTIFACT_VERSION = 1
#: bump when a prompt or parser of the augmentation changes (changes the key)
PROMPT_VERSION = "llmrec-v1"


def artifact_key(inputs: dict[str, Any]) -> str:
    """Content key of an augmentation from everything that changes it."""
    return stable_hash({"version": ARTIFACT_VERSION, **inputs})


def artifact_dir(root: str | Path, dataset_checksum: str, key: str) -> Path:
    return Path(root) / str(dataset_checksum)[:16] / f"llmrec-{key}"


@dataclass
class AugmentArtifact:
    """A loaded augmentation (canonical ids; :meth:`local_triples` maps them to a split)."""

    path: Path
    key: str
    triples: pd.DataFrame
    items: pd.DataFrame
    users: pd.DataFrame
    meta: dict[str, Any] = field(default_factory=dict)
    hit: bool = False  # loaded from disk (True) or just made (False)

    @property
    def backend(self) -> str:
        return str(self.meta.get("backend", "?"))

    def local_triples(self, data: Any) -> np.ndarray:
        """[M, 3] LOCAL (user, pos, neg) for split ``data``; rows outside the split dropped."""
        if not len(self.triples):
            return np.zeros((0, 3), np.int64)
        u = _to_local(self.triples["user"].to_numpy(np.int64), data.user_ids)
        p = _to_local(self.triples["pos"].to_numpy(np.int64), data.item_ids)
        n = _to_local(self.triples["neg"].to_numpy(np.int64), data.item_ids)
        ok = (u >= 0) & (p >= 0) & (n >= 0)
        return np.stack([u[ok], p[ok], n[ok]], 1)

    def local_features(self, data: Any) -> tuple[np.ndarray, np.ndarray]:
        """(user [U, D], item [I, D]) vectors aligned to the split's local ids (0 if absent)."""
        return (_vec_local(self.users, data.user_ids), _vec_local(self.items, data.item_ids))


def _to_local(canon: np.ndarray, local_to_canon: np.ndarray) -> np.ndarray:
    order = np.argsort(local_to_canon, kind="stable")
    sorted_ids = local_to_canon[order]
    pos = np.searchsorted(sorted_ids, canon)
    pos_c = np.minimum(pos, len(sorted_ids) - 1)
    found = (pos < len(sorted_ids)) & (sorted_ids[pos_c] == canon)
    return np.where(found, order[pos_c], -1)


def _vec_local(table: pd.DataFrame, local_to_canon: np.ndarray) -> np.ndarray:
    vecs = np.stack(table["vec"].to_numpy()).astype(np.float32) if len(table) else np.zeros(
        (0, 1), np.float32)
    out = np.zeros((len(local_to_canon), vecs.shape[1]), np.float32)
    loc = _to_local(table["id"].to_numpy(np.int64), local_to_canon)
    ok = loc >= 0
    out[loc[ok]] = vecs[ok]
    return out


def _vec_table(df: pd.DataFrame, vecs: np.ndarray) -> pa.Table:
    d = int(vecs.shape[1])
    flat = pa.array(np.ascontiguousarray(vecs, np.float32).ravel(), pa.float32())
    t = pa.Table.from_pandas(df.reset_index(drop=True), preserve_index=False)
    return t.append_column("vec", pa.FixedSizeListArray.from_arrays(flat, d))


def save_artifact(root: str | Path, dataset_checksum: str, key: str, triples: pd.DataFrame,
                  items: pd.DataFrame, item_vec: np.ndarray, users: pd.DataFrame,
                  user_vec: np.ndarray, meta: dict[str, Any]) -> AugmentArtifact:
    """Write the artefact atomically (appears complete or not at all) and load it back."""
    path = artifact_dir(root, dataset_checksum, key)
    with atomic_dir(path) as tmp:
        pq.write_table(pa.Table.from_pandas(triples.reset_index(drop=True),
                                            preserve_index=False), tmp / "triples.parquet")
        pq.write_table(_vec_table(items, item_vec), tmp / "items.parquet")
        pq.write_table(_vec_table(users, user_vec), tmp / "users.parquet")
        write_json({**meta, "key": key, "version": ARTIFACT_VERSION}, tmp / "meta.json")
    art = load_artifact(root, dataset_checksum, key)
    assert art is not None
    art.hit = False
    return art


def load_artifact(root: str | Path, dataset_checksum: str, key: str) -> AugmentArtifact | None:
    """The artefact for ``key``, or None when absent/incomplete/of another version."""
    path = artifact_dir(root, dataset_checksum, key)
    meta_file = path / "meta.json"
    if not meta_file.exists():
        return None
    try:
        meta = json.loads(meta_file.read_text())
    except (OSError, ValueError):
        return None
    if meta.get("key") != key or meta.get("version") != ARTIFACT_VERSION:
        return None
    try:
        triples = pq.read_table(path / "triples.parquet").to_pandas()
        items = pq.read_table(path / "items.parquet").to_pandas()
        users = pq.read_table(path / "users.parquet").to_pandas()
    except (OSError, pa.ArrowInvalid):
        return None
    return AugmentArtifact(path, key, triples, items, users, meta, hit=True)


def _pointer_file(root: str | Path, dataset_checksum: str, pointer: str) -> Path:
    return Path(root) / str(dataset_checksum)[:16] / "pointers" / f"{pointer}.json"


def write_pointer(root: str | Path, dataset_checksum: str, pointer: str, key: str) -> None:
    write_json({"key": key}, _pointer_file(root, dataset_checksum, pointer))


def read_pointer(root: str | Path, dataset_checksum: str, pointer: str) -> str | None:
    f = _pointer_file(root, dataset_checksum, pointer)
    try:
        return str(json.loads(f.read_text())["key"])
    except (OSError, ValueError, KeyError):
        return None


def augment_root(model_spec: LLMRecSpec) -> Path:
    """Where the spec's artefacts (and its LM prompt cache, under ``generations/``) live."""
    return Path(model_spec.augment_cache)


def augment_settings(model_spec: LLMRecSpec) -> dict[str, Any]:
    """The spec's settings that change the augmentation (part of both keys)."""
    lm = model_spec.lm.model_dump(mode="json", include={
        "backend", "model", "base_url", "temperature", "top_p", "max_new_tokens", "seed"})
    # re-asks of unparsable answers change what is kept; stored under the key it had before
    # the setting was split (transport retries change no answer), so artefacts keep hitting
    lm["max_retries"] = model_spec.lm.format_retries
    return {"prompt_version": PROMPT_VERSION, "candidates": model_spec.candidates,
            "max_history": model_spec.max_history, "enrich_fields": list(model_spec.enrich_fields),
            "max_users": model_spec.max_users, "lm": lm}


def pointer_key(model_spec: LLMRecSpec, split_key: str) -> str:
    """What the job spec says (before the base is resolved) -> artefact pointer."""
    return stable_hash({"split": split_key, "base_run": model_spec.base_run,
                        **augment_settings(model_spec)})


def find_artifact(model_spec: LLMRecSpec, data: SplitData) -> AugmentArtifact | None:
    """The artefact last made for this model spec and split (None: not made yet)."""
    root = augment_root(model_spec)
    key = read_pointer(root, data.dataset_checksum, pointer_key(model_spec, data.key))
    return load_artifact(root, data.dataset_checksum, key) if key else None


def log_to_mlflow(art: AugmentArtifact, artifact_path: str = "augmentation") -> None:
    """Log the artefact files and who made them to the ACTIVE MLflow run."""
    import mlflow

    mlflow.log_artifacts(str(art.path), artifact_path)
    mlflow.set_tags({"augment_key": art.key, "augment_backend": art.backend,
                     "augment_model": str(art.meta.get("model", "?")),
                     "augment_prompt_version": str(art.meta.get("prompt_version", "?")),
                     "augment_cache_hit": str(art.hit)})
    stats = art.meta.get("stats", {})
    flat = {f"augment/{k}": float(v) for k, v in stats.items() if isinstance(v, (int, float))}
    flat["augment/n_triples"] = float(len(art.triples))
    mlflow.log_metrics(flat)
