"""The kNN vote, top classes and self-exclusion against numbers worked out by hand."""
from __future__ import annotations

import numpy as np
import pytest

from indexer.knn import EPSILON, describe_weighting, exclude_self, knn_vote, top_classes

# Catalog rows 0..3 belong to classes 0, 1, 1, 2.
LABELS = np.array([0, 1, 1, 2])


def test_inner_product_vote_by_hand():
    e = EPSILON
    D = np.array([[0.9, 0.5, 0.3], [0.6, -0.2, 0.7], [-0.1, -0.5, -0.3]], dtype=np.float32)
    I = np.array([[0, 1, 2], [3, 1, -1], [0, 1, 2]])
    scores = knn_vote(D, I, LABELS, 3, "ip")
    # Query 0: class 0 gets 0.9 + e; class 1 gets (0.5 + e) + (0.3 + e); total 1.7 + 3e.
    # Query 1: class 2 gets 0.6 + e; class 1 gets max(-0.2, 0) + e = e; the -1 (0.7) does not vote.
    # Query 2: every similarity is <= 0, so each neighbour weighs e: a count vote, 1 for class 0, 2 for class 1.
    expected = np.array(
        [
            [(0.9 + e) / (1.7 + 3 * e), (0.8 + 2 * e) / (1.7 + 3 * e), 0.0],
            [0.0, e / (0.6 + 2 * e), (0.6 + e) / (0.6 + 2 * e)],
            [1 / 3, 2 / 3, 0.0],
        ]
    )
    assert scores.dtype == np.float32 and scores.shape == (3, 3)
    np.testing.assert_allclose(scores, expected, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, rtol=1e-6)


def test_l2_vote_by_hand():
    D = np.array([[0.0, 1.0, 2.0]], dtype=np.float32)
    I = np.array([[0, 1, 3]])
    # Weights exp(-d) + e: 1.0, 0.36787944, 0.13533528 (plus e each); total 1.50321472.
    scores = knn_vote(D, I, LABELS, 3, "l2")
    np.testing.assert_allclose(scores, [[0.66524, 0.24473, 0.09003]], atol=2e-5)


def test_query_without_neighbours_scores_zero():
    scores = knn_vote(np.zeros((2, 2), dtype=np.float32), np.array([[-1, -1], [2, -1]]), LABELS, 3)
    assert scores.tolist() == [[0.0, 0.0, 0.0], [0.0, 1.0, 0.0]]


def test_vote_matches_a_reference_loop():
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 4, size=50)
    D = rng.uniform(-0.5, 1.0, size=(30, 7)).astype(np.float32)
    I = rng.integers(-1, 50, size=(30, 7))
    expected = np.zeros((30, 4))
    for q in range(30):
        for d, i in zip(D[q], I[q]):
            if i >= 0:
                expected[q, labels[i]] += max(float(d), 0.0) + EPSILON
        if expected[q].sum():
            expected[q] /= expected[q].sum()
    np.testing.assert_allclose(knn_vote(D, I, labels, 4, "ip"), expected, rtol=1e-5, atol=1e-7)


def test_vote_rejects_bad_input():
    with pytest.raises(ValueError, match="labels must lie in"):
        knn_vote(np.zeros((1, 1)), np.zeros((1, 1), dtype=int), np.array([3]), 3)
    with pytest.raises(ValueError, match="refers to row 9"):
        knn_vote(np.zeros((1, 1)), np.array([[9]]), LABELS, 3)
    with pytest.raises(ValueError, match="matching nq x k"):
        knn_vote(np.zeros((1, 2)), np.zeros((1, 3), dtype=int), LABELS, 3)
    with pytest.raises(ValueError, match="metric is 'cosine'"):
        knn_vote(np.zeros((1, 1)), np.zeros((1, 1), dtype=int), LABELS, 3, "cosine")


def test_describe_weighting():
    assert describe_weighting("ip").startswith("similarity-weighted vote")
    assert "exp(-squared L2 distance)" in describe_weighting("l2")


def test_top_classes_sorted_with_ties_to_lower_class():
    scores = np.array([[0.2, 0.4, 0.4, 0.0], [0.1, 0.1, 0.1, 0.7]], dtype=np.float32)
    classes, best = top_classes(scores, n=3)
    assert classes.tolist() == [[1, 2, 0], [3, 0, 1]]
    np.testing.assert_allclose(best, [[0.4, 0.4, 0.2], [0.7, 0.1, 0.1]])
    # Asking for more classes than exist returns them all.
    assert top_classes(scores, n=10)[0].shape == (2, 4)


def test_exclude_self():
    D = np.array([[1.0, 0.9, 0.8], [0.7, 0.6, 0.5], [0.95, 0.94, 0.93]], dtype=np.float32)
    I = np.array([[5, 3, 9], [2, 7, 8], [4, 6, 1]])
    D2, I2 = exclude_self(D, I, np.array([5, 7, 0]))
    # Row 0 finds itself first, row 1 second; row 2 (0) is absent, so its farthest neighbour goes.
    assert I2.tolist() == [[3, 9], [2, 8], [4, 6]]
    np.testing.assert_array_equal(D2, np.array([[0.9, 0.8], [0.7, 0.5], [0.95, 0.94]], dtype=np.float32))


def test_exclude_self_needs_k_plus_one():
    with pytest.raises(ValueError, match="search k \\+ 1"):
        exclude_self(np.zeros((1, 1)), np.zeros((1, 1), dtype=int), np.array([0]))
