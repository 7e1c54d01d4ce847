"""Checkpoints that hold only data: tensors, numbers, strings, lists and dicts.

Every checkpoint is read with ``torch.load(weights_only=True)``: a file carrying any other
pickled object (a class, a function, a ``__reduce__`` payload that would run code) is
refused with an :class:`InputError`, as are missing and truncated files. Writers pass the
state through :func:`plain` first (numpy scalars become Python numbers) so everything the
project writes loads under that restriction.

:class:`ResumeState` is the single-process trainer's state after an epoch: model, optimiser,
early-stopping tracker, history, the epoch RNG (numpy ``Generator``) and torch's RNG. Training
continued from it draws the same batches and negatives as an uninterrupted run.
"""

from __future__ import annotations

import pickle
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recmind_dist.errors import InputError
from recmind_dist.io import atomic_path

__all__ = ["ResumeState", "load_checkpoint", "plain", "save_checkpoint"]


def plain(obj: Any) -> Any:
    """``obj`` with numpy scalars/arrays as Python numbers/tensors (loadable weights-only)."""
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(plain(v) for v in obj)
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(obj)
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    return obj


def save_checkpoint(state: Any, path: str | Path) -> Path:
    """``torch.save`` of :func:`plain` ``(state)``, atomically."""
    with atomic_path(path) as tmp:
        torch.save(plain(state), tmp)
    return Path(path)


def load_checkpoint(path: str | Path, map_location: Any = "cpu", source: str | None = None
                    ) -> Any:
    """Load a checkpoint weights-only; refuse missing, truncated or code-carrying files."""
    path = Path(path)
    where = source or str(path)
    if not path.is_file():
        raise InputError(where, "checkpoint", "checkpoint file is missing")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(where, "checkpoint", "refused: the file carries pickled objects other "
                         f"than tensors and plain data (weights-only load: {first[:160]})"
                         ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as exc:
        raise InputError(where, "checkpoint", f"unreadable or truncated checkpoint "
                         f"({type(exc).__name__}: {str(exc)[:160]})") from None


@dataclass
class ResumeState:
    """The single-process trainer after ``epoch`` (see :func:`recmind_dist.train.loop.train_model`)."""

    epoch: int
    train_seconds: float
    model: dict[str, Any]
    optimizer: dict[str, Any]
    tracker: dict[str, Any]
    rng: dict[str, Any]
    torch_rng: torch.Tensor
    history: list[dict[str, float]] = field(default_factory=list)
    stop_reason: str | None = None  # set when the loop had decided to stop at ``epoch``

    def save(self, path: str | Path) -> Path:
        return save_checkpoint(asdict(self), path)

    @classmethod
    def load(cls, path: str | Path, source: str | None = None) -> ResumeState:
        raw = load_checkpoint(path, "cpu", source)
        try:
            return cls(**raw)
        except TypeError as exc:
            raise InputError(source or path, "checkpoint", f"not a resume state ({exc})"
                             ) from None
