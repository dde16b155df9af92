"""Query images to their nearest catalog rows, many queries at once: one model pass and one index scan per micro-batch.

Searching the batch together matters as much as embedding it together: an exact scan reads the whole
index from memory once for all the batch's queries (benchmarks/README.md, Serving).
"""
from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import faiss
import numpy as np
from PIL import Image

from indexer.index import search as index_search
from search_app.batching import MicroBatcher

# A query's vector (1×D) and its nearest rows: distances and row numbers (1×depth each).
Found = tuple[np.ndarray, np.ndarray, np.ndarray]


@dataclass(frozen=True)
class QueryEmbedder:
    """How query images become vectors: ``prepare`` runs on the request's thread (resize, normalise),
    ``embed`` turns a list of prepared queries into an n×D array in one model pass."""

    prepare: Callable[[Image.Image], Any]
    embed: Callable[[Sequence[Any]], np.ndarray]
    # What runs the network ("onnxruntime", "torch"), for /healthz.
    runtime: str = "python"

    @classmethod
    def one_image_at_a_time(cls, embed_image: Callable[[Image.Image], np.ndarray]) -> QueryEmbedder:
        """For an Image -> vector function: the vector is made while preparing, the batch only stacks them."""
        return cls(prepare=embed_image, embed=lambda vectors: np.stack([np.ravel(v) for v in vectors]))

    def embed_one(self, image: Image.Image) -> np.ndarray:
        """One image's vector as a 1×D float32 array, outside any batch."""
        return np.asarray(self.embed([self.prepare(image)]), dtype=np.float32).reshape(1, -1)


class QuerySearcher:
    """Embed a query image and find its ``depth`` nearest rows, sharing the work with concurrent queries."""

    def __init__(self, embedder: QueryEmbedder, index: faiss.Index, index_lock: threading.Lock,
                 max_batch: int = 1, max_wait_s: float = 0.0) -> None:
        self.embedder = embedder
        self.index = index
        # Held for every search of the index: faiss GPU indexes must not be searched concurrently.
        self.index_lock = index_lock
        self.batcher = MicroBatcher(self._embed_and_search, max_batch=max_batch, max_wait_s=max_wait_s)
        self.embed_s = self.scan_s = 0.0  # where the batches' time goes, for /healthz

    def stats(self) -> dict[str, Any]:
        """The batcher's counts, and the seconds its batches spent embedding and scanning the index (to the
        microsecond: a scan of a small index takes less than a millisecond, and rounded to one it read as none)."""
        return {**self.batcher.stats(), "embed_seconds": round(self.embed_s, 6), "scan_seconds": round(self.scan_s, 6)}

    @property
    def runtime(self) -> str:
        """What runs the network, for /healthz."""
        return self.embedder.runtime

    def incoming(self) -> contextlib.AbstractContextManager:
        """Wrap the handling of a request that will search with an image, so a micro-batch can wait for it."""
        return self.batcher.incoming()

    def search(self, image: Image.Image, depth: int) -> Found:
        """The query's vector and its ``depth`` nearest rows; ValueError when the vector does not fit the index."""
        if depth < 1:
            raise ValueError(f"depth must be at least 1, got {depth}")
        # Prepared (resized) here, on the request's thread, so that the batch holds only the model's work.
        return self.batcher.submit((self.embedder.prepare(image), depth))

    def embed(self, image: Image.Image) -> np.ndarray:
        """The query's vector alone (1-d), outside the batches: for start-up checks and measurements."""
        return self.embedder.embed_one(image)[0]

    def close(self) -> None:
        self.batcher.close()

    def _embed_and_search(self, queries: Sequence[tuple[Any, int]]) -> list[Found]:
        started = time.perf_counter()
        vectors = np.asarray(self.embedder.embed([prepared for prepared, _ in queries]), dtype=np.float32)
        vectors = vectors.reshape(len(queries), -1)
        embedded = time.perf_counter()
        deepest = min(max(depth for _, depth in queries), self.index.ntotal)
        with self.index_lock:
            D, I = index_search(self.index, vectors, deepest)
        # Batches run one at a time (the batching thread, or the batcher's lock when max_batch is 1), so one
        # writer at a time; a reader may see one batch late.
        self.embed_s += embedded - started
        self.scan_s += time.perf_counter() - embedded
        return [(vectors[row:row + 1], D[row:row + 1, :depth], I[row:row + 1, :depth])
                for row, (_, depth) in enumerate(queries)]
