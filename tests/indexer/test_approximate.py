"""Approximate indexes against the exact one on seeded clustered data: recall@10 and kNN accuracy bounds."""
from __future__ import annotations

import faiss
import numpy as np
import pytest

from config import IndexConfig
from indexer.approximate import (
    MIN_APPROXIMATE,
    build_approximate,
    choose_kind,
    default_nlist,
    recall_at_k,
)
from indexer.index import build_index, build_index_file, load_index, read_sidecar, search
from indexer.knn import knn_vote
from tests.indexer.conftest import CLASS_NAMES, write_embeddings

CLASSES = 10


def clustered(rng: np.random.Generator, count: int, centres: np.ndarray, noise: float) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors around random centres; each centre belongs to one of CLASSES classes, so classes overlap."""
    centre = rng.integers(len(centres), size=count)
    x = centres[centre] + noise * rng.standard_normal((count, centres.shape[1]))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32), centre % CLASSES


@pytest.fixture(scope="module")
def catalog_and_queries():
    """4,000 catalog vectors and 1,000 new queries from the same 30 clusters, 32-d."""
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((30, 32))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    xb, yb = clustered(rng, 4000, centres, 0.25)
    xq, yq = clustered(rng, 1000, centres, 0.25)
    return xb, yb, xq, yq


def knn_accuracy(D: np.ndarray, I: np.ndarray, yb: np.ndarray, yq: np.ndarray) -> float:
    return float((knn_vote(D, I, yb, CLASSES).argmax(axis=1) == yq).mean())


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_approximate_search_keeps_recall_and_knn_accuracy(catalog_and_queries, kind):
    xb, yb, xq, yq = catalog_and_queries
    D_exact, I_exact = search(build_index(xb, "ip", "off"), xq, 10)
    index, plan = build_approximate(xb, kind, "ip", recall_target=0.97)
    D, I = search(index, xq, 10)
    # New queries, never seen while tuning, against the exact answer.
    assert recall_at_k(I, I_exact) >= 0.95
    assert abs(knn_accuracy(D, I, yb, yq) - knn_accuracy(D_exact, I_exact, yb, yq)) <= 0.005
    assert plan.kind == kind and plan.parameters["recall_at_10"] >= 0.97
    breadth = plan.parameters["nprobe" if kind == "ivf" else "efSearch"]
    if kind == "ivf":
        assert plan.parameters["nlist"] == default_nlist(4000) and 1 <= breadth < plan.parameters["nlist"]
    if breadth > 1:  # the tuned breadth is the smallest that reaches the target: one less falls short
        _, narrower = build_approximate(xb, kind, "ip", nprobe=breadth - 1)
        assert narrower.parameters["recall_at_10"] < 0.97


def test_every_row_is_indexed_under_its_own_id(catalog_and_queries):
    xb = catalog_and_queries[0][:600]
    for kind in ("ivf", "hnsw"):
        index, _ = build_approximate(xb, kind, "l2", nprobe=default_nlist(600) if kind == "ivf" else 64)
        assert index.ntotal == 600
        assert search(index, xb, 1)[1][:, 0].tolist() == list(range(600))


def test_recall_at_k_counts_shared_neighbours():
    I_exact = np.array([[1, 2, 3, 4], [5, 6, -1, -1]])
    I = np.array([[4, 3, 9, 8], [6, 7, 5, -1]])
    assert recall_at_k(I, I_exact) == pytest.approx((2 / 4 + 2 / 2) / 2)


def test_auto_chooses_exact_below_the_threshold():
    assert choose_kind(99_999, "auto", 100_000) == "flat"
    assert choose_kind(100_000, "auto", 100_000) == "ivf"
    assert choose_kind(MIN_APPROXIMATE - 1, "auto", 1) == "flat"
    assert choose_kind(10, "hnsw", 100_000) == "hnsw"
    with pytest.raises(ValueError, match="index kind is 'lsh'"):
        choose_kind(10, "lsh", 100)


def test_default_nlist_is_four_root_n_with_enough_points_per_cell():
    assert default_nlist(70_000) == round(4 * 70_000 ** 0.5) == 1058
    assert default_nlist(1000) == 1000 // 39
    assert default_nlist(1) == 1


def test_too_few_vectors_for_an_approximate_index():
    with pytest.raises(ValueError, match="needs at least 200 vectors.*index.kind"):
        build_approximate(np.ones((50, 4), dtype=np.float32), "ivf", "ip")


def test_build_index_file_records_the_plan_and_load_restores_it(catalog_and_queries, tmp_path):
    xb, yb, xq, _ = catalog_and_queries
    path = write_embeddings(tmp_path / "embeddings.h5", xb, yb % len(CLASS_NAMES), ["train"] * len(xb))
    index_path = tmp_path / "index.faiss"
    config = IndexConfig(gpu="off", approximate_from=1000)  # kind "auto": IVF from 1,000 vectors
    report = build_index_file(path, index_path, config)
    sidecar = read_sidecar(index_path)
    assert report.kind == sidecar["kind"] == "ivf" and report.parameters == sidecar["parameters"]
    assert sidecar["request"]["kind"] == "auto" and sidecar["parameters"]["recall_at_10"] >= 0.97
    loaded = load_index(index_path, path, use_gpu="off")
    assert faiss.extract_index_ivf(loaded).nprobe == sidecar["parameters"]["nprobe"]
    assert build_index_file(path, index_path, config).reused
    # Another request rebuilds: a fixed nprobe is used as given, and its recall still measured.
    fixed = build_index_file(path, index_path, IndexConfig(gpu="off", approximate_from=1000, nprobe=2))
    assert not fixed.reused and fixed.parameters["nprobe"] == 2
    assert fixed.parameters["recall_at_10"] < report.parameters["recall_at_10"]
    exact = build_index_file(path, index_path, IndexConfig(gpu="off"))
    assert exact.kind == "flat" and isinstance(load_index(index_path, path, "off"), faiss.IndexFlatIP)


@pytest.mark.parametrize(("key", "value", "message"), [
    ("index.kind", "lsh", "index.kind: 'lsh' is not one of auto, flat, ivf, hnsw"),
    ("index.nprobe", "-1", "index.nprobe: -1 must be an integer"),
    ("index.recall_target", "1.5", r"index.recall_target: 1.5 must be a number in \(0, 1\]"),
])
def test_index_settings_are_checked(key, value, message):
    from config import ConfigError, load_config

    with pytest.raises(ConfigError, match=message):
        load_config(env={}, overrides={key: value})


def test_recall_counts_rows_that_tie_the_exact_answer():
    # Query 0: rows 1..6 are all at similarity 0.9; the exact search named 1 and 2, the other found 5 and 6.
    I_exact, D_exact = np.array([[1, 2], [7, 8]]), np.array([[0.9, 0.9], [0.8, 0.7]], dtype=np.float32)
    I, D = np.array([[5, 6], [7, 9]]), np.array([[0.9, 0.9], [0.8, 0.6]], dtype=np.float32)
    assert recall_at_k(I, I_exact) == pytest.approx((0 + 1 / 2) / 2)
    assert recall_at_k(I, I_exact, D, D_exact, "ip") == pytest.approx((1 + 1 / 2) / 2)
    # L2: smaller is nearer; a row farther than the exact k-th does not count.
    assert recall_at_k(I, I_exact, 1 - D, 1 - D_exact, "l2") == pytest.approx((1 + 1 / 2) / 2)
    assert recall_at_k(np.array([[9, -1], [7, 8]]), I_exact, np.array([[0.5, 0.95], [0.8, 0.7]]), D_exact,
                       "ip") == pytest.approx((0 + 1) / 2)


def test_tuning_is_not_fooled_by_many_identical_vectors():
    # 2,000 rows that are 40 vectors give or take float rounding, as an untrained embedder makes: which
    # of the equally near rows a search names is arbitrary, so recall by id alone stays low however
    # wide the search (the exact search's BLAS and IVF's own loop round differently).
    rng = np.random.default_rng(1)
    distinct = rng.standard_normal((40, 16)).astype(np.float32)
    distinct /= np.linalg.norm(distinct, axis=1, keepdims=True)
    xb = distinct[rng.integers(40, size=2000)] + 1e-7 * rng.standard_normal((2000, 16)).astype(np.float32)
    index, plan = build_approximate(xb, "ivf", "ip", recall_target=0.97)
    assert plan.parameters["recall_at_10"] >= 0.97
    assert plan.parameters["nprobe"] < plan.parameters["nlist"]


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_deep_pages_and_filtered_searches_come_back_full_and_as_exact_when_widened(catalog_and_queries, kind):
    xb, yb, xq, _ = catalog_and_queries
    index, _ = build_approximate(xb, kind, "ip", nlist=64, nprobe=1 if kind == "ivf" else 16)
    exact = build_index(xb, "ip", "off")
    # A page far deeper than one probed cell (~60 vectors) or 16 graph candidates hold.
    D, I = search(index, xq[:20], 600)
    assert (I >= 0).all() and all(len(set(row)) == 600 for row in I.tolist())
    # One class of ten, thinned to 25 rows: the probed cells hold a few of them at most.
    rows = np.flatnonzero(yb == 3)[:25].astype(np.int64)
    selector = faiss.IDSelectorBatch(rows)
    D, I = search(index, xq[:20], 25, selector=selector, available=len(rows))
    assert all(set(row) == set(rows.tolist()) for row in I.tolist())  # all of them, nothing else
    D_exact, I_exact = search(exact, xq[:20], 25, selector=faiss.IDSelectorBatch(rows), available=len(rows))
    np.testing.assert_allclose(D, D_exact, rtol=1e-5, atol=1e-6)
    # The index keeps its own breadth for the next, ordinary search.
    if kind == "ivf":
        assert index.nprobe == 1
    else:
        assert faiss.downcast_index(index.index).hnsw.efSearch == 16


def test_a_selector_with_fewer_rows_than_k_leaves_the_rest_empty_without_searching_forever(catalog_and_queries):
    xb, _, xq, _ = catalog_and_queries
    index, _ = build_approximate(xb, "ivf", "ip", nlist=64, nprobe=2)
    rows = np.array([5, 17, 900], dtype=np.int64)
    D, I = search(index, xq[:4], 10, selector=faiss.IDSelectorBatch(rows), available=len(rows))
    assert all(set(row[:3]) == {5, 17, 900} and (row[3:] == -1).all() for row in I)
