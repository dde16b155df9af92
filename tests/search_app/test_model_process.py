"""The shared model process: workers' RemoteQuerySearcher against a ModelServer over a real Unix socket.

The model here is a stand-in (mean colours of the prepared pixels), so these tests need no checkpoint;
the served path with a real network is tests/search_app/test_serving.py's production server.
"""
from __future__ import annotations

import os
import threading
from multiprocessing.connection import Listener

import faiss
import numpy as np
import pytest

from embedder.transforms import build_pixel_transform
from search_app.model_client import ModelAddress, ModelUnavailable, RemoteQuerySearcher
from search_app.model_server import ModelProcess, ModelProcessError, ModelServer
from search_app.query_search import QueryEmbedder, QuerySearcher
from tests.search_app.stand_in_model import CATALOG, PREPROCESSING, CountingEmbed, colour_features, random_image

@pytest.fixture()
def served(tmp_path):
    """(local QuerySearcher, address, server, embed) with a ModelServer answering on a socket in tmp_path."""
    rng = np.random.default_rng(0)
    prepare = build_pixel_transform(PREPROCESSING)
    catalog = colour_features([prepare(random_image(rng)) for _ in range(CATALOG)])
    index = faiss.IndexFlatIP(catalog.shape[1])
    index.add(catalog)
    embed = CountingEmbed()
    embedder = QueryEmbedder(prepare=prepare, embed=embed, runtime="stand-in", preprocessing=PREPROCESSING)
    searcher = QuerySearcher(embedder, index, threading.Lock(), max_batch=8, max_wait_s=0.5)
    address = ModelAddress(str(tmp_path / "model.sock"), os.urandom(16))
    server = ModelServer(searcher, Listener(address.path, family="AF_UNIX", authkey=address.authkey))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield searcher, address, server, embed
    server.close()
    searcher.close()


def test_a_worker_gets_the_same_vectors_and_neighbours_as_the_model_process_would_give_itself(served):
    local, address, _, _ = served
    remote = RemoteQuerySearcher.connect(address, dimension=6, transform_for=build_pixel_transform)
    assert remote.runtime == "stand-in"
    rng = np.random.default_rng(1)
    for _ in range(5):
        image = random_image(rng)
        vector, distances, rows = remote.search(image, 7)
        expected = local.search(image, 7)
        assert vector.shape == (1, 6) and rows.shape == distances.shape == (1, 7)
        np.testing.assert_allclose(vector, expected[0], rtol=1e-6)
        np.testing.assert_array_equal(rows, expected[2])
        np.testing.assert_allclose(remote.embed(image), expected[0][0], rtol=1e-6)
    stats = remote.stats()
    # The worker's 5 searches and the 5 made here went through the model process's one batcher.
    assert stats["model_process"] and stats["items"] == 10 and stats["max_batch"] == 8


def test_concurrent_queries_of_several_workers_share_batches(served):
    _, address, _, embed = served
    # Two workers' searchers (processes in production; their connections are what matters here).
    workers = [RemoteQuerySearcher.connect(address, dimension=6, transform_for=build_pixel_transform) for _ in range(2)]
    rng = np.random.default_rng(2)
    images = [random_image(rng) for _ in range(8)]
    alone = [workers[0].search(image, 3)[2].tolist() for image in images]
    embed.sizes.clear()
    inside, answers = threading.Barrier(8), [None] * 8

    def query(number: int) -> None:
        worker = workers[number % 2]
        with worker.incoming():  # every request announces itself, as the app does, then searches
            inside.wait()
            answers[number] = worker.search(images[number], 3)[2].tolist()

    threads = [threading.Thread(target=query, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert answers == alone
    # Announced together, the 8 queries of both workers wait for each other: fewer passes than queries.
    assert sum(embed.sizes) == 8 and max(embed.sizes) > 4, embed.sizes


def test_the_model_process_errors_reach_the_worker_as_exceptions(served):
    _, address, _, _ = served
    remote = RemoteQuerySearcher.connect(address, dimension=6, transform_for=build_pixel_transform)
    with pytest.raises(ValueError, match="depth must be at least 1, got 0"):
        remote.search(random_image(np.random.default_rng(3)), 0)
    assert remote.search(random_image(np.random.default_rng(3)), 2)[2].shape == (1, 2)  # the connection goes on


def test_a_model_with_vectors_of_another_size_is_refused_at_connection(served):
    _, address, _, _ = served
    with pytest.raises(ValueError, match="vectors of dimension 6 but this worker's index holds vectors of dimension 128"):
        RemoteQuerySearcher.connect(address, dimension=128, transform_for=build_pixel_transform)


def test_a_wrong_key_or_no_model_process_is_model_unavailable(served, tmp_path):
    _, address, _, _ = served
    with pytest.raises(ModelUnavailable, match="no model process answered at .* within 0.3 s"):
        RemoteQuerySearcher.connect(ModelAddress(address.path, b"not the key"), dimension=6, transform_for=build_pixel_transform,
                                    timeout_s=0.3)
    with pytest.raises(ModelUnavailable, match="no model process answered"):
        RemoteQuerySearcher.connect(ModelAddress(str(tmp_path / "nobody.sock"), b"k"), dimension=6, transform_for=build_pixel_transform,
                                    timeout_s=0.3)


def test_a_worker_finds_a_restarted_model_process_again(served):
    local, address, server, _ = served
    remote = RemoteQuerySearcher.connect(address, dimension=6, transform_for=build_pixel_transform)
    image = random_image(np.random.default_rng(4))
    expected = remote.search(image, 3)[2].tolist()
    server.close()
    os.unlink(address.path) if os.path.exists(address.path) else None
    with pytest.raises(ModelUnavailable):
        remote.search(image, 3)
    # The new model process listens at the same address; the worker's next query reaches it.
    again = ModelServer(local, Listener(address.path, family="AF_UNIX", authkey=address.authkey))
    threading.Thread(target=again.serve_forever, daemon=True).start()
    try:
        assert remote.search(image, 3)[2].tolist() == expected
    finally:
        again.close()


@pytest.mark.slow
def test_a_model_process_that_cannot_load_stops_the_server_with_the_reason(tmp_path):
    from config import load_config

    config = load_config(env={}, overrides={"artifacts_dir": str(tmp_path / "nothing-here")})
    model = ModelProcess(config, threads=1, start_timeout_s=120)
    with pytest.raises(ModelProcessError, match=r"could not start: FileNotFoundError: .*embeddings\.h5 and .*"
                                                r"index\.faiss not found; run `python manage.py build-index` first"):
        model.start()
    model.stop()
    assert not os.path.exists(os.path.dirname(model.address.path))
