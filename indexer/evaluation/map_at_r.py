"""mAP@R over a whole index, exactly, without asking faiss for R (thousands of) neighbours per query.

R is the number of index items of the query's class (itself excluded), so the ranking must reach
every one of them: faiss's heap search with k = R is slow for R in the thousands. Here queries are
taken class by class (one R per batch); a batch's similarities come from one matrix product and are
shifted to be positive, so that their float32 bits, read as int32, sort like the similarities; the
lowest bit is replaced by the relevance flag; ``np.partition`` finds the R best keys of each row and
only those R are sorted. Three passes over the matrix, in place.

Ties: equal similarities rank the irrelevant item first, a pessimistic, deterministic convention
(faiss's own order among equal scores is arbitrary). The shift and the flag bit cost precision:
similarities closer than about 5e-7 (unit vectors, inner product) count as equal, below the
rounding error of float32 dot products over a few hundred dimensions. Real embeddings rarely tie;
degenerate ones (an untrained model mapping many images to one vector) do, and then mAP@R can sit
well below precision@k, whose neighbours faiss ordered among the ties its own way.
"""
from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from indexer.evaluation.metrics import average_precision_at_r

log = logging.getLogger(__name__)

# Rows of the similarity matrix handled at once: 256 x 60,000 float32 = 61 MB per thread.
BATCH_ROWS = 256
THREADS = 2


class _Buffers(threading.local):
    """Each thread's reusable similarity matrix (a fresh 61 MB array costs page faults on every batch)."""

    scores: np.ndarray | None = None


def _sort_keys(xq: np.ndarray, xb: np.ndarray, xb_norms: np.ndarray | None, irrelevant: np.ndarray,
               shift: np.float32, buffers: _Buffers) -> np.ndarray:
    """int32 keys, larger = nearer, ordered like the similarities; the lowest bit is 1 for an irrelevant column."""
    if buffers.scores is None:
        buffers.scores = np.empty((BATCH_ROWS, xb.shape[0]), dtype=np.float32)
    scores = buffers.scores[:xq.shape[0]]
    np.matmul(xq, xb.T, out=scores)
    if xb_norms is not None:  # -(squared L2 distance) up to a per-row constant
        scores *= 2.0
        scores -= xb_norms[None, :]
    # Every score now lies in [1, 2 * shift): positive floats' bits, as integers, keep their order.
    scores += shift
    keys = scores.view(np.int32)
    keys &= np.int32(-2)
    keys |= irrelevant[None, :]
    return keys


def _shift(xq: np.ndarray, xb: np.ndarray, xb_norms: np.ndarray | None) -> np.float32:
    """1 + the largest |similarity| possible (Cauchy-Schwarz), so that similarity + shift >= 1."""
    q = float(np.sqrt((xq * xq).sum(axis=1).max(initial=0.0)))
    b = float(np.sqrt((xb * xb).sum(axis=1).max(initial=0.0)))
    bound = q * b if xb_norms is None else 2 * q * b + b * b
    return np.float32(1.0 + bound * (1 + 1e-6))


def _batch_ap(keys: np.ndarray, self_columns: np.ndarray, r: int) -> np.ndarray:
    rows = np.flatnonzero(self_columns >= 0)
    keys[rows, self_columns[rows]] = np.iinfo(np.int32).min  # a query is never its own neighbour
    count = keys.shape[1]
    best = np.partition(keys, count - r, axis=1)[:, count - r:]
    best.sort(axis=1)
    ranked_relevance = (best[:, ::-1] & 1) == 0
    return average_precision_at_r(ranked_relevance, np.full(len(best), r))


def map_at_r_per_query(
    xq: np.ndarray,
    yq: np.ndarray,
    xb: np.ndarray,
    yb: np.ndarray,
    self_positions: np.ndarray | None = None,
    metric: str = "ip",
) -> np.ndarray:
    """AP@R of each query (float64, nq; NaN where its class has no other index item).

    ``self_positions[i]`` is query i's own row in ``xb`` (-1 when it is not in the index): that row is
    skipped and R counts one item fewer.
    """
    if metric not in ("ip", "l2"):
        raise ValueError(f"metric is {metric!r}; expected 'ip' or 'l2'")
    xq = np.ascontiguousarray(xq, dtype=np.float32)
    xb = np.ascontiguousarray(xb, dtype=np.float32)
    yq, yb = np.asarray(yq).reshape(-1), np.asarray(yb).reshape(-1)
    self_positions = np.full(len(yq), -1) if self_positions is None else np.asarray(self_positions).reshape(-1)
    if not (len(xq) == len(yq) == len(self_positions)) or len(xb) != len(yb) or xq.shape[1:] != xb.shape[1:]:
        raise ValueError(f"shapes disagree: xq {xq.shape}, yq {yq.shape}, xb {xb.shape}, yb {yb.shape}, "
                         f"self_positions {self_positions.shape}")
    xb_norms = (xb * xb).sum(axis=1) if metric == "l2" else None
    shift = _shift(xq, xb, xb_norms)
    class_sizes = np.bincount(yb, minlength=int(max(yq.max(initial=0), yb.max(initial=0))) + 1)
    result = np.full(len(yq), np.nan)
    jobs = []
    for label in np.unique(yq):
        members = np.flatnonzero(yq == label)
        irrelevant = (yb != label).astype(np.int32)
        # Queries inside the index have one relevant item fewer: themselves.
        for inside in (False, True):
            group = members[(self_positions[members] >= 0) == inside]
            r = int(class_sizes[label]) - int(inside)
            if r > 0:
                jobs += [(group[start:start + BATCH_ROWS], irrelevant, r)
                         for start in range(0, group.size, BATCH_ROWS)]
    buffers = _Buffers()

    def run(job: tuple[np.ndarray, np.ndarray, int]) -> None:
        rows, irrelevant, r = job
        keys = _sort_keys(xq[rows], xb, xb_norms, irrelevant, shift, buffers)
        result[rows] = _batch_ap(keys, self_positions[rows], r)

    # numpy's partition, sort and element-wise passes run on one core and release the GIL: two
    # threads keep both cores busy, one in its matrix product while the other partitions.
    with ThreadPoolExecutor(max_workers=max(1, min(THREADS, len(jobs)))) as pool:
        list(pool.map(run, jobs))
    return result
