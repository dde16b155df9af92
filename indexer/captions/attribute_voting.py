"""Attributes by kNN voting: the weighted share of a query's neighbours labelled with each attribute."""
from __future__ import annotations

import numpy as np

from indexer.knn import neighbour_weights

QUERY_BLOCK = 1024


def vote_attributes(D: np.ndarray, I: np.ndarray, attributes: np.ndarray, metric: str = "ip") -> np.ndarray:
    """nq x A float32 in [0, 1]: the vote weight of the neighbours whose value is 1, over all their weight.

    ``attributes`` is N x A with 1 (has it), -1 (has not) and 0 (unknown, counted as not); I indexes
    its rows and -1 entries (no neighbour) do not vote.
    """
    D, I, attributes = np.asarray(D), np.asarray(I), np.asarray(attributes)
    if D.shape != I.shape or D.ndim != 2:
        raise ValueError(f"D and I must be matching nq x k arrays, got shapes {D.shape} and {I.shape}")
    if I.size and I.max() >= attributes.shape[0]:
        raise ValueError(f"I refers to row {I.max()} but only {attributes.shape[0]} items have attributes")
    weights = np.where(I >= 0, neighbour_weights(D, metric), 0.0)
    scores = np.zeros((I.shape[0], attributes.shape[1]), dtype=np.float64)
    # In blocks of queries: nq x k x A at once would be gigabytes for DeepFashion's 1,000 attributes.
    for start in range(0, I.shape[0], QUERY_BLOCK):
        block = slice(start, start + QUERY_BLOCK)
        has = attributes[np.maximum(I[block], 0)] == 1
        scores[block] = np.einsum("qk,qka->qa", weights[block], has.astype(np.float32))
    totals = weights.sum(axis=1, keepdims=True)
    np.divide(scores, totals, out=scores, where=totals > 0)
    return scores.astype(np.float32)


def top_attributes(scores: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The n best attributes per query (nq x n) and their scores, best first, ties to the lower column."""
    scores = np.asarray(scores)
    n = min(n, scores.shape[1])
    columns = np.argsort(-scores, axis=1, kind="stable")[:, :n]
    return columns, np.take_along_axis(scores, columns, axis=1)


def precision_at_n(scores: np.ndarray, truth: np.ndarray, n: int) -> float:
    """Mean share of the n best-voted attributes that the query really has, over queries that have any."""
    truth = np.asarray(truth) == 1
    rows = truth.any(axis=1)
    if not rows.any() or n < 1:
        return float("nan")
    columns, _ = top_attributes(scores[rows], n)
    return float(np.take_along_axis(truth[rows], columns, axis=1).mean())
