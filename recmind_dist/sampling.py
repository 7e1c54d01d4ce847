"""Negative sampling that never returns a training positive.

Uniform: draw j ~ U{0..I-1} for every (u, i) at once, look the keys ``u·I + j`` up in the
sorted array of positive keys with one ``searchsorted``, and redraw only the hits until none
remain (vectorised rejection sampling; the expected number of rounds is 1/(1 − density)).
"""

from __future__ import annotations

import numpy as np


class NegativeSampler:
    """Uniform negatives excluding each user's training positives."""

    def __init__(self, n_items: int, train_pairs: np.ndarray, max_rounds: int = 100) -> None:
        self.n_items = int(n_items)
        self.pos_keys = np.unique(
            train_pairs[:, 0].astype(np.int64) * self.n_items + train_pairs[:, 1]
        )
        self.max_rounds = max_rounds
        counts = np.bincount(train_pairs[:, 0])
        if len(counts) and counts.max() >= self.n_items:
            raise ValueError("a user has interacted with every item: no negative exists")

    def is_positive(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        keys = users.astype(np.int64) * self.n_items + items
        idx = np.searchsorted(self.pos_keys, keys)
        idx = np.minimum(idx, len(self.pos_keys) - 1)
        return self.pos_keys[idx] == keys

    def sample(self, users: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One negative item per entry of ``users``."""
        neg = rng.integers(0, self.n_items, size=len(users))
        bad = np.flatnonzero(self.is_positive(users, neg))
        for _ in range(self.max_rounds):
            if len(bad) == 0:
                return neg
            neg[bad] = rng.integers(0, self.n_items, size=len(bad))
            bad = bad[self.is_positive(users[bad], neg[bad])]
        # dense users: fall back to an exact draw from the complement
        for k in bad:
            u = users[k]
            lo, hi = np.searchsorted(self.pos_keys, [u * self.n_items, (u + 1) * self.n_items])
            pos = self.pos_keys[lo:hi] - u * self.n_items
            free = np.setdiff1d(np.arange(self.n_items), pos, assume_unique=True)
            neg[k] = rng.choice(free)
        return neg
