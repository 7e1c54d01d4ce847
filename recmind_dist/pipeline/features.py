"""Node text features for a split: frozen-LM vectors aligned to the split's LOCAL ids.

``node_text_features(dataset, data, text_spec, embed_spec, cache_root, backend)`` returns
:class:`NodeFeatures` (``user_vec`` [U, d], ``item_vec`` [I, d] float32, ``user_has_text``,
``item_has_text`` bool), row ``k`` being local node ``k`` of ``data`` (``data.user_ids[k]``
is its canonical id). Nodes without text (or missing from the embedding files) get the zero
vector and ``has_text = False``; RecMind routes them to its fallback MLP.

The vectors come from the embedding job (:func:`recmind_dist.embed.job.run_embedding_job`,
the engine behind ``embed_dataset``) and are cached on disk:

    <cache_root>/<dataset checksum[:16]>/items-<hash(text spec, embed spec)>/embeddings/items.parquet
    <cache_root>/<dataset checksum[:16]>/users-<hash(split key, text spec, embed spec)>/embeddings/users.parquet

Item texts do not depend on the split, so one item cache serves every split and seed; user
profiles summarise **training interactions only** (``data.train``), so they are keyed by the
split key (itself a hash of dataset checksum, split spec and seed) and can never contain a
validation/test item. A rerun with the same keys reads the Parquet files and loads no model.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from recmind_dist.data.split import SplitData
from recmind_dist.embed.job import run_embedding_job
from recmind_dist.embed.shards import cache_problem, cache_record, read_embeddings
from recmind_dist.errors import InputError
from recmind_dist.generation import Generator, ProfileRecord, write_profiles
from recmind_dist.hashing import stable_hash
from recmind_dist.io import write_json
from recmind_dist.models.inputs import NodeFeatures
from recmind_dist.specs import EmbedSpec, TextSpec
from recmind_dist.text.templates import item_texts, training_texts, training_user_texts

log = logging.getLogger(__name__)

__all__ = ["align_to_local", "attach_node_texts", "feature_cache_keys", "node_text_features",
           "profile_features"]


def align_to_local(
    ids: np.ndarray, vectors: np.ndarray, has_text: np.ndarray, local_to_canonical: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Rows of (ids, vectors, has_text) reordered to ``local_to_canonical``; absent -> zero."""
    order = np.argsort(ids, kind="stable")
    ids, vectors, has_text = ids[order], vectors[order], has_text[order]
    pos = np.searchsorted(ids, local_to_canonical)
    pos_c = np.minimum(pos, max(len(ids) - 1, 0))
    found = (pos < len(ids)) & (ids[pos_c] == local_to_canonical) if len(ids) else np.zeros(
        len(local_to_canonical), bool)
    out = np.zeros((len(local_to_canonical), vectors.shape[1]), dtype=np.float32)
    out[found] = vectors[pos_c[found]]
    has = np.zeros(len(local_to_canonical), dtype=bool)
    has[found] = has_text[pos_c[found]]
    out[~has] = 0.0
    return out, has


def feature_cache_keys(
    dataset_checksum: str, split_key: str, text_spec: TextSpec, embed_spec: EmbedSpec
) -> tuple[str, str]:
    """(item cache key, user cache key): what changes the vectors, nothing else. Item texts
    depend on ``item_template`` alone (not on the split nor on the user-profile settings:
    changing how profiles are written re-encodes the users only); user texts on the whole
    :class:`TextSpec` and the split. The default encoder counts as its hub id (the bundled
    package holds exactly those weights), so the key does not depend on where a venv put it:
    every checkout and job shares one cache."""
    from recmind_dist.embed.encoder import MINILM_HUB_ID

    model_id = embed_spec.model or MINILM_HUB_ID
    emb = {"fp": embed_spec.fingerprint(model_id), "max_texts": embed_spec.max_texts}
    text = text_spec.model_dump(mode="json")
    item_key = stable_hash({"ds": dataset_checksum, "item_template": text_spec.item_template,
                            "embed": emb})
    user_key = stable_hash({"ds": dataset_checksum, "split": split_key, "text": text, "embed": emb})
    return item_key, user_key


def _cached(path: Path, key: str) -> bool:
    """Whether ``path`` is a valid cache for ``key``: its ``features_key.json`` names the key
    and the file matches the checksum, rows and dimension recorded there
    (:func:`recmind_dist.embed.shards.cache_problem`). An invalid one is recomputed."""
    marker = path.parent / "features_key.json"
    if not (path.exists() and marker.exists()):
        return False
    try:
        record = json.loads(marker.read_text())
    except (OSError, ValueError):
        log.warning("embedding cache %s: unreadable %s; recomputing", path, marker.name)
        return False
    if record.get("key") != key:
        return False
    problem = cache_problem(path, record.get("file"))
    if problem is not None:
        log.warning("embedding cache %s is invalid (%s); recomputing it", path, problem)
    return problem is None


def _read_checked(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read a cache just made or validated; one still broken is refused (InputError)."""
    problem = cache_problem(path, None)
    if problem is not None:
        raise InputError(path, "embeddings", f"invalid embedding cache ({problem}); delete "
                         "the folder to rebuild it")
    return read_embeddings(path)


def node_text_features(
    dataset: Any,
    data: SplitData,
    text_spec: TextSpec | None = None,
    embed_spec: EmbedSpec | None = None,
    cache_root: str | Path = "data/features",
    backend: Literal["local", "ray"] = "local",
    progress: bool = False,
    **job_kwargs: Any,
) -> NodeFeatures:
    """Text vectors for ``data``'s users and items (see the module docstring).

    ``dataset`` is a loaded :class:`recmind_dist.data.schema.Dataset`; ``job_kwargs`` go to
    the embedding job (``ray_address``, ``num_cpus``, ``encoder``).
    """
    text_spec = text_spec or TextSpec()
    embed_spec = embed_spec or EmbedSpec()
    checksum = str(dataset.checksum)
    item_key, user_key = feature_cache_keys(checksum, data.key, text_spec, embed_spec)
    root = Path(cache_root) / checksum[:16]
    item_dir, user_dir = root / f"items-{item_key}", root / f"users-{user_key}"
    item_file = item_dir / "embeddings" / "items.parquet"
    user_file = user_dir / "embeddings" / "users.parquet"
    computed = []
    results: dict[str, Any] = {}  # kind -> EmbedResult of this call (throughput, shards)
    if not _cached(item_file, item_key):
        items = item_texts(dataset, text_spec)
        results["items"] = run_embedding_job({"items": items}, embed_spec, item_dir, progress=progress,
                          backend=backend, **job_kwargs)
        write_json({"key": item_key, "dataset_checksum": checksum,
                    "file": cache_record(item_file)},
                   item_dir / "embeddings" / "features_key.json")
        computed.append("items")
    if not _cached(user_file, user_key):
        users = training_user_texts(dataset, data, text_spec)
        results["users"] = run_embedding_job({"users": users}, embed_spec, user_dir, progress=progress,
                          backend=backend, **job_kwargs)
        write_json({"key": user_key, "split_key": data.key, "dataset_checksum": checksum,
                    "file": cache_record(user_file)},
                   user_dir / "embeddings" / "features_key.json")
        computed.append("users")
    uvec, uhas = align_to_local(*_read_checked(user_file), data.user_ids)
    ivec, ihas = align_to_local(*_read_checked(item_file), data.item_ids)
    info = {"item_cache": str(item_file), "user_cache": str(user_file),
            "computed": computed, "backend": backend, "results": results}
    log.info("node text features: %d/%d users and %d/%d items with text (computed: %s)",
             uhas.sum(), len(uhas), ihas.sum(), len(ihas), computed or "none, cache hit")
    return NodeFeatures(uvec, ivec, uhas, ihas, info)


def _texts_by_local(df: Any, local_to_canonical: np.ndarray) -> list[str]:
    """``df`` (id, text, has_text) -> one string per local node ("" where there is none)."""
    by_id = {int(i): (str(t) if h else "") for i, t, h in zip(df["id"], df["text"],
                                                            df["has_text"], strict=True)}
    return [by_id.get(int(c), "") for c in local_to_canonical]


def attach_node_texts(features: NodeFeatures, dataset: Any, data: SplitData,
                      text_spec: TextSpec | None = None, embed_spec: EmbedSpec | None = None
                      ) -> NodeFeatures:
    """Add the node texts (same templates as the embedding job; user profiles from training
    edges only) and the LM to encode them with, for RecMind's end-to-end LoRA path."""
    from recmind_dist.embed.encoder import default_model_path

    text_spec = text_spec or TextSpec()
    embed_spec = embed_spec or EmbedSpec()
    items, users = training_texts(dataset, data, text_spec)
    features.user_text = _texts_by_local(users, data.user_ids)
    features.item_text = _texts_by_local(items, data.item_ids)
    features.info.update(lm=embed_spec.model or default_model_path(),
                         pooling=embed_spec.pooling)
    return features


def profile_features(
    dataset: Any,
    data: SplitData,
    gen: Generator,
    text_spec: TextSpec | None = None,
    embed_spec: EmbedSpec | None = None,
    cache_root: str | Path = "data/features",
    backend: Literal["local", "ray"] = "local",
    **job_kwargs: Any,
) -> NodeFeatures:
    """LM-written profiles as node features: facts -> ``write_profiles`` -> encoder.

    The facts of a node are its templated text (:func:`~recmind_dist.text.templates.
    training_texts`: user profiles over TRAINING edges only, so no held-out item can reach a
    profile). Each is rewritten by ``gen`` (cached by prompt); an answer that does not parse
    after the generator's retries falls back to the templated facts (counted in
    ``info['profiles_fallback']``). The texts are embedded by the embedding job and cached
    under ``<cache_root>/<checksum[:16]>/profiles-<hash>`` keyed by (split, text spec, embed
    spec, generator backend and model). With the offline backend the profiles equal the
    templated texts, i.e. the vectors equal :func:`node_text_features`'s.
    """
    text_spec, embed_spec = text_spec or TextSpec(), embed_spec or EmbedSpec()
    checksum = str(dataset.checksum)
    _, user_key = feature_cache_keys(checksum, data.key, text_spec, embed_spec)
    key = stable_hash([user_key, gen.backend_name, gen.model_name])
    out_dir = Path(cache_root) / checksum[:16] / f"profiles-{key}"
    files = {k: out_dir / "embeddings" / f"{k}.parquet" for k in ("users", "items")}
    info: dict = {"profiles_backend": gen.backend_name, "profiles_model": gen.model_name,
                  "cache": str(out_dir)}
    if any(cache_problem(f, None) is not None for f in files.values()):
        items, users = training_texts(dataset, data, text_spec)
        tables = {"items": items, "users": users}
        fallback = 0
        for kind, df in tables.items():
            has = df["has_text"].to_numpy()
            recs = [ProfileRecord(kind[:-1], int(i), t) for i, t in
                    zip(df["id"][has].tolist(), df["text"][has].tolist(), strict=True)]
            outs = write_profiles(gen, recs)
            texts = [o.parsed if o.ok else r.facts for o, r in zip(outs, recs, strict=True)]
            fallback += sum(not o.ok for o in outs)
            df = df.copy()
            df.loc[has, "text"] = pd.Series(texts, index=df.index[has], dtype=object)
            tables[kind] = df
        info["profiles_fallback"] = fallback
        run_embedding_job(tables, embed_spec, out_dir, progress=False, backend=backend,
                          **job_kwargs)
    uvec, uhas = align_to_local(*_read_checked(files["users"]), data.user_ids)
    ivec, ihas = align_to_local(*_read_checked(files["items"]), data.item_ids)
    return NodeFeatures(uvec, ivec, uhas, ihas, info)
