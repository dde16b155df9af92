"""Lone queries in the worker: while a `serve --prod` server handles one photo search and no other, the
gunicorn worker that received it embeds and scans it with its own copy of the model, not through the
model process.

A lone shopper gains nothing from the model process, whose point is to batch many workers' queries,
and pays for the trip to it and back: two messages and two wake-ups of sleeping threads. With one
worker and its own model (benchmarks.bench_serving's gunicorn_solo), a lone 32-px query took 1.23-1.27 ×
its in-process time against 1.31-1.32 through the model process (2026-12-03, 2-core AMD EPYC), but 8
clients got ~12 % fewer answers from one GIL. Here each query picks: alone, its worker's model; with
company, the model process's batches. Measured so (benchmarks/README, "stop 26"): lone 1.11-1.28 against
1.28-1.46 through the model process, 8 clients as fast; a worker holds ~0.3 GiB more at 224 px.

Two forward passes at once on the same cores make both many times slower, so the model process and
the workers take turns at the cores through a lock file (`CoreTurn`, flock: the kernel releases it when
its holder dies). A worker only tries for its turn, never waits for it: with the model process busy
its query goes there. The workers count the photo searches they are handling in memory shared by
gunicorn's master and its workers (`SearchCounts`), one slot per worker, so a query knows whether it is
alone in the whole server.
"""
from __future__ import annotations

import contextlib
import fcntl
import mmap
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from search_app.model_client import RemoteQuerySearcher
from search_app.query_search import Found, QuerySearcher


class CoreTurn:
    """An exclusive lock on a file, between processes: whoever holds it runs a forward pass on the cores.

    Each process opens the file itself (after any fork: a descriptor inherited across fork is the same
    lock). Within a process flock does not exclude threads, so a thread lock does that."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self._threads = threading.Lock()

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """Wait for the turn and hold it for the block."""
        with self._threads:
            fcntl.flock(self._descriptor, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(self._descriptor, fcntl.LOCK_UN)

    def try_take(self) -> bool:
        """Take the turn if no one holds it; True when taken (give it back with release())."""
        if not self._threads.acquire(blocking=False):
            return False
        try:
            fcntl.flock(self._descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._threads.release()
            return False
        return True

    def release(self) -> None:
        fcntl.flock(self._descriptor, fcntl.LOCK_UN)
        self._threads.release()

    def close(self) -> None:
        os.close(self._descriptor)


class SearchCounts:
    """How many photo searches each worker is handling (and how many it answered alone), in anonymous shared
    memory made before gunicorn forks its workers. A slot has one writer, its worker (its threads under a
    lock); anyone may add them all up.
    Slots are handed out and wiped by gunicorn's master (search_app.serving), so a worker that died in the
    middle of a search does not leave the server looking busy for ever."""

    def __init__(self, slots: int) -> None:
        if slots < 1:
            raise ValueError(f"slots must be at least 1, got {slots}")
        self._memory = mmap.mmap(-1, 16 * slots)  # MAP_SHARED: the forked workers see the same pages
        shared = np.frombuffer(self._memory, dtype=np.int64)
        # Searches being handled now, and lone queries answered since the start, by the workers of each slot.
        self._counts, self._lone = shared[:slots], shared[slots:]
        self._taken: set[int] = set()
        self._writing = threading.Lock()

    @property
    def slots(self) -> int:
        return len(self._counts)

    def take_slot(self) -> int:
        """A free slot, wiped, for a worker about to start (in the master); RuntimeError when none is free."""
        for slot in range(self.slots):
            if slot not in self._taken:
                self._taken.add(slot)
                self._counts[slot] = 0
                return slot
        raise RuntimeError(f"all {self.slots} search-count slots are taken")

    def free_slot(self, slot: int) -> None:
        """A worker has exited (in the master): its searches are over, whatever its slot says."""
        self._counts[slot] = 0
        self._taken.discard(slot)

    def enter(self, slot: int) -> int:
        """One more search in this worker; the server's count, this one included."""
        with self._writing:
            self._counts[slot] += 1
        return self.total()

    def leave(self, slot: int) -> None:
        with self._writing:
            self._counts[slot] -= 1

    def total(self) -> int:
        """Searches being handled in the whole server now."""
        return int(self._counts.sum())

    def count_lone(self, slot: int) -> None:
        """One more query answered by this slot's worker alone."""
        with self._writing:
            self._lone[slot] += 1

    def lone_total(self) -> int:
        """Lone queries answered by every worker since the server started."""
        return int(self._lone.sum())


@dataclass(frozen=True)
class WorkerSlot:
    """A worker's slot among the server's search counts, which its master handed it before the fork."""

    counts: SearchCounts
    slot: int


class LoneQuerySearcher:
    """RemoteQuerySearcher's interface for a worker with a model of its own: a query alone in the server,
    with the cores free, runs here; any other goes to the model process."""

    def __init__(self, remote: RemoteQuerySearcher, local: QuerySearcher, counts: SearchCounts, slot: int,
                 turn: CoreTurn) -> None:
        self.remote = remote
        self.local = local
        self.counts = counts
        self.slot = slot
        self.turn = turn
        self._alone = threading.local()  # whether this thread's request was alone in the server when it came

    @property
    def runtime(self) -> str:
        return self.remote.runtime

    @contextlib.contextmanager
    def incoming(self) -> Iterator[None]:
        """Count the request in; only one with company is announced to the model process (a batch waits for it)."""
        alone = self.counts.enter(self.slot) == 1
        self._alone.value = alone
        try:
            if alone:
                yield
            else:
                with self.remote.incoming():
                    yield
        finally:
            self._alone.value = False
            self.counts.leave(self.slot)

    def search(self, image: Image.Image, depth: int) -> Found:
        """The query's vector and its ``depth`` nearest rows, found here when it is still alone, else by the model process."""
        if getattr(self._alone, "value", False) and self.counts.total() == 1 and self.turn.try_take():
            try:
                found = self.local.search(image, depth)
            finally:
                self.turn.release()
            self.counts.count_lone(self.slot)
            return found
        return self.remote.search(image, depth)

    def embed(self, image: Image.Image) -> np.ndarray:
        return self.remote.embed(image)

    def stats(self) -> dict[str, Any]:
        """The model process's batches, and the queries the workers answered alone (outside the batches)."""
        return {**self.remote.stats(), "worker_lone_queries": self.counts.lone_total()}

    def close(self) -> None:
        self.remote.close()
        self.local.close()
        self.turn.close()
