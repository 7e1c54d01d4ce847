"""Checks run before an MLflow run starts, so a rejected job leaves no run behind.

Each check raises :class:`recmind_dist.errors.InputError` naming the spec field (or file):

* the tracking URI (scheme known by the spec; a sqlite/file store's folder exists and is
  writable),
* the device (CUDA/MPS present when asked for),
* the split (validation and test parts non-empty; every ``eval.ks`` and ``eval.export_k`` at
  most the number of items),
* the embedding model path (a local path must exist) and the text templates against the
  dataset's columns (for models that read node texts, and for the embedding job).
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlparse

import torch

from recmind_dist.data.schema import Dataset
from recmind_dist.data.split import SplitData
from recmind_dist.errors import InputError
from recmind_dist.specs import EmbedSpec, JobSpec, TrackingSpec
from recmind_dist.tracking import tracking_uri

__all__ = ["check_device", "check_embed_model", "check_job", "check_ks", "check_split",
           "check_texts", "check_tracking"]


def check_tracking(spec: TrackingSpec) -> str:
    """The resolved tracking URI; a local store's folder must exist and be writable."""
    uri = tracking_uri(spec)
    if uri.startswith("sqlite:///"):
        folder = Path(uri.removeprefix("sqlite:///")).expanduser().resolve().parent
    elif "://" not in uri or uri.startswith("file:"):
        folder = Path(urlparse(uri).path if uri.startswith("file:") else uri).expanduser()
        folder = folder if folder.exists() else folder.resolve().parent
    else:
        return uri  # a server: MLflow reports an unreachable one when the run starts
    if not folder.is_dir():
        raise InputError("job spec", "tracking.uri", f"{uri}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InputError("job spec", "tracking.uri", f"{uri}: folder {folder} is not writable")
    return uri


def check_device(device: str, field: str = "train.device") -> None:
    kind = device.split(":")[0]
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise InputError("job spec", field, f"{device!r} asked for but CUDA is not "
                             "available on this machine (use cpu)")
        index = int(device.split(":")[1]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            raise InputError("job spec", field, f"{device!r}: only "
                             f"{torch.cuda.device_count()} CUDA device(s)")
    if kind == "mps" and not torch.backends.mps.is_available():
        raise InputError("job spec", field, "'mps' asked for but not available (use cpu)")


def check_split(dataset: Dataset, data: SplitData) -> None:
    """Degenerate splits name their cause instead of training into NaN metrics."""
    where = Path(dataset.path) / "interactions.parquet"
    for part in ("train", "valid", "test"):
        if len(getattr(data, part)) == 0:
            raise InputError(where, "split", f"the {part} part of split {data.key} is empty "
                             f"({data.n_users} users, {len(dataset.interactions)} interactions: "
                             "too few interactions per user for the split spec)")


def check_ks(ks: list[int], n_items: int, field: str = "eval.ks") -> None:
    too_big = [k for k in ks if k > n_items]
    if too_big:
        raise InputError("job spec", field, f"K {too_big} exceeds the {n_items} items of the "
                         "split (every metric would be trivially 1)")


def check_embed_model(spec: EmbedSpec) -> None:
    """A local embedding model path (absolute, ./ or ~) must exist."""
    m = spec.model
    if m and (m.startswith(("/", ".", "~")) or os.sep in m and Path(m).exists()):
        path = Path(m).expanduser()
        if not path.is_dir():
            raise InputError("job spec", "embed.model", f"model folder {m} does not exist")
        if not (path / "config.json").is_file():
            raise InputError("job spec", "embed.model", f"{m} has no config.json (not a "
                             "transformers model folder)")


def check_texts(spec: JobSpec, dataset: Dataset, data: SplitData) -> None:
    """Render the node texts once: a template naming no existing column is an error."""
    from recmind_dist.text.templates import training_texts

    training_texts(dataset, data, spec.text)


def check_job(spec: JobSpec, dataset: Dataset, data: SplitData, texts: bool = False) -> str:
    """Every check of a training/embedding job; returns the tracking URI."""
    uri = check_tracking(spec.tracking)
    check_device(spec.train.device)
    check_split(dataset, data)
    check_ks(spec.eval.ks, data.n_items)
    check_ks([spec.eval.export_k], data.n_items, "eval.export_k")
    if texts:
        check_embed_model(spec.embed)
        check_texts(spec, dataset, data)
    return uri
