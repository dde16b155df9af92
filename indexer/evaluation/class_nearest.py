"""Each query's similarity to the nearest index item of every class: how a kNN ranks the classes its vote left out.

A vote over k = 10 neighbours names at most a few classes; a top-5 over those alone can never exceed the
share of queries with a neighbour of their class among the 10, however good the top-1. Ranking the
classes without a vote by their nearest item makes top-n a ranking of n classes, as a classifier's is.
One matrix product per batch of queries over the whole index (the cost of one exact search), then a
maximum per class over the columns, sorted by class once.
"""
from __future__ import annotations

import numpy as np

BATCH_ROWS = 256


def nearest_by_class(
    xq: np.ndarray,
    xb: np.ndarray,
    yb: np.ndarray,
    num_classes: int,
    metric: str = "ip",
    self_positions: np.ndarray | None = None,
) -> np.ndarray:
    """nq x num_classes float32: per query, the similarity of each class's nearest index item (larger = nearer);
    -inf for a class with no item (besides the query itself).

    Similarities are inner products, or for "l2" 2·q·b - |b|², which orders a query's items as minus
    the squared distance does. ``self_positions[i]`` is query i's own row in ``xb`` (-1 when it is not
    in the index): that row is skipped.
    """
    if metric not in ("ip", "l2"):
        raise ValueError(f"metric is {metric!r}; expected 'ip' or 'l2'")
    xq = np.ascontiguousarray(xq, dtype=np.float32)
    yb = np.asarray(yb).reshape(-1)
    self_positions = np.full(len(xq), -1) if self_positions is None else np.asarray(self_positions).reshape(-1)
    if len(xb) != len(yb) or len(self_positions) != len(xq) or xq.shape[1:] != np.shape(xb)[1:]:
        raise ValueError(f"shapes disagree: xq {xq.shape}, xb {np.shape(xb)}, yb {yb.shape}, "
                         f"self_positions {self_positions.shape}")
    if yb.size and (yb.min() < 0 or yb.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}), found {yb.min()}..{yb.max()}")
    # Items sorted by class, so that each class is one run of columns.
    order = np.argsort(yb, kind="stable")
    xb = np.ascontiguousarray(np.asarray(xb, dtype=np.float32)[order])
    present = np.flatnonzero(np.bincount(yb, minlength=num_classes))
    starts = np.searchsorted(yb[order], present)
    column_of_row = np.empty_like(order)
    column_of_row[order] = np.arange(len(order))
    self_columns = np.where(self_positions >= 0, column_of_row[np.maximum(self_positions, 0)], -1)
    xb_norms = (xb * xb).sum(axis=1) if metric == "l2" else None

    result = np.full((len(xq), num_classes), -np.inf, dtype=np.float32)
    if not present.size:
        return result
    for start in range(0, len(xq), BATCH_ROWS):
        rows = slice(start, start + BATCH_ROWS)
        scores = xq[rows] @ xb.T
        if xb_norms is not None:
            scores *= 2.0
            scores -= xb_norms[None, :]
        inside = np.flatnonzero(self_columns[rows] >= 0)
        scores[inside, self_columns[rows][inside]] = -np.inf  # a query is never its own nearest item
        result[rows, present] = np.maximum.reduceat(scores, starts, axis=1)
    return result
