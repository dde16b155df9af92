"""kNN classification accuracy of catalog embeddings: one split queries an exact index of others."""
from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from indexer.embeddings_file import EmbeddingsFile
from indexer.index import build_index, search
from indexer.knn import describe_weighting, exclude_self, knn_vote, top_classes

log = logging.getLogger(__name__)

TOP_N = 5


class EvaluationError(ValueError):
    """An evaluation that cannot be run on this embeddings file as asked."""


@dataclass(frozen=True)
class ClassResult:
    """Accuracy on the queries of one class; None when the class has no queries."""

    name: str
    queries: int
    top1: float | None
    top5: float | None


@dataclass(frozen=True, eq=False)
class Evaluation:
    """The protocol, per-class and overall accuracy, and each query's predictions."""

    protocol: dict[str, Any]
    classes: list[ClassResult]
    top1: float  # micro: over all queries
    top5: float
    macro_top1: float  # mean over the classes that have queries
    macro_top5: float
    class_names: list[str]
    query_rows: np.ndarray  # nq: each query's row in the embeddings file
    query_labels: np.ndarray  # nq: true class
    predictions: np.ndarray  # nq x min(5, C): best classes first; -1 past the classes that got votes
    prediction_scores: np.ndarray  # nq x min(5, C): their vote shares

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (no per-query arrays): protocol, overall, macro and per-class rows."""
        return {
            "protocol": self.protocol,
            "overall": {"top1": self.top1, "top5": self.top5, "queries": int(self.query_rows.size)},
            "macro": {"top1": self.macro_top1, "top5": self.macro_top5,
                      "classes": sum(1 for row in self.classes if row.queries)},
            "classes": [dataclasses.asdict(row) for row in self.classes],
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


def _class_results(
    class_names: list[str], labels: np.ndarray, hit1: np.ndarray, hit5: np.ndarray
) -> list[ClassResult]:
    num_classes = len(class_names)
    queries = np.bincount(labels, minlength=num_classes)
    hits1 = np.bincount(labels, weights=hit1, minlength=num_classes)
    hits5 = np.bincount(labels, weights=hit5, minlength=num_classes)
    return [
        ClassResult(name, int(n), float(h1 / n) if n else None, float(h5 / n) if n else None)
        for name, n, h1, h5 in zip(class_names, queries, hits1, hits5)
    ]


def _predict(
    D: np.ndarray, I: np.ndarray, labels: np.ndarray, num_classes: int, metric: str
) -> tuple[np.ndarray, np.ndarray]:
    scores = knn_vote(D, I, labels, num_classes, metric)
    predictions, prediction_scores = top_classes(scores, TOP_N)
    # A class that got no vote is not a prediction, even if it sorts into the top five.
    predictions[prediction_scores <= 0] = -1
    return predictions, prediction_scores


def _macro(values: list[float | None]) -> float:
    present = [value for value in values if value is not None]
    return float(np.mean(present)) if present else math.nan


def evaluate_knn(
    vectors: EmbeddingsFile,
    query_split: str,
    index_splits: tuple[str, ...],
    k: int,
    metric: str = "ip",
    *,
    use_gpu: str = "auto",
) -> Evaluation:
    """Top-1 / top-5 accuracy of a k-nearest-neighbour vote, per class and overall."""
    if k < 1:
        raise EvaluationError(f"k must be at least 1, got {k}")
    index_splits = tuple(index_splits)
    query_rows = _split_rows(vectors, (query_split,), "query")
    index_rows = _split_rows(vectors, index_splits, "index")
    log.info("evaluating %d %s queries against %d items of %s, k=%d",
             query_rows.size, query_split, index_rows.size, "+".join(index_splits), k)
    D, I = query_neighbours(vectors, query_rows, index_rows, k, metric, use_gpu)
    predictions, prediction_scores = _predict(D, I, vectors.label, len(vectors.class_names), metric)
    labels = vectors.label[query_rows]
    hit1 = predictions[:, 0] == labels
    hit5 = (predictions == labels[:, None]).any(axis=1)
    classes = _class_results(vectors.class_names, labels, hit1, hit5)
    protocol = {
        "embeddings_file": str(vectors.source),
        "model_name": vectors.model_name,
        "checkpoint_sha256": vectors.checkpoint_sha256,
        "query_split": query_split,
        "index_splits": list(index_splits),
        "k": k,
        "metric": metric,
        "weighting": describe_weighting(metric),
        "self_matches_excluded": bool(np.isin(query_rows, index_rows).any()),
        "queries": int(query_rows.size),
        "index_items": int(index_rows.size),
    }
    return Evaluation(
        protocol=protocol,
        classes=classes,
        top1=float(hit1.mean()),
        top5=float(hit5.mean()),
        macro_top1=_macro([row.top1 for row in classes]),
        macro_top5=_macro([row.top5 for row in classes]),
        class_names=list(vectors.class_names),
        query_rows=query_rows,
        query_labels=labels,
        predictions=predictions,
        prediction_scores=prediction_scores,
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
