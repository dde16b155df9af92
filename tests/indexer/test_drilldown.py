"""One class of an evaluation in detail: failures with their neighbours, confusions, the worst classes, strips."""
from __future__ import annotations

import numpy as np
import pytest

from indexer.evaluation.drilldown import class_confusions, class_failures, class_index, worst_classes
from indexer.evaluation.protocol import evaluate_knn
from indexer.report.failure_strips import failure_strip
from tests.indexer.test_evaluation import tiny  # noqa: F401 - the hand-made catalog of known answers


@pytest.fixture
def evaluation(tiny):  # noqa: F811
    return evaluate_knn(tiny, "test", ("train",), k=3)


def test_failures_of_a_class_with_their_voting_neighbours(evaluation):
    # Class b: q7 (row 7) has neighbours rows 1, 0 (a) and 3 (b) and is taken for a.
    [failure] = class_failures(evaluation, "b")
    assert (failure.query_row, failure.true, failure.predicted) == (7, 1, 0)
    assert failure.neighbour_rows == [1, 0, 3] and failure.neighbour_labels == [0, 0, 1]
    assert failure.vote_share > 0.5
    assert failure.neighbour_distances == sorted(failure.neighbour_distances, reverse=True)
    assert class_failures(evaluation, "c") == []


def test_confusions_worst_classes_and_names(evaluation):
    assert class_confusions(evaluation, "a") == {"predicted_as": [("c", 1)], "mistaken_for_it": [("b", 1)]}
    # a and b both have top-1 0.5 (class order breaks the tie); d has no queries and is never "worst".
    assert worst_classes(evaluation, 3) == [0, 1, 2]
    assert class_index(evaluation, 2) == 2 and class_index(evaluation, "d") == 3
    with pytest.raises(ValueError, match="unknown class 'e'; the classes are a, b, c, d"):
        class_index(evaluation, "e")


def test_a_strip_survives_images_that_cannot_be_loaded(evaluation):
    def load(row: int) -> np.ndarray:
        if row == 1:
            raise OSError("truncated file")
        if row == 0:
            return np.zeros((0, 0))  # not an image at all
        return np.full((8, 8, 3), 200, dtype=np.uint8)

    png = failure_strip(class_failures(evaluation, "a") + class_failures(evaluation, "b"), evaluation.class_names,
                        load, neighbours=3, title="a and b")
    assert png.startswith(b"\x89PNG")
    with pytest.raises(ValueError, match="no failed queries"):
        failure_strip([], evaluation.class_names, load)
