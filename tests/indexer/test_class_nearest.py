"""Each query's nearest item per class against a brute-force loop; classes ranked by vote, then by that item."""
from __future__ import annotations

import numpy as np
import pytest

from indexer.evaluation import class_nearest
from indexer.evaluation.class_nearest import nearest_by_class
from indexer.knn import rank_classes


def brute_force(xq, xb, yb, num_classes, metric, self_positions):
    result = np.full((len(xq), num_classes), -np.inf)
    for i, q in enumerate(xq):
        for j, (b, label) in enumerate(zip(xb, yb)):
            if j == self_positions[i]:
                continue
            similarity = float(q @ b) if metric == "ip" else -float(((q - b) ** 2).sum())
            result[i, label] = max(result[i, label], similarity)
    return result


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_the_nearest_item_of_each_class_matches_a_loop_over_every_item(metric, monkeypatch):
    monkeypatch.setattr(class_nearest, "BATCH_ROWS", 7)  # several batches, the last one short
    rng = np.random.default_rng(0)
    xb = rng.normal(size=(40, 5)).astype(np.float32)
    yb = rng.integers(0, 4, size=40)
    yb[yb == 2] = 1  # class 2 has no item at all; class 4 neither
    xq = np.concatenate([rng.normal(size=(12, 5)), xb[[3, 17, 30]]]).astype(np.float32)
    self_positions = np.array([-1] * 12 + [3, 17, 30])
    got = nearest_by_class(xq, xb, yb, 5, metric, self_positions)
    expected = brute_force(xq, xb, yb, 5, metric, self_positions)
    assert got.shape == (15, 5) and got.dtype == np.float32
    assert np.isneginf(got[:, [2, 4]]).all()
    finite = np.isfinite(expected)
    assert (np.isfinite(got) == finite).all()
    if metric == "ip":
        np.testing.assert_allclose(got[finite], expected[finite], rtol=1e-5, atol=1e-5)
    else:
        # 2·q·b - |b|² is -(squared distance) + |q|²: the same order within a query.
        shifted = got - (xq * xq).sum(axis=1, keepdims=True)
        np.testing.assert_allclose(shifted[finite], expected[finite], rtol=1e-4, atol=1e-4)


def test_a_query_never_counts_as_its_own_nearest_item():
    xb = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]], dtype=np.float32)
    got = nearest_by_class(xb[:1], xb, np.array([0, 1, 0]), 2, "ip", np.array([0]))
    # Row 0 itself (similarity 1) is skipped; its class's other item is at 0.6.
    np.testing.assert_allclose(got, [[0.6, 0.0]], atol=1e-6)


def test_bad_input_is_refused_with_the_shapes():
    with pytest.raises(ValueError, match="metric is 'cos'"):
        nearest_by_class(np.zeros((1, 2)), np.zeros((1, 2)), np.array([0]), 1, "cos")
    with pytest.raises(ValueError, match="shapes disagree"):
        nearest_by_class(np.zeros((1, 2)), np.zeros((2, 2)), np.array([0]), 1)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\), found 0..2"):
        nearest_by_class(np.zeros((1, 2)), np.zeros((2, 2)), np.array([0, 2]), 2)


def test_classes_rank_by_vote_then_by_their_nearest_item_then_in_class_order():
    scores = np.array([[0.0, 0.7, 0.0, 0.3, 0.0],
                       [0.5, 0.0, 0.5, 0.0, 0.0]], dtype=np.float32)
    nearest = np.array([[0.2, 0.9, 0.5, 0.8, -np.inf],
                        [0.1, 0.4, 0.3, 0.4, 0.4]], dtype=np.float32)
    classes, class_scores = rank_classes(scores, nearest, 5)
    # Query 0: votes 1 then 3; unvoted 2 (0.5) before 0 (0.2); 4 has no item: last.
    # Query 1: a tie of votes, broken by the nearer item (2: 0.3 beats 0: 0.1); then 1, 3, 4 tie on 0.4: class order.
    assert classes.tolist() == [[1, 3, 2, 0, 4], [2, 0, 1, 3, 4]]
    np.testing.assert_allclose(class_scores, [[0.7, 0.3, 0, 0, 0], [0.5, 0.5, 0, 0, 0]], atol=1e-6)
    assert rank_classes(scores, nearest, 2)[0].tolist() == [[1, 3], [2, 0]]
    with pytest.raises(ValueError, match="matching nq x num_classes"):
        rank_classes(scores, nearest[:, :3])
