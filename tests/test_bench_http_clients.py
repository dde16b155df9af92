"""The load runs' HTTP clients against a real server on 127.0.0.1: the same answers from both, one kept-alive
connection for many requests, and a clear error for an answer the lean client cannot read."""
from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from benchmarks.http_clients import CLIENTS, AnswerError, LeanConnection


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive unless an answer says otherwise
    connections: set = set()

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Handler.connections.add(self.client_address)
        if self.path == "/chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.write(b"0\r\n\r\n")
            return
        answer = b'{"results": "%d bytes of %s"}' % (len(body), self.headers["Content-Type"].encode())
        self.send_response(404 if self.path == "/missing" else 200)
        self.send_header("Content-Length", str(len(answer)))
        if self.path == "/close":
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture()
def port():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    Handler.connections = set()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("kind", sorted(CLIENTS))
def test_both_clients_read_the_same_answers_over_one_connection(port, kind):
    connection = CLIENTS[kind]("127.0.0.1", port, timeout=10)
    try:
        for size in (0, 3, 200_000):  # an answer larger than one read of the socket comes whole
            assert connection.post("/api/search?k=2", b"x" * size, "image/png") == \
                (200, b'{"results": "%d bytes of image/png"}' % size)
        assert connection.post("/missing", b"", "image/png")[0] == 404
    finally:
        connection.close()
    assert len(Handler.connections) == 1


def test_the_lean_client_connects_again_after_an_answer_that_closes(port):
    connection = LeanConnection("127.0.0.1", port, timeout=10)
    assert connection.post("/close", b"ab", "image/png")[0] == 200
    assert connection.post("/api/search", b"abc", "image/png") == (200, b'{"results": "3 bytes of image/png"}')
    connection.close()
    assert len(Handler.connections) == 2


def test_an_answer_without_a_length_is_an_error_that_names_it(port):
    connection = LeanConnection("127.0.0.1", port, timeout=10)
    with pytest.raises(AnswerError, match="a chunked answer: this client reads Content-Length only"):
        connection.post("/chunked", b"", "image/png")
    assert connection.post("/api/search", b"", "image/png")[0] == 200  # a fresh connection goes on
    connection.close()
