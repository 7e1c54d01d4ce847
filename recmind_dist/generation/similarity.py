"""Encoder-vector helpers the offline answers share: the vector lookup type and the mean
direction ``m / ‖m‖`` with ``m = mean_i v_i``."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

__all__ = ["VectorFn", "mean_direction"]

#: texts -> unit row vectors ``[n, d]`` (the offline backend's memoised encoder).
VectorFn = Callable[[Sequence[str]], np.ndarray]


def mean_direction(v: np.ndarray) -> np.ndarray:
    """Unit vector along the mean of the rows of ``v`` (``m / max(‖m‖, 1e-12)``)."""
    m = v.mean(0)
    return m / max(float(np.linalg.norm(m)), 1e-12)
