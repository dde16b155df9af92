"""kNN evaluation on a tiny hand-made catalog whose answers are known, and against a brute-force oracle."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from indexer.embeddings_file import read_embeddings
from indexer.evaluation import EvaluationError, evaluate_knn, query_neighbours
from indexer.knn import EPSILON
from tests.indexer.conftest import write_embeddings

NAMES = ["a", "b", "c", "d"]
# Row: (x, y, class, split). Class a points east, b north, c west; d only has a val row.
ROWS = [
    (1.0, 0.0, 0, "train"),
    (0.99, 0.141, 0, "train"),
    (0.0, 1.0, 1, "train"),
    (0.141, 0.99, 1, "train"),
    (-1.0, 0.0, 2, "train"),
    (0.95, 0.31, 0, "test"),  # neighbours 1, 0, 3: a wins -> top-1 hit
    (0.2, 0.98, 1, "test"),  # neighbours 3, 2, 1: b wins -> top-1 hit
    (0.9, 0.44, 1, "test"),  # neighbours 1, 0, 3: a wins, b second -> top-1 miss, top-5 hit
    (-0.9, 0.44, 2, "test"),  # neighbours 4, 2, 3: c wins -> top-1 hit
    (-0.95, -0.31, 0, "test"),  # neighbours 4, 2, 3: no vote for a -> top-1 and top-5 miss
    (0.0, -1.0, 3, "val"),
]


@pytest.fixture
def tiny(tmp_path):
    xy = np.array([row[:2] for row in ROWS], dtype=np.float32)
    xy /= np.linalg.norm(xy, axis=1, keepdims=True)
    path = write_embeddings(
        tmp_path / "embeddings.h5", xy, [row[2] for row in ROWS], [row[3] for row in ROWS], NAMES
    )
    return read_embeddings(path)


def test_known_answers(tiny):
    result = evaluate_knn(tiny, "test", ("train",), k=3)
    by_name = {row.name: row for row in result.classes}
    assert [row.name for row in result.classes] == NAMES
    assert (by_name["a"].queries, by_name["a"].top1, by_name["a"].top5) == (2, 0.5, 0.5)
    assert (by_name["b"].queries, by_name["b"].top1, by_name["b"].top5) == (2, 0.5, 1.0)
    assert (by_name["c"].queries, by_name["c"].top1, by_name["c"].top5) == (1, 1.0, 1.0)
    assert (by_name["d"].queries, by_name["d"].top1, by_name["d"].top5) == (0, None, None)
    assert (result.top1, result.top5) == pytest.approx((3 / 5, 4 / 5))
    assert (result.macro_top1, result.macro_top5) == pytest.approx(((0.5 + 0.5 + 1) / 3, (0.5 + 1 + 1) / 3))
    assert result.query_rows.tolist() == [5, 6, 7, 8, 9]
    assert result.query_labels.tolist() == [0, 1, 1, 2, 0]
    # Four classes, so four columns; classes without a vote are -1.
    assert result.predictions.tolist() == [
        [0, 1, -1, -1], [1, 0, -1, -1], [0, 1, -1, -1], [2, 1, -1, -1], [2, 1, -1, -1],
    ]
    assert result.protocol == result.protocol | {
        "query_split": "test", "index_splits": ["train"], "k": 3, "metric": "ip",
        "self_matches_excluded": False, "queries": 5, "index_items": 5,
    }
    assert result.protocol["weighting"].startswith("similarity-weighted vote")


def test_index_splits_decide_the_neighbours(tiny):
    # With val in the index, the last query's second-nearest item is the d row (0.31 beats b's -0.31).
    result = evaluate_knn(tiny, "test", ("train", "val"), k=3)
    assert result.predictions[4].tolist() == [2, 3, 1, -1] and result.protocol["index_items"] == 6


def test_self_is_never_its_own_neighbour(tiny):
    result = evaluate_knn(tiny, "train", ("train",), k=1)
    # Each train row's nearest other row shares its class, except c, the only west-pointing row,
    # whose nearest other row is b (0, 1). Counting self would give 5 / 5.
    assert result.predictions[:, 0].tolist() == [0, 0, 1, 1, 1]
    assert result.top1 == pytest.approx(4 / 5)
    assert result.protocol["self_matches_excluded"] is True
    _, I = query_neighbours(tiny, np.arange(5), np.arange(5), k=4, use_gpu="off")
    assert I.shape == (5, 4) and not (I == np.arange(5)[:, None]).any()


def without_val(tiny):
    """The tiny file's contents with its one val row relabelled as train."""
    return dataclasses.replace(tiny, split=np.where(tiny.split == "val", "train", tiny.split))


def test_query_split_without_rows_names_it_and_lists_the_others(tiny):
    with pytest.raises(EvaluationError, match=r"query split\(s\) val have no rows") as caught:
        evaluate_knn(without_val(tiny), "val", ("train",), 1)
    assert "train (6), test (5)" in str(caught.value) and "embeddings.h5" in str(caught.value)


def test_index_splits_without_rows(tiny):
    with pytest.raises(EvaluationError, match=r"index split\(s\) val have no rows"):
        evaluate_knn(without_val(tiny), "test", ("val",), 1)


def test_matches_a_brute_force_reference(embeddings_path):
    vectors = read_embeddings(embeddings_path)
    k = 5
    result = evaluate_knn(vectors, "test", ("train", "val"), k)
    queries, index = vectors.rows_in(("test",)), vectors.rows_in(("train", "val"))
    similarity = vectors.embeddings[queries] @ vectors.embeddings[index].T
    expected = []
    for row in similarity:
        votes = np.zeros(len(vectors.class_names))
        for position in np.argsort(-row)[:k]:
            votes[vectors.label[index[position]]] += max(row[position], 0.0) + EPSILON
        expected.append(int(np.argmax(votes)))
    assert result.predictions[:, 0].tolist() == expected
    assert result.top1 == pytest.approx(np.mean(np.array(expected) == vectors.label[queries]))
    assert sum(row.queries for row in result.classes) == queries.size == 12


def test_rejects_k_below_one(tiny):
    with pytest.raises(EvaluationError, match="k must be at least 1"):
        evaluate_knn(tiny, "test", ("train",), 0)
