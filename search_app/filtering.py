"""Searching within one category: faiss skips the other rows itself, so results and paging stay exact."""
from __future__ import annotations

import faiss
import numpy as np

from indexer.index import search as index_search


class CategorySearch:
    """Exact k-nearest search restricted to the rows of one class, over an index of labelled rows."""

    def __init__(self, index: faiss.Index, labels: np.ndarray, num_classes: int) -> None:
        self.index = index
        self.labels = np.asarray(labels)
        self.rows = [np.flatnonzero(self.labels == label).astype(np.int64) for label in range(num_classes)]
        self._selectors = [faiss.IDSelectorBatch(rows) for rows in self.rows]

    def count(self, label: int) -> int:
        """How many rows the class has."""
        return len(self.rows[label])

    def search(self, xq: np.ndarray, label: int, k: int) -> tuple[np.ndarray, np.ndarray]:
        """D, I (1 x k) of the k nearest rows of the class; I is -1 past the class's rows."""
        k = max(1, min(k, self.count(label)))
        try:
            return index_search(self.index, xq, k, selector=self._selectors[label], available=self.count(label))
        except RuntimeError:
            # Some index types (faiss GPU) refuse selectors: search everything and keep the class's rows.
            D, I = index_search(self.index, xq, self.index.ntotal)
            keep = I[0] >= 0
            keep[keep] = self.labels[I[0][keep]] == label
            return D[:, keep][:, :k], I[:, keep][:, :k]


def without_row(D: np.ndarray, I: np.ndarray, row: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Search results of one query without one row (the query item itself); unchanged for None."""
    if row is None:
        return D, I
    keep = I[0] != row
    return D[:, keep], I[:, keep]
