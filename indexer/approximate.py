"""Approximate FAISS indexes (IVF, HNSW) for large catalogs, with their search breadth tuned against exact search.

Pure functions over arrays in faiss's names (``xb`` database, ``xq`` queries, ``I`` neighbour ids).
An approximate index answers a query by looking at part of the catalog: IVF probes ``nprobe`` of its
``nlist`` k-means cells, HNSW walks a graph keeping ``efSearch`` candidates. How much to look at is
tuned when the index is built: the smallest setting whose recall@10 against an exact search reaches
the target, for catalog vectors held out of the index until then (so they query it as new images would).
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import faiss
import numpy as np

log = logging.getLogger(__name__)

KINDS = ("auto", "flat", "ivf", "hnsw")
# faiss warns below 39 training points per k-means centroid: fewer make poor cells.
MIN_POINTS_PER_CELL = 39
HNSW_NEIGHBOURS = 32  # M: graph degree; 32 is faiss's usual choice for 64-256-d vectors
HNSW_EF_CONSTRUCTION = 80
HNSW_EF_SEARCH = (16, 32, 64, 128, 256, 512, 1024)
TUNING_QUERIES = 1000
TUNING_K = 10
# IVF cells trained on an earlier catalog are kept while they still fit it: retrained once its vectors lie
# this much farther from their nearest cell centre than the training catalog's did, or once the number of
# cells the catalog now calls for is this many times more or fewer.
RETRAIN_ERROR_GROWTH = 1.10
RETRAIN_NLIST_FACTOR = 2
ERROR_SAMPLE = 20_000
# Below this an exact search is instant and an approximate one has too little to learn its cells from.
MIN_APPROXIMATE = 200


@dataclass(frozen=True)
class IndexPlan:
    """Which index to build and with what settings; ``parameters`` go into the sidecar."""

    kind: str  # "flat", "ivf" or "hnsw"
    parameters: dict[str, Any] = field(default_factory=dict)


def choose_kind(count: int, kind: str, approximate_from: int) -> str:
    """The index kind for ``count`` vectors: ``kind`` itself, or for "auto" flat below ``approximate_from``, else IVF."""
    if kind not in KINDS:
        raise ValueError(f"index kind is {kind!r}; expected one of {', '.join(KINDS)}")
    if kind != "auto":
        return kind
    return "ivf" if count >= max(approximate_from, MIN_APPROXIMATE) else "flat"


def default_nlist(count: int) -> int:
    """IVF cells for ``count`` vectors: about 4·√N, with at least 39 vectors per cell to train on."""
    return max(1, min(round(4 * math.sqrt(count)), count // MIN_POINTS_PER_CELL))


def faiss_metric(metric: str) -> int:
    """faiss's constant for "ip" (inner product) or "l2"."""
    if metric == "ip":
        return faiss.METRIC_INNER_PRODUCT
    if metric == "l2":
        return faiss.METRIC_L2
    raise ValueError(f"metric is {metric!r}; expected 'ip' or 'l2'")


def empty_index(kind: str, dimension: int, metric: str, nlist: int = 1) -> faiss.Index:
    """An untrained, empty IVF (``nlist`` cells) or HNSW index that stores the ids it is given."""
    if kind == "ivf":
        quantizer = faiss.IndexFlatIP(dimension) if metric == "ip" else faiss.IndexFlatL2(dimension)
        return faiss.IndexIVFFlat(quantizer, dimension, nlist, faiss_metric(metric))
    if kind == "hnsw":
        graph = faiss.IndexHNSWFlat(dimension, HNSW_NEIGHBOURS, faiss_metric(metric))
        graph.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        return faiss.IndexIDMap(graph)  # HNSW numbers vectors in insertion order; the map keeps the rows'
    raise ValueError(f"{kind!r} is not an approximate index kind (ivf, hnsw)")


def train_ivf(index: faiss.Index, xb: np.ndarray, gpu: bool = False, seed: int = 0) -> None:
    """k-means for the IVF cells over all of ``xb``; the assignment step runs on the GPU when ``gpu``."""
    ivf = faiss.extract_index_ivf(index)
    if not 1 <= ivf.nlist <= len(xb):
        raise ValueError(f"index.nlist must lie in 1..{len(xb)} (the number of vectors), got {ivf.nlist}")
    ivf.cp.seed = seed
    if gpu:
        ivf.clustering_index = faiss.index_cpu_to_all_gpus(faiss.IndexFlatL2(xb.shape[1]))
    ivf.train(xb)
    ivf.clustering_index = None


def quantization_error(index: faiss.Index, xb: np.ndarray, seed: int = 0) -> float:
    """The mean squared distance from (up to 20,000 of) ``xb``'s vectors to their nearest IVF cell centre:
    how well the cells fit the catalog."""
    ivf = faiss.extract_index_ivf(index)
    rows = np.random.default_rng(seed).permutation(len(xb))[:ERROR_SAMPLE]
    sample = np.ascontiguousarray(xb[np.sort(rows)], dtype=np.float32)
    centres = ivf.quantizer.reconstruct_n(0, ivf.nlist)
    _, nearest = ivf.quantizer.search(sample, 1)
    return float(np.mean(np.sum((sample - centres[nearest[:, 0]]) ** 2, axis=1)))


def why_retrain(previous: faiss.Index, parameters: dict[str, Any], xb: np.ndarray, nlist: int) -> str | None:
    """Why the IVF cells of ``previous`` (its sidecar ``parameters``) no longer fit ``xb``; None if they do."""
    cells, trained_error = faiss.extract_index_ivf(previous).nlist, parameters.get("quantization_error")
    if trained_error is None:
        return "the index does not say how well its cells fit when they were trained"
    if previous.d != xb.shape[1]:
        return f"the vectors have {xb.shape[1]} dimensions, the cells {previous.d}"
    if not cells / RETRAIN_NLIST_FACTOR <= nlist <= cells * RETRAIN_NLIST_FACTOR:
        return f"the catalog now calls for {nlist} cells, the index has {cells}"
    error = quantization_error(previous, xb)
    if error > RETRAIN_ERROR_GROWTH * trained_error:
        return f"the vectors lie {error / trained_error:.2f} x farther from their cells than when they were trained"
    return None


def set_search_breadth(index: faiss.Index, kind: str, value: int) -> None:
    """Set how much of the catalog a query looks at: nprobe (IVF) or efSearch (HNSW); flat ignores it."""
    if kind == "ivf":
        faiss.extract_index_ivf(index).nprobe = int(value)
    elif kind == "hnsw":
        _hnsw_of(index).hnsw.efSearch = int(value)


def _hnsw_of(index: faiss.Index) -> faiss.Index:
    """The HNSW index itself, inside the id map that empty_index wraps it in."""
    return faiss.downcast_index(index.index if isinstance(index, faiss.IndexIDMap) else index)


def kind_of(index: faiss.Index) -> str:
    """"ivf", "hnsw" or "flat" (anything else: exact indexes, GPU indexes and look-alikes, searched as they are)."""
    if not isinstance(index, faiss.Index):
        return "flat"
    if faiss.try_extract_index_ivf(index) is not None:
        return "ivf"
    wrapped = isinstance(index, faiss.IndexIDMap)  # only what empty_index makes is looked inside
    return "hnsw" if isinstance(_hnsw_of(index) if wrapped else index, faiss.IndexHNSW) else "flat"


def search_breadth(index: faiss.Index, kind: str) -> int:
    """The index's own nprobe (IVF) or efSearch (HNSW)."""
    if kind == "ivf":
        return int(faiss.extract_index_ivf(index).nprobe)
    return int(_hnsw_of(index).hnsw.efSearch)


def widest_breadth(index: faiss.Index, kind: str) -> int:
    """The breadth at which a search looks at everything: every cell (IVF), every vector (HNSW)."""
    return int(faiss.extract_index_ivf(index).nlist) if kind == "ivf" else max(1, int(index.ntotal))


def search_parameters(kind: str, breadth: int, selector: faiss.IDSelector | None) -> faiss.SearchParameters:
    """Per-search parameters: the breadth (faiss's own defaults would override the index's tuned one),
    and only the selector's rows when there is one."""
    if kind == "ivf":
        params = faiss.SearchParametersIVF()
        params.nprobe = int(breadth)
    elif kind == "hnsw":
        params = faiss.SearchParametersHNSW()
        params.efSearch = int(breadth)
    else:
        params = faiss.SearchParameters()
    if selector is not None:
        params.sel = selector
    return params


def search_filled(index: faiss.Index, xq: np.ndarray, k: int, available: int,
                  selector: faiss.IDSelector | None = None) -> tuple[np.ndarray, np.ndarray]:
    """D, I of the k nearest rows (of the selector's, if given), with the first min(k, available) filled.

    An approximate index looks at part of the catalog, tuned for the first page of results: a deep page,
    or one category's rows, can hold fewer than k rows in the cells a query probes, and the answer would
    come back short (ids of -1). The queries left short search again, looking twice as wide each time,
    up to everything, so that paging and filters behave as they do over an exact index.
    """
    kind = kind_of(index)
    if kind == "flat":
        if selector is None:
            return index.search(xq, k)
        return index.search(xq, k, params=search_parameters(kind, 0, selector))
    breadth = search_breadth(index, kind)
    D, I = index.search(xq, k, params=search_parameters(kind, breadth, selector))
    wanted = min(k, available)
    short = (I[:, :wanted] < 0).any(axis=1)
    widest = widest_breadth(index, kind)
    while short.any() and breadth < widest:
        breadth = min(2 * breadth, widest)
        D[short], I[short] = index.search(xq[short], k, params=search_parameters(kind, breadth, selector))
        short[short] = (I[short, :wanted] < 0).any(axis=1)
    return D, I


def recall_at_k(I: np.ndarray, I_exact: np.ndarray, D: np.ndarray | None = None, D_exact: np.ndarray | None = None,
                metric: str = "ip") -> float:
    """Mean over queries of |found ∩ exact| / |exact| (ids of -1 in the exact answer do not count).

    Given the distances too, a found row that ties the exact k-th distance counts as well: when many
    catalog vectors are equally near (duplicate images, or an untrained embedder that maps thousands of
    images to one vector), which of them the exact search names is arbitrary, and counting by id alone
    once made an exhaustive IVF search look like recall 0.32.
    """
    I, I_exact = np.asarray(I), np.asarray(I_exact)
    if I.shape[0] != I_exact.shape[0]:
        raise ValueError(f"I has {I.shape[0]} queries but I_exact {I_exact.shape[0]}")
    sizes = (I_exact >= 0).sum(axis=1)
    hits = np.array([len(np.intersect1d(found[found >= 0], exact[exact >= 0])) for found, exact in zip(I, I_exact)])
    if D is not None and D_exact is not None:
        hits = np.maximum(hits, _as_near_as_exact(np.asarray(D), I, np.asarray(D_exact), sizes, metric))
    return float(np.mean(np.divide(np.minimum(hits, sizes), np.maximum(sizes, 1))))


def _as_near_as_exact(D: np.ndarray, I: np.ndarray, D_exact: np.ndarray, sizes: np.ndarray, metric: str) -> np.ndarray:
    """Per query, how many found rows are at least as near as the exact answer's farthest (within float rounding)."""
    last = D_exact[np.arange(len(D_exact)), np.maximum(sizes - 1, 0)][:, None]
    tolerance = 1e-5 * np.maximum(1.0, np.abs(last))
    near = D >= last - tolerance if metric == "ip" else D <= last + tolerance
    return ((I >= 0) & near).sum(axis=1)


def held_out_rows(count: int, queries: int = TUNING_QUERIES, seed: int = 0) -> np.ndarray:
    """Rows kept out of the index while its search breadth is tuned (a tenth of the catalog at most)."""
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(count, size=max(1, min(queries, count // 10)), replace=False))


def exact_neighbours(xb: np.ndarray, ids: np.ndarray, xq: np.ndarray, metric: str,
                     k: int) -> tuple[np.ndarray, np.ndarray]:
    """The exact k nearest of ``xb`` (whose rows are named ``ids``) for each query: distances, and ids."""
    exact = faiss.IndexFlatIP(xb.shape[1]) if metric == "ip" else faiss.IndexFlatL2(xb.shape[1])
    exact.add(xb)
    D, I = exact.search(xq, min(k, len(xb)))
    return D, np.where(I >= 0, ids[np.maximum(I, 0)], -1)


def tune_search_breadth(index: faiss.Index, kind: str, xq: np.ndarray, exact: tuple[np.ndarray, np.ndarray],
                        target: float, metric: str = "ip") -> tuple[int, float]:
    """The smallest nprobe / efSearch whose recall against the ``exact`` (D, I) reaches ``target``; sets it.

    Recall grows with the breadth, so a doubling search followed by a bisection finds the smallest
    one. Returns (breadth, recall at it); the largest breadth tried when none reaches the target.
    """
    D_exact, I_exact = exact
    k = I_exact.shape[1]
    candidates = _breadths(index, kind)
    measured: dict[int, float] = {}

    def recall(value: int) -> float:
        if value not in measured:
            set_search_breadth(index, kind, value)
            D, I = index.search(xq, k)
            measured[value] = recall_at_k(I, I_exact, D, D_exact, metric)
        return measured[value]

    high = next((value for value in candidates if recall(value) >= target), None)
    if high is None:
        best = candidates[-1]
        log.warning("%s: recall@%d reaches only %.3f at the widest search (%d), below the target %.3f",
                    kind, k, recall(best), best, target)
        set_search_breadth(index, kind, best)
        return best, recall(best)
    low = max((value for value in measured if value < high), default=0)  # largest known to miss
    while high - low > 1:
        middle = (low + high) // 2
        if recall(middle) >= target:
            high = middle
        else:
            low = middle
    set_search_breadth(index, kind, high)
    log.info("%s search breadth %d: recall@%d %.3f against exact (target %.3f, %d queries)",
             kind, high, k, recall(high), target, len(xq))
    return high, recall(high)


def _breadths(index: faiss.Index, kind: str) -> list[int]:
    if kind == "ivf":
        nlist = faiss.extract_index_ivf(index).nlist
        doublings = [2 ** power for power in range(int(math.log2(nlist)) + 1)]
        return sorted(set(doublings + [nlist]))
    if kind == "hnsw":
        return list(HNSW_EF_SEARCH)
    raise ValueError(f"only ivf and hnsw have a search breadth, not {kind!r}")


def build_approximate(xb: np.ndarray, kind: str, metric: str, *, nlist: int = 0, nprobe: int = 0,
                      recall_target: float = 0.97, gpu: bool = False, seed: int = 0,
                      cells_from: tuple[faiss.Index, dict[str, Any]] | None = None) -> tuple[faiss.Index, IndexPlan]:
    """An IVF or HNSW index over ``xb`` (on the CPU) whose search breadth is given or tuned, and its plan.

    The breadth is tuned on up to 1,000 catalog rows held out of the index until the end, so they
    query it as new images would: a row already in the index finds itself and flatters the recall.
    ``cells_from``: an earlier IVF index and its sidecar parameters whose trained cells to reuse (k-means
    is most of an IVF build); the caller has checked that they still fit (why_retrain).
    """
    if len(xb) < MIN_APPROXIMATE:
        raise ValueError(f"an approximate ({kind}) index needs at least {MIN_APPROXIMATE} vectors, not {len(xb)}; "
                         "set index.kind to flat or auto")
    parameters: dict[str, Any] = {}
    if kind == "ivf" and cells_from is not None:
        index = faiss.clone_index(cells_from[0])
        index.reset()  # the vectors go; the trained cells stay
        parameters |= {key: cells_from[1][key] for key in ("trained_on", "quantization_error")}
        parameters |= {"nlist": faiss.extract_index_ivf(index).nlist, "cells": "kept"}
    elif kind == "ivf":
        parameters["nlist"] = nlist or default_nlist(len(xb))
        index = empty_index(kind, xb.shape[1], metric, parameters["nlist"])
        train_ivf(index, xb, gpu=gpu, seed=seed)
        parameters |= {"trained_on": len(xb), "quantization_error": quantization_error(index, xb),
                       "cells": "trained"}
    else:
        index = empty_index(kind, xb.shape[1], metric)
        parameters |= {"M": HNSW_NEIGHBOURS, "efConstruction": HNSW_EF_CONSTRUCTION}
    held = held_out_rows(len(xb), seed=seed)
    kept = np.setdiff1d(np.arange(len(xb)), held)
    index.add_with_ids(xb[kept], kept.astype(np.int64))
    D_exact, I_exact = exact_neighbours(xb[kept], kept, xb[held], metric, TUNING_K)
    if nprobe:
        set_search_breadth(index, kind, nprobe)
        D, I = index.search(xb[held], I_exact.shape[1])
        breadth, recall = nprobe, recall_at_k(I, I_exact, D, D_exact, metric)
    else:
        breadth, recall = tune_search_breadth(index, kind, xb[held], (D_exact, I_exact), recall_target, metric)
    index.add_with_ids(xb[held], held.astype(np.int64))
    name = "nprobe" if kind == "ivf" else "efSearch"
    parameters |= {name: breadth, f"recall_at_{TUNING_K}": round(recall, 4), "recall_target": recall_target,
                   "tuning_queries": len(held)}
    return index, IndexPlan(kind, parameters)
