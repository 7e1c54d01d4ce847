"""Datasets: the canonical directory (schema), importers, fetching known datasets, synthetic data."""

from recmind_dist.data.fetch import REGISTRY, FetchError, KnownDataset, fetch_dataset
from recmind_dist.data.importers import import_movielens_raw, import_recbole_atomic, import_table
from recmind_dist.data.schema import (
    Dataset,
    encode_ids,
    interactions_checksum,
    load_dataset,
    validate_interactions,
    write_dataset,
)
from recmind_dist.data.synthetic import generate_synthetic

__all__ = [
    "REGISTRY",
    "Dataset",
    "FetchError",
    "KnownDataset",
    "encode_ids",
    "fetch_dataset",
    "generate_synthetic",
    "import_movielens_raw",
    "import_recbole_atomic",
    "import_table",
    "interactions_checksum",
    "load_dataset",
    "validate_interactions",
    "write_dataset",
]
