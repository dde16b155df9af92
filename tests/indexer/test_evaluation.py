"""kNN evaluation on a tiny hand-made catalog whose answers are known, and against a brute-force oracle."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from indexer.embeddings_file import read_embeddings
from indexer.evaluation.protocol import EvaluationError, evaluate_knn, query_neighbours
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
    (0.9, 0.44, 1, "test"),  # neighbours 1, 0, 3: a wins, b second -> top-1 miss, top-2 hit
    (-0.9, 0.44, 2, "test"),  # neighbours 4, 2, 3: c wins -> top-1 hit
    (-0.95, -0.31, 0, "test"),  # neighbours 4, 2, 3: no vote for a, whose nearest item beats d's (none) -> third
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
    assert (by_name["a"].queries, by_name["a"].top1, by_name["a"].top3) == (2, 0.5, 1.0)
    assert (by_name["b"].queries, by_name["b"].top1, by_name["b"].top3) == (2, 0.5, 1.0)
    assert (by_name["c"].queries, by_name["c"].top1, by_name["c"].top5) == (1, 1.0, 1.0)
    assert (by_name["d"].queries, by_name["d"].top1, by_name["d"].top5) == (0, None, None)
    assert (result.top1, result.micro["top3"], result.top5) == pytest.approx((3 / 5, 1.0, 1.0))
    assert (result.macro_top1, result.macro_top5) == pytest.approx(((0.5 + 0.5 + 1) / 3, 1.0))
    assert result.query_rows.tolist() == [5, 6, 7, 8, 9]
    assert result.query_labels.tolist() == [0, 1, 1, 2, 0]
    # Four classes, so four columns, every class ranked: the voted ones by their vote, then the others by
    # their nearest item (a before d, which has no item in the index at all).
    assert result.predictions.tolist() == [
        [0, 1, 2, 3], [1, 0, 2, 3], [0, 1, 2, 3], [2, 1, 0, 3], [2, 1, 0, 3],
    ]
    # Without the ranking of unvoted classes, the last query's class would be no prediction at all.
    assert result.prediction_scores[4, 2] == 0
    assert result.protocol == result.protocol | {
        "query_split": "test", "index_splits": ["train"], "k": 3, "metric": "ip",
        "self_matches_excluded": False, "queries": 5, "index_items": 5,
    }
    assert result.protocol["weighting"].startswith("similarity-weighted vote")
    assert "without a vote after, by their nearest index item" in result.protocol["class_ranking"]


def test_index_splits_decide_the_neighbours(tiny):
    # With val in the index, the last query's second-nearest item is the d row (0.31 beats b's -0.31).
    result = evaluate_knn(tiny, "test", ("train", "val"), k=3)
    assert result.predictions[4].tolist() == [2, 3, 1, 0] and result.protocol["index_items"] == 6


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


def test_known_retrieval_metrics_per_class(tiny):
    # Neighbours (k=3) as listed in ROWS; R = index items of the class: a 2, b 2, c 1.
    # P@3: q5 2/3, q6 2/3, q7 1/3, q8 1/3 (c has one index item: 1/3 is its best), q9 0.
    # AP@R: q5 1 (rows 1, 0), q6 1 (rows 3, 2), q7 0 (rows 1, 0 are a), q8 1, q9 0 (rows 4, 2).
    result = evaluate_knn(tiny, "test", ("train",), k=3)
    by_name = {row.name: row for row in result.classes}
    a, b, c, d = (by_name[name] for name in NAMES)
    # q9's class got no vote but ranks third by its nearest item: a top-3 hit (recall@3 still counts it out).
    assert (a.top3, a.precision_at_k, a.recall_at_k, a.map_at_r) == pytest.approx((1.0, 1 / 3, 0.5, 0.5))
    assert (b.top3, b.precision_at_k, b.recall_at_k, b.map_at_r) == pytest.approx((1.0, 0.5, 1.0, 0.5))
    assert (c.top3, c.precision_at_k, c.recall_at_k, c.map_at_r) == pytest.approx((1.0, 1 / 3, 1.0, 1.0))
    assert (d.top3, d.precision_at_k, d.recall_at_k, d.map_at_r) == (None, None, None, None)
    assert result.micro == pytest.approx({"top1": 0.6, "top3": 1.0, "top5": 1.0, "precision_at_k": 0.4,
                                          "recall_at_k": 0.8, "map_at_r": 0.6})
    assert result.macro["precision_at_k"] == pytest.approx(7 / 18)
    assert result.macro["map_at_r"] == pytest.approx(2 / 3)
    assert result.query_map_at_r.tolist() == pytest.approx([1, 1, 0, 1, 0])
    # q7 (b) was taken for a, q9 (a) for c: equal counts, so class order decides.
    assert [(p["true"], p["predicted"], p["count"]) for p in result.confused_pairs()] == [("a", "c", 1), ("b", "a", 1)]
    assert result.confusion.sum() == 5 and result.confusion[1, 0] == 1


def test_the_k_sweep_votes_on_prefixes_of_one_search(tiny):
    result = evaluate_knn(tiny, "test", ("train",), k=3, k_sweep=(1, 5))
    assert [row["k"] for row in result.sweep] == [1, 3, 5]
    at = {row["k"]: row for row in result.sweep}
    # k=1: the nearest item decides: q5 a, q6 b, q7 a (wrong), q8 c, q9 c (wrong).
    assert at[1]["top1"] == pytest.approx(3 / 5) and at[1]["precision_at_k"] == pytest.approx(3 / 5)
    assert at[3]["top1"] == result.top1 and at[3]["precision_at_k"] == result.micro["precision_at_k"]
    assert result.neighbours.shape == (5, 5) and result.k == 3
    # The report's own vote uses only the first k=3 neighbours, whatever the sweep searched.
    assert result.predictions.tolist() == evaluate_knn(tiny, "test", ("train",), k=3).predictions.tolist()


def test_leave_one_out_queries_every_item_against_all_others(tiny):
    result = evaluate_knn(tiny, "test", ("train",), k=2, leave_one_out=True)
    assert result.query_rows.tolist() == list(range(len(ROWS)))
    assert result.protocol["mode"] == "leave-one-out" and result.protocol["self_matches_excluded"] is True
    assert result.protocol["index_items"] == len(ROWS)
    assert not (result.neighbours == result.query_rows[:, None]).any()
    # d has a single item: no other item of its class, so no AP@R for it.
    assert result.classes[3].map_at_r is None and result.classes[3].queries == 1
    similarity = tiny.embeddings @ tiny.embeddings.T
    np.fill_diagonal(similarity, -np.inf)
    nearest = np.argsort(-similarity, axis=1, kind="stable")[:, :2]
    expected = (tiny.label[nearest] == tiny.label[:, None]).mean(axis=1)
    assert result.micro["precision_at_k"] == pytest.approx(expected.mean())


def test_map_at_r_can_be_left_out(tiny):
    result = evaluate_knn(tiny, "test", ("train",), k=3, map_at_r=False)
    assert all(row.map_at_r is None for row in result.classes)
    assert np.isnan(result.micro["map_at_r"]) and "map_at_r" not in result.timings
    assert result.protocol["map_at_r"] == "not computed"
