"""Rebuilding an IVF index after the catalog changed keeps its trained cells while they still fit, and
trains new ones once the vectors have drifted or the catalog has grown out of them."""
from __future__ import annotations

import faiss
import numpy as np
import pytest

from config import IndexConfig
from indexer.index import build_index_file, load_index
from tests.indexer.conftest import write_embeddings

DIMENSION, CLUSTERS = 24, 30
CONFIG = IndexConfig(kind="ivf", gpu="off")


def clustered(rng: np.random.Generator, count: int, centres: np.ndarray) -> np.ndarray:
    """Unit vectors around the given cluster centres, as a trained embedder's are around its categories."""
    x = centres[rng.integers(0, len(centres), count)] + 0.35 * rng.standard_normal((count, DIMENSION))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def write(tmp_path, vectors: np.ndarray):
    path = tmp_path / "embeddings.h5"
    write_embeddings(path, vectors, np.arange(len(vectors)) % 3, ["train"] * len(vectors))
    return path


@pytest.fixture
def catalog(tmp_path):
    rng = np.random.default_rng(4)
    centres = rng.standard_normal((CLUSTERS, DIMENSION))
    vectors = clustered(rng, 6000, centres)
    report = build_index_file(write(tmp_path, vectors), tmp_path / "index.faiss", CONFIG)
    assert report.parameters["cells"] == "trained" and report.parameters["trained_on"] == 6000
    return rng, centres, vectors


def recall_against_exact(tmp_path, vectors: np.ndarray) -> float:
    index = load_index(tmp_path / "index.faiss", tmp_path / "embeddings.h5", use_gpu="off")
    queries = vectors[::50]
    _, approximate = index.search(queries, 10)
    _, exact = faiss.knn(queries, vectors, 10, metric=faiss.METRIC_INNER_PRODUCT)
    return float(np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approximate, exact)]))


def test_a_small_change_keeps_the_cells_and_the_index_holds_the_new_catalog(tmp_path, catalog):
    rng, centres, vectors = catalog
    changed = vectors.copy()
    changed[::100] = clustered(rng, len(changed[::100]), centres)  # 1 % replaced
    changed = np.concatenate([changed[60:], clustered(rng, 120, centres)])  # 60 removed, 120 added
    report = build_index_file(write(tmp_path, changed), tmp_path / "index.faiss", CONFIG)
    assert report.parameters["cells"] == "kept" and report.parameters["trained_on"] == 6000
    assert not report.reused and report.count == len(changed)
    assert recall_against_exact(tmp_path, changed) >= 0.95


def test_drifted_vectors_train_new_cells(tmp_path, catalog):
    rng, _, vectors = catalog
    elsewhere = clustered(rng, len(vectors), rng.standard_normal((CLUSTERS, DIMENSION)))  # a new model, say
    report = build_index_file(write(tmp_path, elsewhere), tmp_path / "index.faiss", CONFIG)
    assert report.parameters["cells"] == "trained"
    assert recall_against_exact(tmp_path, elsewhere) >= 0.95


def test_a_catalog_grown_past_its_cells_trains_new_ones(tmp_path, catalog):
    rng, centres, vectors = catalog
    grown = np.concatenate([vectors, clustered(rng, 5 * len(vectors), centres)])
    report = build_index_file(write(tmp_path, grown), tmp_path / "index.faiss", CONFIG)
    assert report.parameters["cells"] == "trained" and report.parameters["trained_on"] == len(grown)


def test_force_trains_new_cells(tmp_path, catalog):
    _, _, vectors = catalog
    report = build_index_file(tmp_path / "embeddings.h5", tmp_path / "index.faiss", CONFIG, force=True)
    assert not report.reused and report.parameters["cells"] == "trained" and report.count == len(vectors)
