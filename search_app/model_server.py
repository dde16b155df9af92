"""The model process of `serve --prod` under gunicorn: one embedder and one batched index scan for every worker.

`ModelProcess` runs in the server's main process: it starts the model process (a fresh interpreter,
so no torch or ONNX Runtime thread pool crosses a fork), waits until it has loaded and probed the model, and
starts it again if it dies; workers connect to it (search_app.model_client). The model process
answers each connection on a thread of its own and funnels their searches through one MicroBatcher,
so a batch holds the concurrent queries of all workers and its forward pass has all the model's threads.
"""
from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import pickle
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection, Listener
from typing import IO, Any

from config import Config
from search_app.lone_queries import CoreTurn
from search_app.model_client import ModelAddress
from search_app.model_messages import (ARRAYS, EMBED, FAILED, HELLO, INCOMING, LEFT, PICKLED, SEARCH, STATS,
                                         pack_arrays, pack_object, unpack_arrays)
from search_app.query_search import QuerySearcher

log = logging.getLogger(__name__)

# Loading may export the network to ONNX first (seconds at 32 px, a minute or more at 224 on a small CPU).
START_TIMEOUT_S = 600.0
# The one line a starting model process writes to the server: "ok", or "failed" and why.
READY, NOT_READY = "ok", "failed"
# A model process that keeps dying is started again at most this often.
RESTART_PAUSE_S = 2.0


class ModelProcessError(RuntimeError):
    """The model process could not start: its message says why (missing artifacts, a mismatched checkpoint...)."""


class ModelProcess:
    """The model process's supervisor: start it, restart it when it dies, stop it with the server.

    A plain subprocess (`python -m search_app.model_server`), not a multiprocessing.Process: gunicorn
    forks its workers from this process, and multiprocessing's exit handler in each worker would
    terminate or join the children it inherited the records of."""

    def __init__(self, config: Config, threads: int, start_timeout_s: float = START_TIMEOUT_S) -> None:
        self.config = config
        self.threads = threads
        self.start_timeout_s = start_timeout_s
        self._directory = tempfile.mkdtemp(prefix="lookbook-model-")
        self.address = ModelAddress(os.path.join(self._directory, "model.sock"), os.urandom(32),
                                    os.path.join(self._directory, "cores.lock"))
        self._process: subprocess.Popen | None = None
        self._lock = threading.Lock()  # between stop() and a restart in progress
        self._stopping = threading.Event()
        # gunicorn forks its workers inside our `with` block, and a worker leaving unwinds through it too:
        # only the process that started the model process may stop it.
        self._owner_pid = os.getpid()

    def start(self) -> None:
        """Start the model process and wait until it answers; ModelProcessError with its reason when it cannot."""
        self._spawn()
        threading.Thread(target=self._watch, name="model-process-watcher", daemon=True).start()

    def stop(self) -> None:
        """Stop the model process and remove its socket's directory (in the process that started it; elsewhere nothing)."""
        if os.getpid() != self._owner_pid:
            return
        with self._lock:
            self._stopping.set()
            if self._process is not None:
                _end(self._process)
        shutil.rmtree(self._directory, ignore_errors=True)

    def __enter__(self) -> ModelProcess:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _spawn(self) -> None:
        """Start a model process and wait until it has loaded the model; ModelProcessError if it cannot."""
        ready_read, ready_write = os.pipe()
        try:
            with self._lock:
                if self._stopping.is_set():
                    raise ModelProcessError("the server is stopping")
                self._process = process = subprocess.Popen(
                    [sys.executable, "-m", "search_app.model_server", str(ready_write)],
                    # Its own session: a terminal's Ctrl-C reaches the server, which then stops it, not both at once.
                    stdin=subprocess.PIPE, pass_fds=(ready_write,), start_new_session=True)
            os.close(ready_write)
            ready_write = -1
            # The settings go through a pipe rather than the command line, where `ps` would show the key.
            with process.stdin:
                pickle.dump((self.config, self.address, self.threads), process.stdin)
            answer = _wait_ready(ready_read, process, self.start_timeout_s)
        finally:
            os.close(ready_read)
            if ready_write >= 0:
                os.close(ready_write)
        if not answer.startswith(READY):
            _end(process)
            raise ModelProcessError(f"the model process could not start: {answer.partition(' ')[2]}")
        log.info("model process %d ready at %s with %d threads", process.pid, self.address.path, self.threads)

    def _watch(self) -> None:
        """Start the model process again whenever it exits without being asked to (the workers reconnect)."""
        while True:
            process = self._process
            code = process.wait()
            if self._stopping.is_set():
                return
            # gunicorn's master reaps every child it has, ours too, so the code is often lost (Popen says 0).
            log.error("the model process %d exited%s; starting it again", process.pid, f" (code {code})" if code else "")
            time.sleep(RESTART_PAUSE_S)
            try:
                self._spawn()
            except ModelProcessError as error:
                if self._stopping.is_set():
                    return
                log.error("%s", error)


def _end(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_ready(ready: int, process: subprocess.Popen, timeout_s: float) -> str:
    """The model process's one line: "ok" once it listens, "failed <why>" if loading failed."""
    deadline, received = time.monotonic() + timeout_s, b""
    while time.monotonic() < deadline:
        readable, _, _ = select.select([ready], [], [], 0.2)
        if readable:
            chunk = os.read(ready, 4096)
            received += chunk
            if not chunk or received.endswith(b"\n"):
                break
        elif process.poll() is not None:
            break
    if received.endswith(b"\n"):
        return received.decode("utf-8", "replace").strip()
    if process.poll() is None:
        return f"{NOT_READY} it did not load the model within {timeout_s:g} s"
    return f"{NOT_READY} it exited with code {process.returncode} before loading the model (see the log above)"


def run_model_process(config: Config, address: ModelAddress, threads: int, ready: IO[str]) -> None:
    """The model process: load the embedder and index, then answer the workers until terminated."""
    try:
        # Batches on this, the main thread (searcher.batcher.serve() below): torch's CPU forward passes ran
        # slower on any other (search_app.batching). With max_batch 1 they run on the connections' threads.
        searcher = load_searcher(config, threads, own_thread=False,
                                 exclusive=CoreTurn(address.turn_path).held if address.turn_path else None)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(address.path)  # left by a model process that died
        listener = Listener(address.path, family="AF_UNIX", authkey=address.authkey)
    except Exception as error:  # every reason not to start goes back to the server, which says it and exits
        log.exception("the model process could not start")
        ready.write(f"{NOT_READY} {type(error).__name__}: {error}".replace("\n", " ") + "\n")
        ready.close()
        raise SystemExit(1) from None
    ready.write(f"{READY}\n")
    ready.close()
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), name="parent-watcher", daemon=True).start()
    server = ModelServer(searcher, listener)
    if searcher.batcher.max_batch == 1:
        server.serve_forever()
        return
    threading.Thread(target=server.serve_forever, name="model-connections", daemon=True).start()
    searcher.batcher.serve()


def _exit_with_parent(parent: int) -> None:
    """A server killed outright (SIGKILL) cannot stop its model process: it notices and leaves by itself."""
    while os.getppid() == parent:
        time.sleep(1.0)
    log.warning("the server (process %d) is gone; the model process stops", parent)
    os._exit(0)


def load_searcher(config: Config, threads: int, own_thread: bool = True,
                  exclusive: Callable[[], contextlib.AbstractContextManager] | None = None) -> QuerySearcher:
    """The artifacts' index and the checkpoint that made it, embedding and scanning in micro-batches (on a
    thread of the batcher's own, or with ``own_thread`` false where ``searcher.batcher.serve()`` is called),
    each batch inside ``exclusive()`` when given."""
    from indexer.embeddings_file import read_embeddings
    from indexer.index import load_index
    from search_app.engine import artifact_paths, limit_threads, load_query_embedder, query_device

    embeddings_path, index_path = artifact_paths(config)
    stored = read_embeddings(embeddings_path)
    index = load_index(index_path, embeddings_path, config.index.gpu)
    limit_threads(threads)
    embedder = load_query_embedder(config, stored, index, query_device(config))
    return QuerySearcher(embedder, index, threading.Lock(), config.app.max_batch, config.app.batch_wait_ms / 1e3,
                         own_thread=own_thread, exclusive=exclusive or contextlib.nullcontext)


class ModelServer:
    """Answer each worker connection on a thread of its own, every search through the one batcher."""

    def __init__(self, searcher: QuerySearcher, listener: Listener) -> None:
        self.searcher = searcher
        self.listener = listener
        self.info = {
            "preprocessing": searcher.embedder.preprocessing,
            "runtime": searcher.runtime,
            "dimension": int(searcher.index.d),
        }
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._connections: set[Connection] = set()

    def serve_forever(self) -> None:
        """Accept connections until close()."""
        while not self._closed.is_set():
            try:
                connection = self.listener.accept()
            except (OSError, EOFError, multiprocessing.AuthenticationError) as error:
                if not self._closed.is_set():
                    log.warning("a connection to the model process was refused: %s", error)
                continue
            with self._lock:
                self._connections.add(connection)
            threading.Thread(target=self.answer, args=(connection,), name="model-connection", daemon=True).start()

    def close(self) -> None:
        """Stop accepting connections and close those open, as the process's end would."""
        self._closed.set()
        self.listener.close()
        with self._lock:
            for connection in self._connections:
                # Shut down, not closed under the thread reading it: its recv() ends with EOF and it closes it.
                with contextlib.suppress(OSError), socket.fromfd(connection.fileno(), socket.AF_UNIX,
                                                                socket.SOCK_STREAM) as duplicate:
                    duplicate.shutdown(socket.SHUT_RDWR)

    def _answer(self, kind: bytes, message: bytes) -> bytes:
        """The answer to a request that has one."""
        if kind == SEARCH:
            depth, (pixels,) = unpack_arrays(message)
            return pack_arrays(ARRAYS, self.searcher.search_prepared(pixels, depth))
        if kind == EMBED:
            _, (pixels,) = unpack_arrays(message)
            return pack_arrays(ARRAYS, [self.searcher.embedder.embed([pixels])[0]])
        if kind == STATS:
            return pack_object(PICKLED, {**self.searcher.stats(), "model_pid": os.getpid()})
        if kind == HELLO:
            return pack_object(PICKLED, self.info)
        raise ValueError(f"unknown message {kind!r}")

    def answer(self, connection: Connection) -> None:
        """Answer one connection's messages in order until it closes."""
        announced: list[contextlib.AbstractContextManager] = []  # this connection's requests being received
        try:
            while True:
                try:
                    message = connection.recv_bytes()
                except (OSError, EOFError):
                    return
                kind = message[:1]
                if kind == INCOMING:
                    mark = self.searcher.incoming()
                    mark.__enter__()
                    announced.append(mark)
                    continue
                if kind == LEFT:
                    if announced:
                        announced.pop().__exit__(None, None, None)
                    continue
                try:
                    answer = self._answer(kind, message)
                except Exception as error:  # the worker raises it for its request; this connection goes on
                    answer = pack_object(FAILED, (type(error).__name__, str(error)))
                try:
                    connection.send_bytes(answer)
                except OSError:
                    return
        finally:
            for mark in announced:
                mark.__exit__(None, None, None)
            with self._lock:
                self._connections.discard(connection)
            connection.close()


def main(argv: list[str]) -> None:
    """`python -m search_app.model_server READY_FD`, settings pickled on stdin (ModelProcess starts it so)."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    config, address, threads = pickle.load(sys.stdin.buffer)
    with os.fdopen(int(argv[0]), "w") as ready:
        run_model_process(config, address, threads, ready)


if __name__ == "__main__":
    main(sys.argv[1:])
