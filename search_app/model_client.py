"""A `serve --prod` worker's side of the shared model process: query images prepared here, embedded and scanned there.

Each gunicorn worker used to run its own copy of the network on its share of the cores (workers ×
threads ≤ cores), so a lone query's forward pass had one thread of two, and 8 clients' queries were
batched in two halves. With one model process for all workers, every forward pass gets every core and
batches gather the queries of all workers, while the requests' own Python work (HTTP, decoding,
answers) still runs in several processes, free of one GIL. Requests reach the model process over a
Unix socket, one connection per request thread; a search's message is its prepared pixels as bytes (a
3×S×S uint8 image is 3 KB at 32 px; search_app.model_messages).
"""
from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from multiprocessing import AuthenticationError
from multiprocessing.connection import Client, Connection
from typing import Any

import numpy as np
from PIL import Image

from search_app.model_messages import (ARRAYS, EMBED, FAILED, HELLO, INCOMING, LEFT, SEARCH, STATS, pack_arrays,
                                         pack_object, unpack_arrays, unpack_object)

# How long a starting worker waits for the model process (serve --prod starts it first, so this is for restarts).
CONNECT_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class ModelAddress:
    """Where the model process listens, and the key a connection must know (os.urandom, per server start)."""

    path: str
    authkey: bytes
    # The lock file by which the model process and workers that embed lone queries themselves take turns at
    # the cores (search_app.lone_queries); "" where no worker does.
    turn_path: str = ""


class ModelUnavailable(RuntimeError):
    """The model process cannot be reached: it is starting, restarting after a crash, or gone."""


class RemoteQuerySearcher:
    """QuerySearcher's interface for a worker process: images are prepared on the request's thread and
    searched by the model process, micro-batched with every worker's concurrent queries."""

    def __init__(self, address: ModelAddress, info: dict[str, Any], prepare: Callable[[Image.Image], Any]) -> None:
        self.address = address
        self.info = info
        self.prepare = prepare
        self._local = threading.local()  # each request thread's connection

    @classmethod
    def connect(cls, address: ModelAddress, dimension: int, transform_for: Callable[[Any], Callable[[Image.Image], Any]],
                timeout_s: float = CONNECT_TIMEOUT_S) -> RemoteQuerySearcher:
        """Wait (up to timeout_s) for the model process to answer; ValueError when its vectors do not fit the index.

        ``transform_for`` makes, from the model's Preprocessing, what turns a query image into the model's
        uint8 pixels (search_app.engine.pixel_transform)."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                with _open(address) as connection:
                    info = _request(connection, pack_object(HELLO))
                break
            except ModelUnavailable:
                if time.monotonic() > deadline:
                    raise ModelUnavailable(f"no model process answered at {address.path} within {timeout_s:g} s") \
                        from None
                time.sleep(0.2)
        if info["dimension"] != dimension:
            raise ValueError(f"the model process makes vectors of dimension {info['dimension']} but this worker's "
                             f"index holds vectors of dimension {dimension}; re-run `python manage.py build-index`")
        return cls(address, info, transform_for(info["preprocessing"]))

    @property
    def runtime(self) -> str:
        """What runs the network in the model process, for /healthz."""
        return self.info["runtime"]

    @contextlib.contextmanager
    def incoming(self) -> Iterator[None]:
        """Tell the model process that a query is being received, so a batch starting now waits for it."""
        self._tell(INCOMING)
        try:
            yield
        finally:
            self._tell(LEFT)

    def search(self, image: Image.Image, depth: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The query's vector (1×D) and its ``depth`` nearest rows (distances and rows, 1×depth each)."""
        vector, distances, rows = self._ask(pack_arrays(SEARCH, [self._pixels(image)], depth))
        return vector, distances, rows

    def embed(self, image: Image.Image) -> np.ndarray:
        """The query's vector alone (1-d), outside the batches."""
        return self._ask(pack_arrays(EMBED, [self._pixels(image)]))[0]

    def stats(self) -> dict[str, Any]:
        """The model process's batches: counts, sizes, seconds embedding and scanning (for every worker)."""
        return {**self._ask(pack_object(STATS)), "model_process": True}

    def close(self) -> None:
        """Close this thread's connection (the others close with their threads' ends)."""
        connection = getattr(self._local, "connection", None)
        self._local.connection = None
        if connection is not None:
            connection.close()

    def _pixels(self, image: Image.Image) -> np.ndarray:
        return np.ascontiguousarray(np.asarray(self.prepare(image)))

    def _connection(self) -> tuple[Connection, bool]:
        """This thread's connection, and whether it was just opened."""
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            return connection, False
        self._local.connection = _open(self.address)
        return self._local.connection, True

    def _ask(self, message: bytes) -> Any:
        # A connection kept from before a restart of the model process is broken: one fresh try then.
        for _ in range(2):
            connection, fresh = self._connection()
            try:
                return _request(connection, message)
            except ModelUnavailable:
                self.close()
                if fresh:
                    raise
        raise AssertionError("unreachable")

    def _tell(self, message: bytes) -> None:
        """Send a one-way message; a lost one only costs a batch its wait, so failures are left to the next ask."""
        try:
            connection, _ = self._connection()
            connection.send_bytes(message)
        except (OSError, ModelUnavailable):
            self.close()


def _open(address: ModelAddress) -> Connection:
    try:
        return Client(address.path, family="AF_UNIX", authkey=address.authkey)
    except (OSError, EOFError, AuthenticationError) as error:
        raise ModelUnavailable(f"the model process at {address.path} cannot be reached ({error})") from error


def _request(connection: Connection, message: bytes) -> Any:
    """Send a message and return its answer (a list of arrays, or an object), raising what the model process raised."""
    try:
        connection.send_bytes(message)
        answer = connection.recv_bytes()
    except (OSError, EOFError) as error:
        raise ModelUnavailable(f"the model process stopped answering ({type(error).__name__})") from error
    tag = answer[:1]
    if tag == ARRAYS:
        return unpack_arrays(answer)[1]
    if tag != FAILED:
        return unpack_object(answer)
    kind, text = unpack_object(answer)
    if kind == "ValueError":
        raise ValueError(text)
    raise RuntimeError(f"the model process failed: {kind}: {text}")
