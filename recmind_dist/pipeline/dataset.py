"""The job's dataset and split: fetched, imported or generated once, then cached."""

from __future__ import annotations

import logging
from pathlib import Path

from recmind_dist.data.schema import Dataset, load_dataset
from recmind_dist.data.split import SplitData, make_split, write_split
from recmind_dist.errors import InputError
from recmind_dist.hashing import stable_hash
from recmind_dist.specs import DataSpec, JobSpec

log = logging.getLogger(__name__)


def resolve_dataset(data: DataSpec) -> Dataset:
    """Load (fetching, importing or generating once, then cached) the job's dataset."""
    from recmind_dist.data import fetch, importers, synthetic

    cache = Path(data.cache_dir)
    if data.path is not None:
        return load_dataset(data.path)
    if data.synthetic is not None:
        s = data.synthetic
        out = cache / f"synthetic-{stable_hash(s.model_dump(), 12)}"
        if not (out / "meta.json").exists():
            synthetic.generate_synthetic(
                out, s.n_users, s.n_items, s.n_interactions, s.n_topics, s.seed
            )
        return load_dataset(out)
    if data.table is not None:
        t = data.table
        files = [p for p in (t.path, t.items_path, t.users_path) if p is not None]
        for p in files:
            if not Path(p).is_file():
                raise InputError(p, "data.table", "file not found")
        stamp = [(str(p), Path(p).stat().st_size, Path(p).stat().st_mtime_ns) for p in files]
        out = cache / f"table-{stable_hash([t.model_dump(mode='json'), stamp], 12)}"
        if not (out / "meta.json").exists():
            mapping = {"user": t.user, "item": t.item, "item_id_col": t.item_id_col,
                       "user_id_col": t.user_id_col}
            if t.rating:
                mapping["rating"] = t.rating
            if t.timestamp:
                mapping["timestamp"] = t.timestamp
            importers.import_table(t.path, mapping, out, t.items_path, t.users_path)
        return load_dataset(out)
    if data.source:
        return load_dataset(fetch.fetch_dataset(data.source, cache))
    raise InputError(None, "data", "set one of data.source, data.path, data.table, data.synthetic")


def prepare(spec: JobSpec) -> tuple[Dataset, SplitData]:
    """Dataset and deterministic split for ``spec`` (split files cached in the dataset dir)."""
    dataset = resolve_dataset(spec.data)
    data = make_split(dataset, spec.split, spec.seed)
    try:
        write_split(data, dataset.path)
    except OSError as exc:  # a read-only dataset dir must not stop training
        log.warning("could not cache split files in %s: %s", dataset.path, exc)
    return dataset, data
