"""kNN classification over faiss search results: pure functions over arrays (D, I in; scores out)."""
from __future__ import annotations

import numpy as np

# Added to every valid neighbour's weight so that a query whose neighbours all weigh 0
# (inner products <= 0, or huge L2 distances) still gets a plain majority vote.
EPSILON = 1e-6


def describe_weighting(metric: str) -> str:
    """How knn_vote weighs one neighbour under ``metric``, in words for reports."""
    if metric == "ip":
        return f"similarity-weighted vote: weight = max(similarity, 0) + {EPSILON:g}"
    if metric == "l2":
        return f"distance-weighted vote: weight = exp(-squared L2 distance) + {EPSILON:g}"
    raise ValueError(f"metric is {metric!r}; expected 'ip' or 'l2'")


def neighbour_weights(D: np.ndarray, metric: str = "ip") -> np.ndarray:
    """The vote weight of each neighbour (same shape as D), see describe_weighting.

    For "l2", faiss returns squared distances d; for unit vectors d = 2 - 2 cos, so exp(-d)
    grows with the cosine like the "ip" weight, stays in (0, 1] and needs no guard against
    exact duplicates (d = 0), which 1 / d would.
    """
    D = np.asarray(D, dtype=np.float64)
    if metric == "ip":
        return np.maximum(D, 0.0) + EPSILON
    if metric == "l2":
        return np.exp(-np.maximum(D, 0.0)) + EPSILON
    raise ValueError(f"metric is {metric!r}; expected 'ip' or 'l2'")


def knn_vote(
    D: np.ndarray, I: np.ndarray, labels: np.ndarray, num_classes: int, metric: str = "ip"
) -> np.ndarray:
    """Per-query class scores (nq x num_classes float32, rows summing to 1) from a weighted neighbour vote.

    ``I`` indexes ``labels``; entries of -1 (faiss: no neighbour) do not vote. A query with no
    neighbour at all scores 0 for every class.
    """
    D, I, labels = np.asarray(D), np.asarray(I), np.asarray(labels)
    if D.shape != I.shape or D.ndim != 2:
        raise ValueError(f"D and I must be matching nq x k arrays, got shapes {D.shape} and {I.shape}")
    if I.size and I.max() >= labels.shape[0]:
        raise ValueError(f"I refers to row {I.max()} but only {labels.shape[0]} labels were given")
    nq = D.shape[0]
    valid = I >= 0
    voters = labels[I[valid]]
    # Only the voters' labels are checked: the web app votes over the whole catalog's labels for every query,
    # and checking them all would cost each query a pass over the catalog.
    if voters.size and (voters.min() < 0 or voters.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}), found {voters.min()}..{voters.max()}")
    rows = np.broadcast_to(np.arange(nq)[:, None], I.shape)
    cells = rows[valid] * num_classes + voters
    weights = neighbour_weights(D, metric)[valid]
    scores = np.bincount(cells, weights=weights, minlength=nq * num_classes).reshape(nq, num_classes)
    totals = scores.sum(axis=1, keepdims=True)
    np.divide(scores, totals, out=scores, where=totals > 0)
    return scores.astype(np.float32)


def top_classes(scores: np.ndarray, n: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """The n best classes per query (nq x n int64) and their scores, best first, ties to the lower class."""
    scores = np.asarray(scores)
    if scores.ndim != 2:
        raise ValueError(f"scores must be an nq x num_classes array, got shape {scores.shape}")
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    n = min(n, scores.shape[1])
    # A stable sort of the negated scores keeps equal scores in class order.
    classes = np.argsort(-scores, axis=1, kind="stable")[:, :n].astype(np.int64)
    return classes, np.take_along_axis(scores, classes, axis=1)


def rank_classes(scores: np.ndarray, nearest: np.ndarray, n: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """The n best classes per query (nq x n int64) and their vote scores, best first: by vote score, then,
    for equal scores (every class without a vote among them), by the similarity of the class's nearest
    item (``nearest``, nq x num_classes, indexer.evaluation.class_nearest), then class order."""
    scores, nearest = np.asarray(scores), np.asarray(nearest)
    if scores.ndim != 2 or scores.shape != nearest.shape:
        raise ValueError(f"scores and nearest must be matching nq x num_classes arrays, got shapes {scores.shape} "
                         f"and {nearest.shape}")
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    n = min(n, scores.shape[1])
    # lexsort's last key sorts first; it is stable, so equal keys stay in class order.
    classes = np.lexsort((-nearest, -scores), axis=1)[:, :n].astype(np.int64)
    return classes, np.take_along_axis(scores, classes, axis=1)


def exclude_self(D: np.ndarray, I: np.ndarray, query_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Drop each query's own row from its neighbours; from a k+1 search this leaves k columns.

    Where a query's own row is not among its neighbours (ties with exact duplicates can push it
    out), the last, farthest neighbour is dropped instead, so every row keeps the same width.
    """
    D, I = np.asarray(D), np.asarray(I)
    query_ids = np.asarray(query_ids).reshape(-1)
    if D.shape != I.shape or D.ndim != 2 or I.shape[0] != query_ids.shape[0]:
        raise ValueError(
            f"D {D.shape}, I {I.shape} and query_ids {query_ids.shape} must describe the same nq queries"
        )
    if I.shape[1] < 2:
        raise ValueError("exclude_self needs at least 2 neighbours per query (search k + 1)")
    is_self = I == query_ids[:, None]
    drop = np.where(is_self.any(axis=1), is_self.argmax(axis=1), I.shape[1] - 1)
    keep = np.ones(I.shape, dtype=bool)
    keep[np.arange(I.shape[0]), drop] = False
    width = I.shape[1] - 1
    return D[keep].reshape(-1, width), I[keep].reshape(-1, width)
