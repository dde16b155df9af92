"""serve --prod: the worker/thread layout from config, and the real server answering good and bad requests."""
from __future__ import annotations

import io
import json
import os
import signal
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
from PIL import Image

from config import AppConfig, ConfigError, load_config
from search_app.serving import resolve_layout


@pytest.mark.parametrize(
    "settings, cores, gunicorn_runs, expected",
    [
        # gunicorn's workers share one model process, which gets every core (or app.torch_threads).
        ({}, 2, True, ("gunicorn", 2, 8, 2, True)),
        ({}, 8, True, ("gunicorn", 2, 8, 8, True)),
        ({}, 16, True, ("gunicorn", 4, 8, 16, True)),
        ({}, 256, True, ("gunicorn", 8, 8, 256, True)),
        ({"server": "gunicorn"}, 1, True, ("gunicorn", 1, 8, 1, True)),
        ({"torch_threads": 2}, 16, True, ("gunicorn", 4, 8, 2, True)),
        ({"workers": 3}, 2, True, ("gunicorn", 3, 8, 2, True)),
        # One process: its own model.
        ({}, 1, True, ("waitress", 1, 8, 1, False)),
        ({}, 2, False, ("waitress", 1, 8, 2, False)),
        ({"server": "waitress"}, 16, True, ("waitress", 1, 8, 16, False)),
        ({"server": "waitress", "torch_threads": 1}, 2, True, ("waitress", 1, 8, 1, False)),
        # A model per worker: the cores divided among them.
        ({"shared_model": False}, 2, True, ("gunicorn", 2, 8, 1, False)),
        ({"shared_model": False}, 8, True, ("gunicorn", 2, 8, 4, False)),
        ({"shared_model": False}, 16, True, ("gunicorn", 4, 8, 4, False)),
        ({"shared_model": False}, 256, True, ("gunicorn", 8, 8, 32, False)),
        ({"shared_model": False, "server": "gunicorn", "workers": 4, "threads": 2}, 16, True, ("gunicorn", 4, 2, 4, False)),
        ({"shared_model": False, "torch_threads": 2}, 2, True, ("gunicorn", 1, 8, 2, False)),
        ({"shared_model": False, "torch_threads": 3}, 16, True, ("gunicorn", 5, 8, 3, False)),
        ({"shared_model": False, "workers": 3}, 6, True, ("gunicorn", 3, 8, 2, False)),
    ],
)
def test_the_layout_never_gives_torch_more_threads_than_cores(settings, cores, gunicorn_runs, expected):
    layout = resolve_layout(AppConfig(**settings), cores, gunicorn_runs)
    assert (layout.server, layout.workers, layout.threads, layout.torch_threads, layout.shared_model) == expected
    # Every model's threads together: the shared one's, or each worker's.
    assert (layout.torch_threads if layout.shared_model else layout.workers * layout.torch_threads) <= cores
    assert layout.server in layout.describe() and f"{layout.torch_threads} torch thread" in layout.describe()
    assert ("one model process" in layout.describe()) == layout.shared_model


@pytest.mark.parametrize(
    "settings, cores",
    [({"server": "gunicorn", "workers": 3}, 2), ({"torch_threads": 4}, 2), ({"workers": 2, "torch_threads": 2}, 2),
     ({"workers": 2}, 1), ({"server": "waitress", "torch_threads": 3}, 2)],
)
def test_an_oversubscribed_layout_is_a_config_error_naming_the_keys(settings, cores):
    with pytest.raises(ConfigError, match=rf"app\.workers × app\.torch_threads = .* is more than the {cores} CPU core"):
        resolve_layout(AppConfig(**settings, shared_model=False), cores)


@pytest.mark.parametrize(
    "settings, lone",
    [({}, True), ({"lone_queries_in_workers": False}, False), ({"shared_model": False}, False),
     ({"server": "waitress"}, False)],
)
def test_lone_queries_run_in_workers_only_beside_a_shared_model_and_unless_turned_off(settings, lone):
    layout = resolve_layout(AppConfig(**settings), 2, gunicorn_runs=True)
    assert layout.lone_queries_in_workers == lone
    assert ("its worker's own copy" in layout.describe()) == lone


def test_a_shared_model_with_more_threads_than_cores_is_a_config_error():
    with pytest.raises(ConfigError, match="app.torch_threads = 4 is more than the 2 CPU cores"):
        resolve_layout(AppConfig(torch_threads=4), 2, gunicorn_runs=True)


@pytest.mark.parametrize(
    "settings, message",
    [({"server": "gunicorn"}, "app.server: gunicorn does not run on this platform"),
     ({"workers": 2}, "app.workers: waitress serves from one process, got 2; gunicorn does not run on this platform")],
)
def test_where_gunicorn_cannot_run_asking_for_it_is_a_config_error(settings, message):
    with pytest.raises(ConfigError, match=message):
        resolve_layout(AppConfig(**settings), 4, gunicorn_runs=False)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"app.server": "uwsgi"}, "app.server: 'uwsgi' is not one of auto, waitress, gunicorn"),
        ({"app.server": "waitress", "app.workers": "2"}, "app.workers: waitress serves from one process"),
        ({"app.workers": "-1"}, "app.workers: -1 must be an integer from 0 to 64"),
        ({"app.threads": "0"}, "app.threads"),
        ({"app.max_batch": "0"}, "app.max_batch"),
        ({"app.batch_wait_ms": "-1"}, "app.batch_wait_ms"),
        ({"app.batch_wait_ms": "5000"}, "app.batch_wait_ms: 5000.0 must be at most 1000"),
        ({"app.torch_threads": "many"}, "app.torch_threads: expected an integer"),
        ({"app.shared_model": "maybe"}, "app.shared_model: expected true or false, got 'maybe'"),
        ({"app.lone_queries_in_workers": "sometimes"}, "app.lone_queries_in_workers: expected true or false, got 'sometimes'"),
    ],
)
def test_bad_serving_settings_name_the_key(overrides, message):
    with pytest.raises(ConfigError) as caught:
        load_config(env={}, overrides=overrides)
    assert message in str(caught.value)


def test_serving_settings_come_from_the_environment_too():
    config = load_config(env={"LOOKBOOK_APP_SERVER": "gunicorn", "LOOKBOOK_APP_WORKERS": "2",
                              "LOOKBOOK_APP_BATCH_WAIT_MS": "5"})
    assert (config.app.server, config.app.workers, config.app.batch_wait_ms) == ("gunicorn", 2, 5.0)


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
@pytest.mark.parametrize("server", ["prod_server", "waitress_prod_server", "per_worker_prod_server"])
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
    if server == "prod_server":
        # There the queries sent one at a time were answered by their workers' own models
        # (search_app.lone_queries), and the concurrent ones, the same, by the model process.
        with urllib.request.urlopen(prod_server + "/healthz", timeout=10) as response:
            batching = json.load(response)["batching"]
        assert batching["worker_lone_queries"] >= len(expected) and batching["items"] > 0

    bad = [
        (*multipart(b"hello"), 400, "is not an image"),
        (*multipart(b"\xff" * (10 * 2**20 + 10)), 413, "larger than the limit"),
        (b'{"item_id": "nope"}', "application/json", 404, "no catalog item has the id 'nope'"),
    ]
    for body, content_type, status, message in bad:
        got, answer = post(prod_server + "/api/search", body, content_type)
        assert got == status and message in answer["error"]
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


@pytest.mark.slow
@pytest.mark.parametrize("lone_queries_in_workers", [False, True])
def test_when_the_model_process_dies_searches_get_503_until_it_is_back(sample_artifacts, tmp_path,
                                                                       lone_queries_in_workers):
    from benchmarks.server_process import free_port, start_server, stop_server

    port = free_port()
    server = start_server(sample_artifacts, port, tmp_path / "serve.log",
                          ("app.server=gunicorn", f"app.lone_queries_in_workers={str(lone_queries_in_workers).lower()}"))
    base, search = f"http://127.0.0.1:{port}", lambda: post(f"{base}/api/search", *multipart(photo((200, 30, 30))))
    try:
        status, health = get_json(base + "/healthz")
        assert status == 200 and health["batching"]["model_process"]
        first_model = health["batching"]["model_pid"]
        status, answer = search()
        assert status == 200
        first_item = answer["results"][0]["item_id"]
        os.kill(first_model, signal.SIGKILL)
        status, answer = search()
        if lone_queries_in_workers:
            # A query alone in the server is its worker's to answer, model process or not, and the same.
            assert status == 200 and answer["results"][0]["item_id"] == first_item
        else:
            assert status == 503 and "the search model is not available right now" in answer["error"]
        status, health = get_json(base + "/healthz")
        assert status == 503 and health["status"] == "unavailable" and not health["model_loaded"]
        assert "restarting" in health["error"]
        # What needs no model still answers: "more like this" searches with the stored vectors.
        status, answer = post(f"{base}/api/search", json.dumps({"item_id": first_item}).encode(), "application/json")
        assert status == 200 and answer["results"]
        # The server starts the model process again; the workers' next queries reach it.
        deadline = time.monotonic() + 120
        while search()[0] != 200 or get_json(base + "/healthz")[0] != 200:
            assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()[-3000:]
            time.sleep(0.5)
        status, health = get_json(base + "/healthz")
        assert status == 200 and health["batching"]["model_pid"] not in (first_model, None)
    finally:
        stop_server(server)
    log = (tmp_path / "serve.log").read_text()
    assert f"the model process {first_model} exited" in log
    # Stopping the server stopped its model process too.
    with pytest.raises(ProcessLookupError):
        os.kill(health["batching"]["model_pid"], 0)


def gunicorn_workers(master: int) -> set[int]:
    """The worker processes of a gunicorn master (its children but the model process)."""
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    return {int(pid) for pid in children
            if b"search_app.model_server" not in Path(f"/proc/{pid}/cmdline").read_bytes()}


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="finds gunicorn's workers through /proc (Linux)")
def test_workers_that_die_give_back_their_search_count_slots(sample_artifacts, tmp_path):
    from benchmarks.server_process import free_port, start_server, stop_server

    port = free_port()
    server = start_server(sample_artifacts, port, tmp_path / "serve.log", ("app.server=gunicorn", "app.workers=2"))
    base = f"http://127.0.0.1:{port}"
    try:
        workers = gunicorn_workers(server.pid)
        assert len(workers) == 2
        # Four slots for two workers: without them given back, the third replacement would find none.
        for _ in range(3):
            os.kill(min(workers), signal.SIGKILL)
            deadline = time.monotonic() + 120
            while len(now := gunicorn_workers(server.pid)) != 2 or now == workers:
                assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()[-3000:]
                time.sleep(0.2)
            workers = now
        deadline = time.monotonic() + 120
        while get_json(base + "/healthz")[0] != 200:  # the replacements have loaded
            assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()[-3000:]
            time.sleep(0.2)
        before = get_json(base + "/healthz")[1]["batching"]["worker_lone_queries"]
        for colour in ((200, 30, 30), (30, 200, 30), (30, 30, 200)):
            assert post(f"{base}/api/search", *multipart(photo(colour)))[0] == 200
        assert get_json(base + "/healthz")[1]["batching"]["worker_lone_queries"] == before + 3
    finally:
        stop_server(server)
    assert "slots are taken" not in (tmp_path / "serve.log").read_text()


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
