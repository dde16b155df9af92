"""Micro-batching: queries arriving together on many request threads share one forward pass of the model.

On a CPU, one forward pass over 8 small images costs far less than 8 passes over one, and only one
pass runs at a time, so torch's threads never compete with each other; on a GPU, batching is what
fills the device.

A batch starts with whatever is queued when the model is free, and waits (at most ``max_wait_s``)
for as many queries as were recently in the server at once: requests announce themselves with
``incoming()`` for as long as they are being handled. A lone shopper's query never waits; 8 clients
sending their next query as soon as they have an answer are not split into two half batches by
arriving a millisecond apart. When the wait runs out, the expectation drops to what really came.

A lone query on an idle model is run on its own thread rather than handed to the batching thread and
back: two thread wake-ups less on the path of the query whose latency nothing else hides.

QuerySearcher puts a model and an index behind a MicroBatcher: each batch is one model pass and one index
scan, since an exact scan reads the whole index from memory once for all the batch's queries
(benchmarks/README.md, Serving).
"""
from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, InvalidStateError
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np
from PIL import Image

from indexer.vector_store import VectorStore

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")
_STOP = object()


class BatchTimeout(TimeoutError):
    """The model did not take and answer an item within the caller's deadline (hung, or far behind)."""


class MicroBatcher(Generic[T, R]):
    """Run ``run_batch`` over items submitted from many threads, up to ``max_batch`` at a time, one batch at a time.

    A batch holds whatever was waiting when the previous one finished, plus the announced items that
    arrive within ``max_wait_s`` of its first. With max_batch = 1 there is no batching thread: calls
    are simply serialised.
    """

    def __init__(self, run_batch: Callable[[Sequence[T]], Sequence[R]], max_batch: int = 16,
                 max_wait_s: float = 0.0, name: str = "embedder") -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        if max_wait_s < 0:
            raise ValueError(f"max_wait_s must be at least 0, got {max_wait_s}")
        self.run_batch = run_batch
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self._serial = threading.Lock()
        self._changed = threading.Condition()
        self._queue: list = []  # (item, future) pairs, and _STOP; guarded by _changed
        self._inside = 0  # requests being handled now (inside incoming())
        self._expected = 1  # how many queries a batch waits for: the recent peak of _inside
        self._running = False  # a batch is running, on the batching thread or inline on a submitter's
        self._running_since = 0.0  # perf_counter when it started, for stats(): a hung model shows there
        self._counts = threading.Lock()
        self.batches = self.items = self.largest = 0
        self.busy_s = 0.0  # time spent in run_batch: with the batches' count, how busy the model is
        self._closed = False
        self._thread: threading.Thread | None = None
        if max_batch > 1:
            self._thread = threading.Thread(target=self._loop, name=f"{name}-batcher", daemon=True)
            self._thread.start()

    @contextlib.contextmanager
    def incoming(self) -> Iterator[None]:
        """Mark, on a request's thread, the handling of a request that will probably submit an item."""
        with self._changed:
            self._inside += 1
            self._expected = min(max(self._expected, self._inside), self.max_batch)
        try:
            yield
        finally:
            with self._changed:
                self._inside -= 1

    def submit(self, item: T, timeout: float | None = None) -> R:
        """The output for one item; blocks until its batch has run, and raises what the batch raised, or
        BatchTimeout when ``timeout`` seconds pass first (the item is then dropped if not yet taken)."""
        if self._closed:
            raise RuntimeError("the batcher is closed")
        if self.max_batch == 1:
            if not self._serial.acquire(timeout=-1 if timeout is None else timeout):
                raise BatchTimeout(f"the model did not become free within {timeout:g} s")
            try:
                self._mark_running()
                output = self._checked([item])
            finally:
                self._running_since = 0.0
                self._serial.release()
            self._count(1)
            return output[0]
        future: Future = Future()
        with self._changed:
            # Alone means: the model idle, nothing queued, and no other query recently in the server at once
            # (which a batch would wait for).
            inline = not self._running and not self._queue and self._expected <= 1
            if inline:
                self._mark_running()
            else:
                self._queue.append((item, future))
                self._changed.notify_all()
        if inline:
            try:
                output = self._checked([item])
            finally:
                self._finished()
            self._count(1)
            return output[0]
        try:
            return future.result(timeout)
        except FutureTimeout:
            with self._changed:  # by identity: items (tensors) do not compare as booleans
                self._queue = [entry for entry in self._queue if entry is _STOP or entry[1] is not future]
            future.cancel()  # taken into a batch already: its answer is dropped (_run)
            raise BatchTimeout(f"the model did not answer within {timeout:g} s") from None

    def _mark_running(self) -> None:
        self._running, self._running_since = True, time.perf_counter()

    def close(self) -> None:
        """Stop the batching thread after the batches already queued."""
        self._closed = True
        if self.max_batch > 1:  # the stop signal ends the batching thread once it reaches it
            with self._changed:
                self._queue.append(_STOP)
                self._changed.notify_all()
        if self._thread is not None:
            self._thread.join()

    def stats(self) -> dict[str, Any]:
        """How batching went so far: batches run, items, mean and largest batch."""
        with self._counts:
            return {
                "max_batch": self.max_batch,
                "wait_ms": round(1e3 * self.max_wait_s, 3),
                "batches": self.batches,
                "items": self.items,
                "mean_batch": round(self.items / self.batches, 3) if self.batches else 0.0,
                "largest_batch": self.largest,
                "busy_seconds": round(self.busy_s, 6),
                # How long the batch running now has run: far over a batch's usual time, the model is stuck.
                "running_seconds": round(time.perf_counter() - self._running_since, 3) if self._running_since else 0.0,
            }

    def _loop(self) -> None:
        while True:
            batch, stop = self._gather()
            if batch:
                try:
                    self._run(batch)
                finally:
                    self._finished()
            if stop:
                return

    def _gather(self) -> tuple[list, bool]:
        """The next batch, and whether the stop signal came with it."""
        with self._changed:
            while not self._queue or self._running:
                self._changed.wait()
            deadline = time.perf_counter() + self.max_wait_s
            while len(self._queue) < self._expected and _STOP not in self._queue:
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    # Fewer came than expected: expect only what came (and what is being handled now).
                    self._expected = max(1, min(len(self._queue), self.max_batch), min(self._inside, self.max_batch))
                    break
                self._changed.wait(remaining)
            taken, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch:]
            self._mark_running()
        stop = _STOP in taken
        return [entry for entry in taken if entry is not _STOP], stop

    def _finished(self) -> None:
        """A batch has run: the model is free for the next (queued ones, or a lone query inline)."""
        with self._changed:
            self._running, self._running_since = False, 0.0
            self._changed.notify_all()

    def _run(self, batch: list[tuple[T, Future]]) -> None:
        items = [item for item, _ in batch]
        try:
            outputs = self._checked(items)
        except Exception as error:
            if len(batch) == 1:
                _settle(batch[0][1], error=error)
                return
            # One bad item must not fail the queries that happened to share its batch: retry each alone.
            log.warning("a batch of %d failed (%s); running its items one at a time", len(batch), error)
            for entry in batch:
                self._run([entry])
            return
        self._count(len(batch))
        for row, (_, future) in enumerate(batch):
            _settle(future, outputs[row])

    def _checked(self, items: Sequence[T]) -> Sequence[R]:
        started = time.perf_counter()
        try:
            outputs = self.run_batch(items)
        finally:
            with self._counts:
                self.busy_s += time.perf_counter() - started
        if len(outputs) != len(items):
            raise RuntimeError(f"the batch function returned {len(outputs)} rows for {len(items)} items")
        return outputs

    def _count(self, size: int) -> None:
        with self._counts:
            self.batches += 1
            self.items += size
            self.largest = max(self.largest, size)


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


def _settle(future: Future, result: Any = None, error: BaseException | None = None) -> None:
    """Give a waiting submitter its answer; one that gave up waiting (cancelled its future) gets none."""
    try:
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
    except InvalidStateError:
        pass


class QuerySearcher:
    """Embed a query image and find its ``depth`` nearest rows, sharing the work with concurrent queries."""

    def __init__(self, embedder: QueryEmbedder, store: VectorStore, max_batch: int = 1, max_wait_s: float = 0.0,
                 deadline_s: float | None = None) -> None:
        self.embedder = embedder
        self.deadline_s = deadline_s  # the longest a search waits for the model (BatchTimeout after)
        self.store = store
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
        return self.batcher.submit((self.embedder.prepare(image), depth), self.deadline_s)

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
        deepest = min(max(depth for _, depth in queries), len(self.store))
        D, I = self.store.search(vectors, deepest)
        # Batches run one at a time (the batching thread, or the batcher's lock when max_batch is 1), so one
        # writer at a time; a reader may see one batch late.
        self.embed_s += embedded - started
        self.scan_s += time.perf_counter() - embedded
        return [(vectors[row:row + 1], D[row:row + 1, :depth], I[row:row + 1, :depth])
                for row, (_, depth) in enumerate(queries)]
