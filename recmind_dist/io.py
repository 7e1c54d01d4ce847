"""Atomic writers and output-folder guards: outputs appear complete or not at all, and a
write never replaces a folder the project did not make.

* :func:`atomic_path` / :func:`atomic_dir` write under a temporary sibling name
  ``.<name>.<pid>.<random>.tmp`` and rename it into place only on success.
* :func:`check_output_dir` refuses an output folder that is an input, holds an input, is a
  file, or is a non-empty folder without the project's marker file :data:`OWNER_MARKER`
  (written into every folder :func:`atomic_dir` makes).
* Rebuilding an owned folder touches only what the new write produces: entries of the old
  folder that the new one does not have (a user's own notes, older split folders) are
  carried over, never deleted.
* Temp siblings left by a killed process (its pid no longer alive) are swept by the next
  write to the same place (:func:`sweep_temp`).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq


class OutputRefused(ValueError):
    """An output path that would lose data or cannot be written: the path, the option or
    spec field that named it, and why. Printed by the CLI like an ``InputError`` (this layer
    may not import :mod:`recmind_dist.errors`)."""

    def __init__(self, source: str | Path, field: str | None, message: str) -> None:
        self.source, self.field, self.message = str(source), field, message
        where = f"{source}, field '{field}'" if field else str(source)
        super().__init__(f"{where}: {message}")

#: Marker file in every folder the project writes (datasets, splits, caches, artefacts).
OWNER_MARKER = ".recmind-dist"
#: Files that mark a folder written by an older version of the project (before the marker).
_LEGACY_OWNED = ("meta.json", "split.json", "manifest.json", "features_key.json")


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this machine."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _temp_prefix(path: Path) -> str:
    return f".{path.name}.{os.getpid()}."


def sweep_temp(path: str | Path) -> list[Path]:
    """Clean ``path``'s temp siblings (``.<name>.<pid>.*``) whose writer process is gone.

    A half-written temp file/folder is removed. A previous version parked by
    :func:`atomic_dir` (``.<name>.<pid>.old``) is put back when ``path`` is missing (the
    writer died between the two renames), else its entries the new version lacks are moved
    into ``path`` before it is removed: nothing a user put there is lost. Temp entries of a
    live process (a concurrent writer) are kept. Returns what was cleaned."""
    path = Path(path)
    parent = path.parent
    if not parent.is_dir():
        return []
    pattern = re.compile(rf"^\.{re.escape(path.name)}\.(\d+)\.")
    removed = []
    for entry in parent.iterdir():
        m = pattern.match(entry.name)
        if m is None or pid_alive(int(m.group(1))):
            continue
        with contextlib.suppress(OSError):
            if entry.name.endswith(".old") and entry.is_dir():
                if not path.exists():
                    os.replace(entry, path)
                    removed.append(entry)
                    continue
                if path.is_dir():
                    _carry_over(entry, path)
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
            removed.append(entry)
    return removed


def is_owned(path: str | Path) -> bool:
    """A folder the project wrote: it has the marker (or a legacy metadata file)."""
    path = Path(path)
    return any((path / f).is_file() for f in (OWNER_MARKER, *_LEGACY_OWNED))


def _holds(out: Path, src: Path) -> bool:
    """Whether replacing folder ``out`` would replace ``src`` (the same path or inside it)."""
    return out == src or out in src.parents


def check_output_dir(path: str | Path, inputs: Iterable[str | Path | None] = (),
                     field: str = "--out") -> Path:
    """Refuse an output folder that would lose data; return it.

    Accepted: an absent path, an empty folder, or a folder with :data:`OWNER_MARKER`.
    Refused (:class:`OutputRefused` naming the folder): the path is a file, it is an input,
    inside an input or holds one, or it is a non-empty folder the project did not make."""
    path = Path(path)
    resolved = path.resolve()
    for src in inputs:
        if src is not None and _holds(resolved, Path(src).resolve()):
            raise OutputRefused(path, field, f"is or holds the input {src}; write the output "
                             "to another folder (inputs are never replaced)")
    if path.exists() and not path.is_dir():
        raise OutputRefused(path, field, "exists and is not a folder; refusing to replace it")
    if path.is_dir() and not is_owned(path) and any(path.iterdir()):
        raise OutputRefused(path, field, "folder exists, is not empty and was not written by "
                         f"recmind-dist (no {OWNER_MARKER} marker); refusing to replace it: "
                         "choose a new or empty folder")
    return path


def _mkdir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputRefused(path, None, f"cannot create the folder ({exc.strerror})") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise OutputRefused(path, None, "folder is not writable (permission denied)")


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling path; rename it onto ``path`` only if the block succeeds."""
    path = Path(path)
    _mkdir(path.parent)
    sweep_temp(path)
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _carry_over(old: Path, new: Path) -> None:
    """Move entries of ``old`` that ``new`` does not have into ``new`` (kept, not deleted)."""
    for entry in old.iterdir():
        if not (new / entry.name).exists():
            os.replace(entry, new / entry.name)


@contextlib.contextmanager
def atomic_dir(path: str | Path, inputs: Iterable[str | Path | None] = ()) -> Iterator[Path]:
    """Yield a temporary sibling directory; it replaces ``path`` only if the block succeeds.

    ``path`` must pass :func:`check_output_dir` (with ``inputs``). The new folder gets the
    :data:`OWNER_MARKER`; entries of an old folder that the new one lacks are carried over."""
    path = check_output_dir(path, inputs)
    _mkdir(path.parent)
    sweep_temp(path)
    tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(path), suffix=".tmp", dir=path.parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp makes 0700; a dataset dir is shared like any other
    try:
        (tmp / OWNER_MARKER).write_text("written by recmind-dist; safe to rebuild\n")
        yield tmp
        if path.exists() and any(path.iterdir()):
            old = path.with_name(f"{_temp_prefix(path)}old")
            os.replace(path, old)
            os.replace(tmp, path)
            _carry_over(old, path)  # what the new version does not write stays
            shutil.rmtree(old)
        else:
            if path.exists():
                path.rmdir()
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def strict_json(obj: Any) -> Any:
    """``obj`` with every non-finite float replaced by None (JSON ``null``, never ``NaN``)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: strict_json(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [strict_json(v) for v in obj]
    return obj


def dumps_json(obj: Any) -> str:
    """Strict JSON text (sorted keys, indented; NaN/inf written as null)."""
    return json.dumps(strict_json(obj), indent=2, sort_keys=True, default=str, allow_nan=False)


def write_parquet(table: pa.Table | Any, path: str | Path) -> None:
    """Write a pyarrow Table (or pandas DataFrame) to Parquet atomically."""
    if not isinstance(table, pa.Table):
        table = pa.Table.from_pandas(table, preserve_index=False)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def write_json(obj: Any, path: str | Path) -> None:
    """Write strict JSON atomically (sorted keys, indented, NaN as null)."""
    with atomic_path(path) as tmp:
        tmp.write_text(dumps_json(obj) + "\n")
