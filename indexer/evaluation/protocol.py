"""kNN accuracy and retrieval quality of catalog embeddings, per class: one split queries an exact index of others.

The metrics are defined in ``indexer.evaluation.metrics``; this module runs the search once (with the largest k
anyone asked for), votes, scores every query, and gathers the results per class, micro and macro.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from config import LookbookError
from indexer.embeddings_file import EmbeddingsFile
from indexer.evaluation import metrics
from indexer.evaluation.class_nearest import nearest_by_class
from indexer.evaluation.map_at_r import map_at_r_per_query
from indexer.index import build_index, search
from indexer.knn import describe_weighting, exclude_self, knn_vote, rank_classes, top_classes

log = logging.getLogger(__name__)

TOP_N = 5
# Per-class and averaged metrics, in report order.
METRICS = ("top1", "top3", "top5", "precision_at_k", "recall_at_k", "map_at_r")
# How top-1/3/5 rank the classes (the protocol says it in every report).
CLASS_RANKING = ("by the k neighbours' weighted vote; classes without a vote after, by their nearest index item")
CONFUSED_PAIRS = 10
LEAVE_ONE_OUT = "leave-one-out"


class EvaluationError(LookbookError, ValueError):
    """An evaluation that cannot be run on this embeddings file as asked."""


@dataclass(frozen=True)
class ClassResult:
    """The metrics of one class's queries (see indexer.evaluation.metrics); None when the class has no queries."""

    name: str
    queries: int
    top1: float | None
    top3: float | None
    top5: float | None
    precision_at_k: float | None
    recall_at_k: float | None
    map_at_r: float | None  # None also when mAP@R was not computed or the class has no other index item


@dataclass(frozen=True, eq=False)
class Evaluation:
    """The protocol, per-class, micro and macro results, each query's predictions and neighbours, and timings."""

    protocol: dict[str, Any]
    classes: list[ClassResult]
    micro: dict[str, float]  # metric -> mean over all queries (NaN: not computed)
    macro: dict[str, float]  # metric -> mean over the classes that have queries
    class_names: list[str]
    query_rows: np.ndarray  # nq: each query's row in the embeddings file
    query_labels: np.ndarray  # nq: true class
    predictions: np.ndarray  # nq x min(5, C): best classes first; -1 past the classes that got votes
    prediction_scores: np.ndarray  # nq x min(5, C): their vote shares
    neighbours: np.ndarray  # nq x max(k, sweep): file rows of the nearest index items, -1 = none
    distances: np.ndarray  # the faiss distances of those neighbours
    query_map_at_r: np.ndarray  # nq: AP@R per query, NaN where undefined or not computed
    confusion: np.ndarray  # C x C: true class (row) x top-1 prediction (column)
    row_labels: np.ndarray  # N: the class of every row of the embeddings file (to read neighbours' classes)
    sweep: list[dict[str, float]]  # one row per k: k, top1, top5, macro_top1, macro_top5, precision, recall
    timings: dict[str, float] = dataclasses.field(default_factory=dict)  # seconds per stage

    @property
    def top1(self) -> float:
        """Top-1 kNN accuracy over all queries."""
        return self.micro["top1"]

    @property
    def top5(self) -> float:
        """Top-5 kNN accuracy over all queries."""
        return self.micro["top5"]

    @property
    def macro_top1(self) -> float:
        """Top-1 kNN accuracy averaged over the classes that have queries."""
        return self.macro["top1"]

    @property
    def macro_top5(self) -> float:
        """Top-5 kNN accuracy averaged over the classes that have queries."""
        return self.macro["top5"]

    @property
    def k(self) -> int:
        """The neighbours in the vote and in precision@k / recall@k."""
        return int(self.protocol["k"])

    def confused_pairs(self, n: int = CONFUSED_PAIRS) -> list[dict[str, Any]]:
        """The n most frequent (true -> predicted) mistakes, with counts and the share of the true class's queries."""
        queries = self.confusion.sum(axis=1)
        return [
            {"true": self.class_names[true], "predicted": self.class_names[predicted], "count": count,
             "share": count / int(queries[true])}
            for true, predicted, count in metrics.confused_pairs(self.confusion, n)
        ]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (no per-query arrays); NaN stays NaN here, the writers turn it into null."""
        return {
            "protocol": self.protocol,
            "overall": {**self.micro, "queries": int(self.query_rows.size)},
            "macro": {**self.macro, "classes": sum(1 for row in self.classes if row.queries)},
            "classes": [dataclasses.asdict(row) for row in self.classes],
            "confused_pairs": self.confused_pairs(),
            "confusion": {"classes": self.class_names, "counts": self.confusion.tolist()},
            "k_sweep": self.sweep,
            "timings_s": self.timings,
        }


def _split_rows(vectors: EmbeddingsFile, splits: tuple[str, ...], role: str) -> np.ndarray:
    rows = vectors.rows_in(splits)
    if rows.size == 0:
        present = ", ".join(f"{name} ({count})" for name, count in vectors.split_counts().items()) or "none"
        raise EvaluationError(
            f"{vectors.source}: the {role} split(s) {', '.join(splits)} have no rows; "
            f"the file's splits are: {present}. Choose others with evaluate.query_split / evaluate.index_splits"
        )
    return rows


def query_neighbours(
    vectors: EmbeddingsFile,
    query_rows: np.ndarray,
    index_rows: np.ndarray,
    k: int,
    metric: str = "ip",
    use_gpu: str = "auto",
) -> tuple[np.ndarray, np.ndarray]:
    """The k nearest index rows of each query row, as file rows (-1: none); a row never finds itself."""
    index = build_index(vectors.embeddings[index_rows], metric, use_gpu)
    overlap = bool(np.isin(query_rows, index_rows).any())
    D, I = search(index, vectors.embeddings[query_rows], k + 1 if overlap else k)
    # Positions in the index -> rows of the file, keeping faiss's -1.
    I = np.where(I >= 0, index_rows[np.maximum(I, 0)], -1)
    if overlap:
        D, I = exclude_self(D, I, query_rows)
    return D, I


def _predict(
    D: np.ndarray, I: np.ndarray, labels: np.ndarray, num_classes: int, metric: str,
    nearest: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The TOP_N best classes per query and their vote scores. With ``nearest`` (indexer.evaluation.class_nearest), the
    classes without a vote follow the voted ones, nearest item first; without, they are no prediction (-1)."""
    scores = knn_vote(D, I, labels, num_classes, metric)
    if nearest is not None:
        return rank_classes(scores, nearest, TOP_N)
    predictions, prediction_scores = top_classes(scores, TOP_N)
    predictions[prediction_scores <= 0] = -1
    return predictions, prediction_scores


def accuracy_by_k(
    D: np.ndarray, I: np.ndarray, labels: np.ndarray, query_labels: np.ndarray, ks: list[int], num_classes: int,
    metric: str = "ip", nearest: np.ndarray | None = None,
) -> list[dict[str, float]]:
    """Top-1 / top-5 (micro and macro), precision@k and recall@k for each k, voting on the first k columns
    (the classes without a vote ranked by ``nearest``, as in _predict)."""
    rows = []
    relevant = metrics.relevance(metrics.neighbour_labels(I, labels), query_labels)
    for k in ks:
        predictions, _ = _predict(D[:, :k], I[:, :k], labels, num_classes, metric, nearest)
        hit1 = metrics.top_n_hits(predictions, query_labels, 1)
        hit5 = metrics.top_n_hits(predictions, query_labels, 5)
        rows.append({
            "k": int(k),
            "top1": metrics.micro_mean(hit1),
            "top5": metrics.micro_mean(hit5),
            "macro_top1": metrics.macro_mean(metrics.per_class_mean(hit1, query_labels, num_classes)),
            "macro_top5": metrics.macro_mean(metrics.per_class_mean(hit5, query_labels, num_classes)),
            "precision_at_k": metrics.micro_mean(metrics.precision_at_k(relevant, k)),
            "recall_at_k": metrics.micro_mean(metrics.recall_at_k(relevant, k)),
        })
    return rows


def _per_query(predictions: np.ndarray, labels: np.ndarray, relevant: np.ndarray, k: int) -> dict[str, np.ndarray]:
    return {
        "top1": metrics.top_n_hits(predictions, labels, 1).astype(np.float64),
        "top3": metrics.top_n_hits(predictions, labels, 3).astype(np.float64),
        "top5": metrics.top_n_hits(predictions, labels, 5).astype(np.float64),
        "precision_at_k": metrics.precision_at_k(relevant, k),
        "recall_at_k": metrics.recall_at_k(relevant, k),
    }


def _summaries(
    values: dict[str, np.ndarray], labels: np.ndarray, class_names: list[str]
) -> tuple[list[ClassResult], dict[str, float], dict[str, float]]:
    num_classes = len(class_names)
    queries = np.bincount(labels, minlength=num_classes)
    by_class = {name: metrics.per_class_mean(value, labels, num_classes) for name, value in values.items()}
    classes = [
        ClassResult(name, int(queries[c]), **{m: (None if np.isnan(by_class[m][c]) else float(by_class[m][c]))
                                              for m in METRICS})
        for c, name in enumerate(class_names)
    ]
    micro = {m: metrics.micro_mean(values[m]) for m in METRICS}
    macro = {m: metrics.macro_mean(by_class[m]) for m in METRICS}
    return classes, micro, macro


def _protocol(vectors, query_rows, index_rows, query_splits, index_splits, k, metric, leave_one_out, map_r):
    return {
        "embeddings_file": str(vectors.source),
        "model_name": vectors.model_name,
        "checkpoint_sha256": vectors.checkpoint_sha256,
        "mirror_average": vectors.mirror_average,
        "mode": LEAVE_ONE_OUT if leave_one_out else "held-out split",
        "query_split": "all" if leave_one_out else query_splits[0],
        "index_splits": ["all"] if leave_one_out else list(index_splits),
        "k": k,
        "metric": metric,
        "weighting": describe_weighting(metric),
        "class_ranking": CLASS_RANKING,
        "self_matches_excluded": bool(np.isin(query_rows, index_rows).any()),
        "queries": int(query_rows.size),
        "index_items": int(index_rows.size),
        "map_at_r": "computed over the whole index" if map_r else "not computed",
    }


def _query_and_index_rows(
    vectors: EmbeddingsFile, query_split: str, index_splits: tuple[str, ...], leave_one_out: bool
) -> tuple[np.ndarray, np.ndarray]:
    if not leave_one_out:
        return _split_rows(vectors, (query_split,), "query"), _split_rows(vectors, index_splits, "index")
    if vectors.count < 2:
        raise EvaluationError(f"{vectors.source}: leave-one-out needs at least 2 items, found {vectors.count}")
    everything = np.arange(vectors.count, dtype=np.int64)
    return everything, everything


def evaluate_knn(
    vectors: EmbeddingsFile,
    query_split: str,
    index_splits: tuple[str, ...],
    k: int,
    metric: str = "ip",
    *,
    use_gpu: str = "auto",
    leave_one_out: bool = False,
    k_sweep: tuple[int, ...] = (),
    map_at_r: bool = True,
) -> Evaluation:
    """Per-class kNN accuracy and retrieval metrics of queries against an index (or every item against the rest)."""
    if k < 1 or any(value < 1 for value in k_sweep):
        raise EvaluationError(f"k must be at least 1, got {k}" + (f" (sweep {list(k_sweep)})" if k_sweep else ""))
    index_splits = tuple(index_splits)
    query_rows, index_rows = _query_and_index_rows(vectors, query_split, index_splits, leave_one_out)
    ks = sorted(set(k_sweep) | {k})
    log.info("evaluating %d queries against %d items (%s), k=%d", query_rows.size, index_rows.size,
             LEAVE_ONE_OUT if leave_one_out else f"{query_split} -> {'+'.join(index_splits)}", k)
    timings, started = {}, time.perf_counter()
    D, I = query_neighbours(vectors, query_rows, index_rows, ks[-1], metric, use_gpu)
    timings["search"] = time.perf_counter() - started

    started = time.perf_counter()
    num_classes, labels = len(vectors.class_names), vectors.label[query_rows]
    # Each query's own row in the index, if it is there (leave-one-out): never its own neighbour.
    positions = np.minimum(np.searchsorted(index_rows, query_rows), index_rows.size - 1)
    self_positions = np.where(index_rows[positions] == query_rows, positions, -1)
    # Top-n ranks every class: those the k neighbours voted for, then the others by their nearest item.
    nearest = nearest_by_class(vectors.embeddings[query_rows], vectors.embeddings[index_rows],
                               vectors.label[index_rows], num_classes, metric, self_positions)
    timings["class_nearest"] = time.perf_counter() - started

    started = time.perf_counter()
    predictions, prediction_scores = _predict(D[:, :k], I[:, :k], vectors.label, num_classes, metric, nearest)
    relevant = metrics.relevance(metrics.neighbour_labels(I, vectors.label), labels)
    values = _per_query(predictions, labels, relevant, k)
    sweep = accuracy_by_k(D, I, vectors.label, labels, ks, num_classes, metric, nearest)
    confusion = metrics.confusion_matrix(labels, predictions[:, 0], num_classes)
    timings["vote_and_metrics"] = time.perf_counter() - started

    started = time.perf_counter()
    values["map_at_r"] = np.full(query_rows.size, np.nan)
    if map_at_r:
        values["map_at_r"] = map_at_r_per_query(vectors.embeddings[query_rows], labels, vectors.embeddings[index_rows],
                                                vectors.label[index_rows], self_positions, metric)
        timings["map_at_r"] = time.perf_counter() - started
    classes, micro, macro = _summaries(values, labels, vectors.class_names)
    return Evaluation(
        protocol=_protocol(vectors, query_rows, index_rows, (query_split,), index_splits, k, metric, leave_one_out,
                           map_at_r),
        classes=classes, micro=micro, macro=macro, class_names=list(vectors.class_names),
        query_rows=query_rows, query_labels=labels, predictions=predictions, prediction_scores=prediction_scores,
        neighbours=I, distances=D, query_map_at_r=values["map_at_r"], confusion=confusion,
        row_labels=vectors.label, sweep=sweep,
        timings=timings,
    )


def knn_top1(xq: np.ndarray, yq: np.ndarray, xb: np.ndarray, yb: np.ndarray, k: int, metric: str = "ip") -> float:
    """kNN top-1 accuracy of labelled queries against a labelled database (arrays in, a fraction out)."""
    if len(xq) == 0:
        raise EvaluationError("no queries to measure kNN accuracy on")
    num_classes = int(max(yq.max(), yb.max())) + 1
    D, I = search(build_index(np.ascontiguousarray(xb, dtype=np.float32), metric, "off"),
                  np.ascontiguousarray(xq, dtype=np.float32), min(k, len(xb)))
    predictions, _ = _predict(D, I, np.asarray(yb), num_classes, metric)
    return float(np.mean(predictions[:, 0] == np.asarray(yq)))
