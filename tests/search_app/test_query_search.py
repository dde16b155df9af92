"""QuerySearcher: concurrent queries share one embedding pass and one index scan, and each gets its own neighbours."""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import faiss
import numpy as np
import pytest
from PIL import Image

from indexer.vector_store import FaissStore
from search_app.batching import QueryEmbedder, QuerySearcher

DIMENSION = 8


class CountingIndex(FaissStore):
    """A flat inner-product store that records how many queries each search call carried."""

    def __init__(self, vectors: np.ndarray) -> None:
        self.flat = faiss.IndexFlatIP(vectors.shape[1])
        self.flat.add(vectors)
        super().__init__(self.flat, np.zeros(len(vectors), np.int64), 1)
        self.calls: list[int] = []

    def search(self, xq: np.ndarray, k: int, label: int | None = None):
        self.calls.append(len(xq))
        return super().search(xq, k, label)


def unit_vectors(count: int, seed: int) -> np.ndarray:
    vectors = np.random.default_rng(seed).normal(size=(count, DIMENSION)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def colour_image(vector: np.ndarray) -> Image.Image:
    """An image that carries its query vector in its pixel values, so the fake embedder can read it back."""
    return Image.fromarray(np.round((vector.reshape(1, -1) + 1) * 127.5).astype(np.uint8))


def pixels_to_vector(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.float32).ravel() / 127.5 - 1


class RecordingEmbedder:
    def __init__(self) -> None:
        self.batch_sizes: list[int] = []
        self.started = threading.Event()

    def embed(self, prepared) -> np.ndarray:
        self.batch_sizes.append(len(prepared))
        # Hold the first pass a little, as a forward pass does, so the other queries queue behind it.
        self.started.wait(0.2)
        return np.stack(prepared)


@pytest.fixture
def catalog() -> np.ndarray:
    return unit_vectors(200, seed=1)


def test_concurrent_queries_share_one_pass_and_one_scan_and_get_their_own_rows(catalog):
    index = CountingIndex(catalog)
    recorder = RecordingEmbedder()
    searcher = QuerySearcher(QueryEmbedder(prepare=pixels_to_vector, embed=recorder.embed), index,
                             max_batch=8, max_wait_s=1.0)
    queries = unit_vectors(8, seed=2)
    depths = [1, 3, 5, 2, 8, 4, 6, 7]

    def one(number: int):
        with searcher.batcher.incoming():
            return searcher.search(colour_image(queries[number]), depths[number])

    try:
        with ThreadPoolExecutor(8) as pool:
            found = list(pool.map(one, range(8)))
    finally:
        searcher.close()
    assert sum(recorder.batch_sizes) == 8 and max(recorder.batch_sizes) > 1
    assert len(index.calls) == len(recorder.batch_sizes) < 8  # one scan per pass, not per query
    stats = searcher.stats()
    assert stats["batches"] == len(recorder.batch_sizes) and stats["items"] == 8
    # The first pass was held for 0.2 s; the scans are part of the batches' time, not of the embedding.
    assert stats["embed_seconds"] >= 0.2 and stats["scan_seconds"] > 0
    # Each figure is rounded to the millisecond: their sum may differ by up to 1.5 ms.
    assert stats["busy_seconds"] >= stats["embed_seconds"] + stats["scan_seconds"] - 2e-3
    expected_D, expected_I = index.flat.search(np.stack([pixels_to_vector(colour_image(q)) for q in queries]), 8)
    for number, (vector, D, I) in enumerate(found):
        depth = depths[number]
        assert vector.shape == (1, DIMENSION) and D.shape == I.shape == (1, depth)
        np.testing.assert_array_equal(I[0], expected_I[number, :depth])
        np.testing.assert_allclose(D[0], expected_D[number, :depth], rtol=1e-6)


def test_a_vector_that_does_not_fit_the_index_is_an_error_for_its_query_only(catalog):
    searcher = QuerySearcher(QueryEmbedder.one_image_at_a_time(lambda image: np.ones(3, dtype=np.float32)),
                             FaissStore(faiss.IndexFlatIP(DIMENSION), np.zeros(0, np.int64), 1))
    with pytest.raises(ValueError, match="dimension 3 .* dimension 8"):
        searcher.search(Image.new("RGB", (4, 4)), depth=2)
    with pytest.raises(ValueError, match="depth must be at least 1"):
        searcher.search(Image.new("RGB", (4, 4)), depth=0)


def test_depth_beyond_the_catalog_returns_the_whole_catalog(catalog):
    index = CountingIndex(catalog[:5])
    searcher = QuerySearcher(QueryEmbedder.one_image_at_a_time(pixels_to_vector), index)
    vector, D, I = searcher.search(colour_image(catalog[0]), depth=50)
    assert sorted(I[0].tolist()) == [0, 1, 2, 3, 4]
    np.testing.assert_allclose(searcher.embed(colour_image(catalog[0])), vector[0])
