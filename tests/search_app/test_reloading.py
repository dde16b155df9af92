"""A new build is swapped into a running server: no restart, no failed request, the new items served after."""
from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request

import pytest
from click.testing import CliRunner

from embedder.catalogs.sample_deepfashion import write_sample_catalog
from manage import cli
from search_app import create_app
from search_app.reloading import ServedEngine
from tests.conftest import Listing, sample_build_arguments
from tests.search_app.conftest import encode, post_image
from tests.search_app.test_serving import multipart, photo, post


def test_a_new_build_is_swapped_in_and_a_broken_one_is_not(config, make_engine, catalog_images):
    old, new = make_engine(), make_engine(model_name="the new one")
    build = {"index_created_at": "old"}

    loads = []

    def load():
        loads.append(build["index_created_at"])
        if build["index_created_at"] == "broken":
            raise OSError("index.faiss: truncated")
        return new

    served = ServedEngine(old, dict(build), load=load, check=lambda: dict(build), retire_after_s=0.05)
    client = create_app(config, engine=served).test_client()
    assert not served.check_now()  # nothing new
    build["index_created_at"] = "new"
    assert served.check_now() and served.current is new
    health = client.get("/healthz").get_json()
    assert health["model_name"] == "the new one"
    assert health["build"]["index_created_at"] == "new" and health["build"]["reloads"] == 1
    time.sleep(0.3)
    assert old.queries.batcher._closed  # retired once requests in flight could have finished

    build["index_created_at"] = "broken"
    assert not served.check_now() and served.current is new
    assert "truncated" in client.get("/healthz").get_json()["build"]["last_reload_error"]
    assert not served.check_now() and loads.count("broken") == 1  # not tried again at once
    served.retry_after_s = 0
    assert not served.check_now() and loads.count("broken") == 2  # but again later
    assert post_image(client, "/api/search", encode(catalog_images[0])).status_code == 200


def search_load(base: str, stop: threading.Event, statuses: list, seconds: float = 120, most: int = 2000) -> None:
    """Photo searches one after another until told to stop (bounded in time and count), recording each
    answer's status, or the exception of a failed connection."""
    deadline = time.monotonic() + seconds
    for turn in range(most):
        if stop.is_set() or time.monotonic() > deadline:
            return
        try:
            statuses.append(post(base + "/api/search?k=5", *multipart(photo((turn * 37 % 255, 90, 160))))[0])
        except (urllib.error.URLError, ConnectionError, OSError) as error:
            statuses.append(repr(error))


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.load(response)


@pytest.mark.slow
def test_a_server_under_load_swaps_in_a_new_build_without_a_failed_request(tmp_path):
    from benchmarks.server_process import free_port, start_server, stop_server

    listing = Listing(write_sample_catalog(tmp_path / "catalog", images_per_category=4, seed=8))
    new_items = listing.readable[::9][:4]
    listing.show_only([name for name in listing.names if name not in new_items])
    arguments = sample_build_arguments(listing.root, tmp_path / "artifacts")
    assert CliRunner().invoke(cli, [*arguments, "build-index"]).exit_code == 0
    port = free_port()
    server = start_server(arguments, port, tmp_path / "serve.log", ("app.reload_check_s=0.5",))
    base = f"http://127.0.0.1:{port}"
    try:
        before = get_json(base + "/healthz")
        stop, statuses = threading.Event(), [[], [], []]
        clients = [threading.Thread(target=search_load, args=(base, stop, answers)) for answers in statuses]
        for client in clients:
            client.start()
        time.sleep(1)
        listing.show_only(listing.names)  # the shop adds four products
        result = CliRunner().invoke(cli, [*arguments, "build-index"])
        assert result.exit_code == 0, result.output
        deadline = time.monotonic() + 90
        while get_json(base + "/healthz")["build"]["reloads"] < 1 and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1)  # and searches go on against the new build
        stop.set()
        for client in clients:
            client.join()
        after = get_json(base + "/healthz")
        folder, _, file_name = new_items[0].removeprefix("img/").rpartition("/")
        new_item = get_json(f"{base}/api/items/{folder}--{file_name.removesuffix('.jpg')}/similar?k=3")
    finally:
        stop_server(server)
    answers = [status for client in statuses for status in client]
    assert after["build"]["reloads"] == 1 and after["build"]["last_reload_error"] is None
    assert after["items"] == before["items"] + 4
    assert after["build"]["embeddings_sha256"] != before["build"]["embeddings_sha256"]
    assert len(answers) > 20 and set(answers) == {200}, [a for a in answers if a != 200][:5]
    assert len(new_item["results"]) == 3
