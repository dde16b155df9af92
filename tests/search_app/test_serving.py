"""serve --prod: its server from config, and the real server answering good and bad requests."""
from __future__ import annotations

import io
import json
import os
import signal
import socket
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
from PIL import Image

from config import ConfigError, load_config
from search_app.serving import resolve_server


@pytest.mark.parametrize(
    "server, gunicorn_runs, expected",
    [("waitress", True, "waitress"), ("waitress", False, "waitress"), ("gunicorn", True, "gunicorn")],
)
def test_the_server_is_the_one_asked_for(server, gunicorn_runs, expected):
    assert resolve_server(server, gunicorn_runs) == expected


def test_the_default_server_reads_whole_requests_before_a_thread_sees_them():
    assert load_config(env={}).app.server == "waitress"


def test_asking_for_gunicorn_where_it_cannot_run_is_a_config_error():
    with pytest.raises(ConfigError, match="gunicorn does not run on this platform"):
        resolve_server("gunicorn", gunicorn_runs=False)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"app.server": "uwsgi"}, "app.server: 'uwsgi' is not one of waitress, gunicorn"),
        ({"app.threads": "0"}, "app.threads"),
        ({"app.max_batch": "0"}, "app.max_batch"),
        ({"app.batch_wait_ms": "-1"}, "app.batch_wait_ms"),
        ({"app.batch_wait_ms": "5000"}, "app.batch_wait_ms: 5000.0 must be at most 1000"),
        # One process serves: the settings of the multi-process design are gone, and say so.
        ({"app.workers": "2"}, "app.workers"),
    ],
)
def test_bad_serving_settings_name_the_key(overrides, message):
    with pytest.raises(ConfigError) as caught:
        load_config(env={}, overrides=overrides)
    assert message in str(caught.value)


def test_serving_settings_come_from_the_environment_too():
    config = load_config(env={"LOOKBOOK_APP_SERVER": "gunicorn", "LOOKBOOK_APP_THREADS": "4",
                              "LOOKBOOK_APP_BATCH_WAIT_MS": "5"})
    assert (config.app.server, config.app.threads, config.app.batch_wait_ms) == ("gunicorn", 4, 5.0)


def post(url: str, body: bytes, content_type: str) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": content_type}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


def multipart(data: bytes, filename: str = "photo.png") -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{filename}\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def photo(colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (120, 160), colour).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.mark.slow
@pytest.mark.parametrize("server", ["prod_server", "gunicorn_prod_server"])
def test_the_production_server_answers_concurrent_searches_and_bad_input(request, server):
    prod_server = request.getfixturevalue(server)
    with urllib.request.urlopen(prod_server + "/healthz", timeout=10) as response:
        health = json.load(response)
    assert health["model_loaded"] and health["index_loaded"] and health["items"] == 27
    assert health["batching"]["max_batch"] == 8

    colours = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30)] * 4
    expected = {colour: post(prod_server + "/api/search", *multipart(photo(colour)))[1]["results"]
                for colour in set(colours)}
    answers: list = [None] * len(colours)

    def search(number: int) -> None:
        answers[number] = post(prod_server + "/api/search", *multipart(photo(colours[number])))

    threads = [threading.Thread(target=search, args=(number,)) for number in range(len(colours))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # Batched or not, each query gets its own answer: the same as when it was alone.
    for colour, (status, answer) in zip(colours, answers):
        assert status == 200
        assert [r["item_id"] for r in answer["results"]] == [r["item_id"] for r in expected[colour]]
        assert [r["similarity"] for r in answer["results"]] == pytest.approx(
            [r["similarity"] for r in expected[colour]], abs=1e-4)
    with urllib.request.urlopen(prod_server + "/healthz", timeout=10) as response:
        batching = json.load(response)["batching"]
    assert batching["items"] >= len(colours) + len(expected) and batching["largest_batch"] >= 1

    bad = [
        (*multipart(b"hello"), 400, "is not an image"),
        (*multipart(b"\xff" * (10 * 2**20 + 10)), 413, "larger than the limit"),
        (b'{"item_id": "nope"}', "application/json", 400, "GET /api/items/<item_id>/similar"),
    ]
    for body, content_type, status, message in bad:
        got, answer = post(prod_server + "/api/search", body, content_type)
        assert got == status and message in answer["error"]
    assert get_json(prod_server + "/api/items/nope/similar") == (404, {"error": "no catalog item has the id 'nope'"})
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(prod_server + "/api/items/..%2F..%2Fmanage.py/image", timeout=10)
    assert caught.value.code == 404
    assert post(prod_server + "/api/search", *multipart(photo((30, 30, 200))))[0] == 200


def get_json(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


def gunicorn_worker(master: int) -> int:
    """The pid of a gunicorn master's one worker."""
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    assert len(children) == 1, children
    return int(children[0])


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="finds gunicorn's worker through /proc (Linux)")
def test_a_worker_that_dies_is_replaced_and_searches_are_answered_again(sample_artifacts, tmp_path):
    from benchmarks.server_process import free_port, start_server, stop_server

    port = free_port()
    server = start_server(sample_artifacts, port, tmp_path / "serve.log", ("app.server=gunicorn",))
    base, search = f"http://127.0.0.1:{port}", lambda: post(f"{base}/api/search", *multipart(photo((200, 30, 30))))
    try:
        status, answer = search()
        assert status == 200
        first_item, first_worker = answer["results"][0]["item_id"], gunicorn_worker(server.pid)
        os.kill(first_worker, signal.SIGKILL)
        # gunicorn's master starts another worker, which loads the model and index again.
        deadline = time.monotonic() + 120
        while True:
            try:
                status, answer = search()
            except (urllib.error.URLError, ConnectionError):
                status = None
            if status == 200:
                break
            assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()[-3000:]
            time.sleep(0.5)
        assert answer["results"][0]["item_id"] == first_item
        assert gunicorn_worker(server.pid) != first_worker
    finally:
        stop_server(server)


@pytest.mark.parametrize(("operator_setting", "expected"), [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_serve_prod_lets_openmp_threads_sleep_unless_the_operator_said_otherwise(monkeypatch, operator_setting,
                                                                               expected):
    import os

    from click.testing import CliRunner

    import search_app.serving
    from manage import cli

    environment = {key: value for key, value in os.environ.items() if key != "OMP_WAIT_POLICY"}
    if operator_setting is not None:
        environment["OMP_WAIT_POLICY"] = operator_setting
    monkeypatch.setattr(os, "environ", environment)
    seen = {}
    monkeypatch.setattr(search_app.serving, "serve_production",
                        lambda config, host, port: seen.update(policy=os.environ.get("OMP_WAIT_POLICY")))
    result = CliRunner().invoke(cli, ["serve", "--prod", "--host", "127.0.0.1", "--port", "5999"])
    assert result.exit_code == 0, result.output
    assert seen == {"policy": expected}


def stalled_requests(base: str, count: int) -> list[socket.socket]:
    """Connections that begin a search and then send nothing more: half stop inside the headers, half
    inside a body that was announced as 100 KB."""
    host, port = base.removeprefix("http://").split(":")
    stalled = []
    for number in range(count):
        connection = socket.create_connection((host, int(port)), timeout=10)
        if number % 2:
            connection.sendall(b"POST /api/search HTTP/1.1\r\nHost: shop\r\nContent-Type: image/png\r\n"
                               b"Content-Length: 100000\r\n\r\n\x89PNG\r\n")
        else:
            connection.sendall(b"POST /api/search HTTP/1.1\r\nHost: sh")
        stalled.append(connection)
    return stalled


@pytest.mark.slow
def test_clients_that_stop_sending_hold_no_request_thread(prod_server):
    # gunicorn reads requests on its request threads: 16 such clients hold all 8 and this search hangs.
    # It is for use behind a buffering proxy (docs/security.md).
    base = prod_server
    # Twice as many stalled requests as the server has request threads (app.threads, 8).
    stalled = stalled_requests(base, 16)
    try:
        status, answer = post(base + "/api/search", *multipart(photo((30, 200, 30))))
        assert status == 200 and len(answer["results"]) == 12
        assert get_json(base + "/healthz")[0] == 200
    finally:
        for connection in stalled:
            connection.close()
