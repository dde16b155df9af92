"""Lone queries in the worker: the turn at the cores between processes, the shared search counts, and a
worker's choice between its own model and the model process (a stand-in model over a real Unix socket)."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from multiprocessing.connection import Listener

import faiss
import numpy as np
import pytest

from embedder.transforms import build_pixel_transform
from search_app.lone_queries import CoreTurn, LoneQuerySearcher, SearchCounts
from search_app.model_client import ModelAddress, RemoteQuerySearcher
from search_app.model_server import ModelServer
from search_app.query_search import QueryEmbedder, QuerySearcher
from tests.search_app.stand_in_model import CATALOG, PREPROCESSING, CountingEmbed, colour_features, random_image

HOLD_FOREVER = """
import fcntl, os, sys, time
descriptor = os.open(sys.argv[1], os.O_RDWR)
fcntl.flock(descriptor, fcntl.LOCK_EX)
print("held", flush=True)
time.sleep(600)
"""


def test_one_process_at_a_time_has_the_turn_and_a_dead_holder_leaves_it(tmp_path):
    path = str(tmp_path / "cores.lock")
    mine, theirs = CoreTurn(path), CoreTurn(path)  # two opens: as two processes' would be
    assert mine.try_take()
    assert not theirs.try_take()
    mine.release()
    assert theirs.try_take()
    theirs.release()

    holder = subprocess.Popen([sys.executable, "-c", HOLD_FOREVER, path], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert not mine.try_take()
    finally:
        holder.kill()
        holder.wait()
    assert mine.try_take()  # the kernel let go of the killed process's lock
    mine.release()


def test_a_thread_waiting_for_the_turn_runs_only_after_it_is_given_back(tmp_path):
    path = str(tmp_path / "cores.lock")
    worker, model = CoreTurn(path), CoreTurn(path)
    given_back, ran_after = threading.Event(), []

    def batch() -> None:
        with model.held():
            ran_after.append(given_back.is_set())

    assert worker.try_take()
    thread = threading.Thread(target=batch)
    thread.start()
    time.sleep(0.3)
    given_back.set()
    worker.release()
    thread.join(10)
    assert ran_after == [True]
    # Within a process the thread lock excludes what flock would not.
    with model.held():
        assert not model.try_take()


def test_search_counts_are_shared_with_forked_workers_and_wiped_with_their_slots():
    counts = SearchCounts(2)
    first, second = counts.take_slot(), counts.take_slot()
    with pytest.raises(RuntimeError, match="all 2 search-count slots are taken"):
        counts.take_slot()
    ready_read, ready_write = os.pipe()
    child = os.fork()
    if child == 0:  # a worker that enters twice, answers one alone, and dies in the middle of a search
        counts.enter(first)
        counts.enter(first)
        counts.count_lone(first)
        counts.leave(first)
        os.write(ready_write, b"x")
        os._exit(0)
    os.close(ready_write)
    assert os.read(ready_read, 1) == b"x"
    os.waitpid(child, 0)
    os.close(ready_read)
    assert counts.total() == 1 and counts.lone_total() == 1
    assert counts.enter(second) == 2
    counts.free_slot(first)  # the master, told the worker exited
    assert counts.total() == 1 and counts.lone_total() == 1  # what was answered stays counted
    counts.leave(second)
    assert counts.total() == 0
    assert counts.take_slot() == first


@pytest.fixture()
def worker(tmp_path):
    """(LoneQuerySearcher of a worker in slot 0, the model process's embed, the worker's own embed, counts, turn
    path, model process's searcher) against a ModelServer on a socket in tmp_path that takes its turns."""
    rng = np.random.default_rng(0)
    prepare = build_pixel_transform(PREPROCESSING)
    index = faiss.IndexFlatIP(6)
    index.add(colour_features([prepare(random_image(rng)) for _ in range(CATALOG)]))
    turn_path = str(tmp_path / "cores.lock")
    model_embed, own_embed = CountingEmbed(), CountingEmbed()
    model = QuerySearcher(QueryEmbedder(prepare, model_embed, "stand-in", PREPROCESSING), index, threading.Lock(),
                          max_batch=8, max_wait_s=0.05, exclusive=CoreTurn(turn_path).held)
    address = ModelAddress(str(tmp_path / "model.sock"), os.urandom(16), turn_path)
    server = ModelServer(model, Listener(address.path, family="AF_UNIX", authkey=address.authkey))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    counts = SearchCounts(2)
    slot = counts.take_slot()
    own = QuerySearcher(QueryEmbedder(prepare, own_embed, "stand-in", PREPROCESSING), index, threading.Lock())
    remote = RemoteQuerySearcher.connect(address, dimension=6, transform_for=build_pixel_transform)
    lone = LoneQuerySearcher(remote, own, counts, slot, CoreTurn(turn_path))
    yield lone, model_embed, own_embed, counts, turn_path, model
    lone.close()
    server.close()
    model.close()


def test_a_query_alone_in_the_server_is_answered_by_the_worker_itself_and_the_same(worker):
    lone, model_embed, own_embed, _, _, model = worker
    image = random_image(np.random.default_rng(1))
    with lone.incoming():
        vector, distances, rows = lone.search(image, 7)
    assert own_embed.sizes == [1] and model_embed.sizes == []
    expected = model.search(image, 7)
    np.testing.assert_allclose(vector, expected[0], rtol=1e-6)
    np.testing.assert_array_equal(rows, expected[2])
    stats = lone.stats()
    assert stats["worker_lone_queries"] == 1 and stats["model_process"] and stats["items"] == 1


def test_a_query_with_company_or_without_the_turn_goes_to_the_model_process(worker):
    lone, model_embed, own_embed, counts, turn_path, _ = worker
    image = random_image(np.random.default_rng(2))
    other_worker = counts.take_slot()
    with lone.incoming():
        counts.enter(other_worker)  # another worker's request came in meanwhile
        company = lone.search(image, 5)
        counts.leave(other_worker)
    counts.enter(other_worker)
    with lone.incoming():  # came while another was in: announced to the model process, and its, even alone now
        counts.leave(other_worker)
        came_with_company = lone.search(image, 5)
    assert own_embed.sizes == [] and model_embed.sizes == [1, 1]

    holder = CoreTurn(turn_path)
    with lone.incoming():
        assert holder.try_take()  # as the model process does for a batch
        released = threading.Timer(0.2, holder.release)
        released.start()
        without_turn = lone.search(image, 5)  # so it goes there, and its batch waits for the turn
        released.join()
    assert own_embed.sizes == [] and model_embed.sizes == [1, 1, 1]
    assert lone.search(image, 5)[2].tolist() == company[2].tolist()  # outside a request: the model process's
    assert model_embed.sizes == [1, 1, 1, 1] and lone.stats()["worker_lone_queries"] == 0
    for found in (came_with_company, without_turn):
        np.testing.assert_array_equal(found[2], company[2])
