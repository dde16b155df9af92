"""Retrieval and classification metrics as pure functions over arrays (labels, neighbour lists, predictions).

Conventions, shared by every function here and written into each report:

- ``neighbour_labels`` is nq x k: the classes of each query's neighbours, nearest first, -1 where
  faiss found no neighbour. A neighbour is *relevant* when its class is the query's class.
- precision@k = relevant neighbours among the first k / k (a missing neighbour counts as not relevant,
  so a class with fewer than k other items cannot reach 1).
- recall@k is the deep-metric-learning literature's hit rate: 1 when at least one of the first k
  neighbours is relevant, else 0 (not the fraction of all relevant items found).
- top-n kNN accuracy: the true class is among the n classes with the largest vote.
- mAP@R (Musgrave et al., "A Metric Learning Reality Check", 2020): R = the number of relevant items
  in the index; AP@R = (1/R) * sum over ranks i <= R of P(i) * rel(i). Undefined (NaN) when R = 0.
- Per-class values average a class's queries; classes without queries (or with only NaN values) get
  NaN. Micro averages run over all queries, macro averages over the classes that have a value.
"""
from __future__ import annotations

import numpy as np


def neighbour_labels(I: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The class of each neighbour (same shape as I), -1 where I is -1 (no neighbour)."""
    I, labels = np.asarray(I), np.asarray(labels)
    return np.where(I >= 0, labels[np.maximum(I, 0)], -1)


def relevance(neighbour_classes: np.ndarray, query_labels: np.ndarray) -> np.ndarray:
    """nq x k booleans: is each neighbour of the query's class."""
    neighbour_classes = np.asarray(neighbour_classes)
    query_labels = np.asarray(query_labels).reshape(-1)
    if neighbour_classes.ndim != 2 or neighbour_classes.shape[0] != query_labels.shape[0]:
        raise ValueError(f"neighbour classes {neighbour_classes.shape} and query labels {query_labels.shape} "
                         "must describe the same nq queries")
    return (neighbour_classes == query_labels[:, None]) & (neighbour_classes >= 0)


def _first_k(relevant: np.ndarray, k: int) -> np.ndarray:
    relevant = np.asarray(relevant, dtype=bool)
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if relevant.ndim != 2 or relevant.shape[1] < k:
        raise ValueError(f"need nq x k relevance with at least k={k} columns, got shape {relevant.shape}")
    return relevant[:, :k]


def precision_at_k(relevant: np.ndarray, k: int) -> np.ndarray:
    """Per query: the fraction of its first k neighbours that are relevant (float64, nq)."""
    return _first_k(relevant, k).sum(axis=1) / float(k)


def recall_at_k(relevant: np.ndarray, k: int) -> np.ndarray:
    """Per query: 1.0 when any of its first k neighbours is relevant, else 0.0 (the hit rate)."""
    return _first_k(relevant, k).any(axis=1).astype(np.float64)


def top_n_hits(predictions: np.ndarray, labels: np.ndarray, n: int) -> np.ndarray:
    """Per query: is the true class among the first n predicted classes (predictions best first, -1 = none)."""
    predictions = np.asarray(predictions)
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    return (predictions[:, :n] == np.asarray(labels).reshape(-1, 1)).any(axis=1)


def average_precision_at_r(ranked_relevance: np.ndarray, relevant_counts: np.ndarray) -> np.ndarray:
    """Per query AP@R from its ranking's relevance (nq x >= R columns, nearest first) and its R; NaN where R = 0."""
    ranked = np.asarray(ranked_relevance, dtype=bool)
    counts = np.asarray(relevant_counts, dtype=np.int64).reshape(-1)
    if ranked.ndim != 2 or ranked.shape[0] != counts.shape[0]:
        raise ValueError(f"ranked relevance {ranked.shape} and relevant counts {counts.shape} disagree")
    if counts.size and (counts.min() < 0 or counts.max() > ranked.shape[1]):
        raise ValueError(f"each R must lie in [0, {ranked.shape[1]}] (the ranking's length), "
                         f"got {counts.min()}..{counts.max()}")
    ranks = np.arange(1, ranked.shape[1] + 1)
    within_r = ranks[None, :] <= counts[:, None]
    hits = ranked & within_r
    precision_at_i = np.cumsum(hits, axis=1) / ranks[None, :]
    total = (precision_at_i * hits).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, total / np.maximum(counts, 1), np.nan)


def per_class_mean(values: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Mean of each class's per-query values (NaN values skipped); NaN for a class with none."""
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    labels = np.asarray(labels).reshape(-1)
    present = ~np.isnan(values)
    counts = np.bincount(labels[present], minlength=num_classes)
    sums = np.bincount(labels[present], weights=values[present], minlength=num_classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def micro_mean(values: np.ndarray) -> float:
    """Mean over all queries with a value; NaN when none has one."""
    values = np.asarray(values, dtype=np.float64)
    present = values[~np.isnan(values)]
    return float(present.mean()) if present.size else float("nan")


def macro_mean(class_values: np.ndarray) -> float:
    """Mean over the classes that have a value (not NaN); NaN when none has one."""
    return micro_mean(class_values)


def confusion_matrix(true: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """C x C counts: row = true class, column = predicted class; queries predicted -1 (no vote) are left out."""
    true, predicted = np.asarray(true).reshape(-1), np.asarray(predicted).reshape(-1)
    if true.shape != predicted.shape:
        raise ValueError(f"true {true.shape} and predicted {predicted.shape} labels differ in length")
    voted = predicted >= 0
    cells = true[voted] * num_classes + predicted[voted]
    return np.bincount(cells, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def confused_pairs(confusion: np.ndarray, n: int) -> list[tuple[int, int, int]]:
    """The n largest off-diagonal cells as (true, predicted, count), largest first, ties in class order; no zeros."""
    confusion = np.asarray(confusion)
    off = confusion.copy()
    np.fill_diagonal(off, 0)
    flat = off.reshape(-1)
    # A stable sort of the negated counts keeps equal counts in (true, predicted) order.
    order = np.argsort(-flat, kind="stable")[:n]
    size = confusion.shape[1]
    return [(int(cell // size), int(cell % size), int(flat[cell])) for cell in order if flat[cell] > 0]
