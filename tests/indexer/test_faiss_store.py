"""A FAISS store's category search against a numpy brute-force reference, on seeded random unit vectors."""
from __future__ import annotations

import faiss
import numpy as np
import pytest

from indexer.vector_store import FaissStore
from search_app.engine import without_row


@pytest.fixture
def data():
    rng = np.random.default_rng(3)
    xb = rng.standard_normal((300, 16)).astype(np.float32)
    xb /= np.linalg.norm(xb, axis=1, keepdims=True)
    labels = rng.integers(0, 4, size=300)
    labels[labels == 3] = 2  # class 3 has no rows
    index = faiss.IndexFlatIP(16)
    index.add(xb)
    return xb, labels, index


@pytest.mark.parametrize("label", [0, 1, 2])
@pytest.mark.parametrize("k", [1, 10, 500])
def test_the_nearest_rows_of_a_class_match_brute_force(data, label, k):
    xb, labels, index = data
    xq = xb[:1] * 0.7 + xb[1:2] * 0.3  # no ties
    D, I = FaissStore(index, labels, 4).search(xq, k, label=label)
    rows = np.flatnonzero(labels == label)
    expected = rows[np.argsort(-(xb[rows] @ xq[0]), kind="stable")][:k]
    assert I[0].tolist() == expected.tolist()
    np.testing.assert_allclose(D[0], xb[expected] @ xq[0], atol=1e-5)


def test_an_empty_class_finds_nothing(data):
    xb, labels, index = data
    store = FaissStore(index, labels, 4)
    D, I = store.search(xb[:1], 10, label=3)
    assert store.count_of(3) == 0 and (I < 0).all()


def test_without_row_drops_only_that_row():
    D, I = np.array([[0.9, 0.8, 0.7]]), np.array([[4, 2, 9]])
    assert without_row(D, I, 2)[1].tolist() == [[4, 9]] and without_row(D, I, 5)[1].tolist() == [[4, 2, 9]]
    assert without_row(D, I, None)[0] is D
