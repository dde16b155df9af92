"""Every metric against hand-computed examples: ties, k larger than a class, classes without queries."""
from __future__ import annotations

import math

import numpy as np
import pytest

from indexer.evaluation import metrics

# Three queries of classes 0, 1, 2; their five nearest neighbours' classes, nearest first (-1: none).
NEIGHBOURS = np.array([
    [0, 1, 0, 0, 2],
    [0, 0, 2, 1, -1],
    [1, 1, 0, 0, 1],
])
LABELS = np.array([0, 1, 2])


def test_relevance_marks_same_class_neighbours_and_never_missing_ones():
    relevant = metrics.relevance(NEIGHBOURS, LABELS)
    assert relevant.tolist() == [[True, False, True, True, False], [False, False, False, True, False], [False] * 5]
    assert not metrics.relevance(np.array([[-1]]), np.array([-1])).any()


def test_neighbour_labels_keep_minus_one_for_missing_neighbours():
    assert metrics.neighbour_labels(np.array([[2, -1, 0]]), np.array([5, 6, 7])).tolist() == [[7, -1, 5]]


@pytest.mark.parametrize("k, precision, recall", [
    (1, [1, 0, 0], [1, 0, 0]),
    (3, [2 / 3, 0, 0], [1, 0, 0]),
    # The second query has only 4 neighbours: the missing fifth counts as not relevant.
    (5, [3 / 5, 1 / 5, 0], [1, 1, 0]),
])
def test_precision_and_recall_at_k(k, precision, recall):
    relevant = metrics.relevance(NEIGHBOURS, LABELS)
    assert metrics.precision_at_k(relevant, k) == pytest.approx(precision)
    assert metrics.recall_at_k(relevant, k).tolist() == recall


def test_k_larger_than_a_class_caps_precision():
    # The query's class has one other item in the index: a perfect ranking still scores 1/3 at k=3,
    # while recall@3 (the hit rate) is 1.
    relevant = metrics.relevance(np.array([[4, 0, 1]]), np.array([4]))
    assert metrics.precision_at_k(relevant, 3).tolist() == [pytest.approx(1 / 3)]
    assert metrics.recall_at_k(relevant, 3).tolist() == [1.0]


def test_precision_needs_k_columns():
    with pytest.raises(ValueError, match="at least k=6 columns"):
        metrics.precision_at_k(metrics.relevance(NEIGHBOURS, LABELS), 6)
    with pytest.raises(ValueError, match="k must be at least 1"):
        metrics.recall_at_k(metrics.relevance(NEIGHBOURS, LABELS), 0)


def test_top_n_hits_with_missing_predictions():
    predictions = np.array([[2, 0, -1], [1, -1, -1], [0, 1, 2]])
    assert metrics.top_n_hits(predictions, [0, 0, 2], 1).tolist() == [False, False, False]
    assert metrics.top_n_hits(predictions, [0, 0, 2], 2).tolist() == [True, False, False]
    assert metrics.top_n_hits(predictions, [0, 0, 2], 3).tolist() == [True, False, True]


def test_average_precision_at_r_by_hand():
    ranked = np.array([
        [1, 0, 1, 0, 1],  # R=2: (1/1 + 0 ...) only ranks 1..2 count: (1/1) / 2 = 0.5
        [1, 0, 1, 0, 1],  # R=3: (1/1 + 2/3) / 3
        [0, 1, 1, 1, 1],  # R=3: (1/2 + 2/3) / 3
        [1, 1, 0, 0, 0],  # R=2: perfect
        [0, 0, 0, 0, 0],  # R=0: undefined
    ], dtype=bool)
    ap = metrics.average_precision_at_r(ranked, [2, 3, 3, 2, 0])
    assert ap[:4] == pytest.approx([0.5, (1 + 2 / 3) / 3, (1 / 2 + 2 / 3) / 3, 1.0])
    assert math.isnan(ap[4])


def test_average_precision_needs_r_within_the_ranking():
    with pytest.raises(ValueError, match=r"each R must lie in \[0, 2\]"):
        metrics.average_precision_at_r(np.ones((1, 2), dtype=bool), [3])


def test_per_class_means_skip_nan_and_leave_classes_without_queries_nan():
    values = np.array([1.0, 0.0, np.nan, 0.5, np.nan])
    labels = np.array([0, 0, 1, 2, 2])
    means = metrics.per_class_mean(values, labels, 4)
    assert means[0] == 0.5 and math.isnan(means[1]) and means[2] == 0.5 and math.isnan(means[3])
    assert metrics.macro_mean(means) == 0.5
    assert metrics.micro_mean(values) == pytest.approx(0.5)
    assert math.isnan(metrics.macro_mean(np.array([np.nan])))


def test_confusion_matrix_leaves_out_queries_without_a_vote():
    confusion = metrics.confusion_matrix([0, 0, 1, 2, 2, 2], [0, 1, -1, 1, 1, 0], 3)
    assert confusion.tolist() == [[1, 1, 0], [0, 0, 0], [1, 2, 0]]


def test_confused_pairs_largest_first_ties_in_class_order_no_zeros():
    confusion = np.array([[5, 2, 0], [2, 5, 1], [0, 3, 9]])
    assert metrics.confused_pairs(confusion, 3) == [(2, 1, 3), (0, 1, 2), (1, 0, 2)]
    assert metrics.confused_pairs(confusion, 10)[-1] == (1, 2, 1)
    assert metrics.confused_pairs(np.eye(3, dtype=int), 5) == []
