"""How close a result is, told against the catalog itself. A trained embedding puts a whole page of results
within a few thousandths of cosine similarity 1, so the number says nothing to a shopper; placed among the
similarities of catalog items to their own nearest neighbours it does: "closer than 97 % of those"."""
from __future__ import annotations

import numpy as np

# Catalog items whose neighbours make the scale, and how many neighbours each.
SAMPLE = 1000
NEIGHBOURS = 10
# Words for a match percentage, from the top.
LABELS = ((90, "very close"), (60, "close"), (25, "similar"), (0, "loosely related"))


class MatchScale:
    """The sorted similarities of catalog items to their nearest other items."""

    def __init__(self, similarities: np.ndarray) -> None:
        self.similarities = np.sort(np.asarray(similarities, dtype=np.float64))

    @classmethod
    def of_catalog(cls, vectors: np.ndarray, search, to_similarity, seed: int = 0) -> MatchScale | None:
        """The scale of a catalog from up to SAMPLE of its ``vectors`` and their NEIGHBOURS nearest other rows,
        found by ``search(xq, k) -> D, I``; None for a catalog of one item."""
        count = len(vectors)
        if count < 2:
            return None
        rows = np.sort(np.random.default_rng(seed).permutation(count)[:SAMPLE])
        D, I = search(np.ascontiguousarray(vectors[rows], dtype=np.float32), min(NEIGHBOURS + 1, count))
        others = (I >= 0) & (I != rows[:, None])
        return cls(to_similarity(D)[others]) if others.any() else None

    def percent(self, similarity: float) -> int:
        """The share (0-100) of the catalog's neighbour similarities below ``similarity``."""
        below = np.searchsorted(self.similarities, similarity, side="left")
        return int(round(100 * below / len(self.similarities)))


def match_label(percent: int | None) -> str | None:
    """A match percentage in words ("very close" ... "loosely related")."""
    if percent is None:
        return None
    return next(label for floor, label in LABELS if percent >= floor)
