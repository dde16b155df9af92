"""The load runs' HTTP clients: each a keep-alive connection that posts a body and returns (status, body).

``lean`` sends each request in one write and reads the answer by its Content-Length, as native load
generators (wrk, oha) do. ``http.client`` is the standard library's, which parses each answer's headers
with email.parser through a buffered file: 0.6-0.8 ms of CPU a request on the 2-core AMD EPYC, next to
a server that adds ~3-4 ms to a 32-px query, and under 8 clients that CPU is taken from the server being
measured. A shopper's browser parses HTTP in native code, closer to ``lean``.
"""
from __future__ import annotations

import http.client
import socket
from collections.abc import Callable
from typing import Protocol

RECEIVE = 1 << 16


class AnswerError(OSError):
    """An answer this client cannot read (no Content-Length, chunked, a garbled status line) or a cut connection."""


class Connection(Protocol):
    """What a load run's client thread uses."""

    def post(self, url: str, body: bytes, content_type: str) -> tuple[int, bytes]: ...

    def close(self) -> None: ...


class LeanConnection:
    """One keep-alive HTTP/1.1 connection; a new socket after an answer that says "Connection: close"."""

    def __init__(self, host: str, port: int, timeout: float = 60.0) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self._socket: socket.socket | None = None
        self._unread = b""

    def post(self, url: str, body: bytes, content_type: str) -> tuple[int, bytes]:
        if self._socket is None:
            self._socket = socket.create_connection((self.host, self.port), self.timeout)
            self._socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._unread = b""
        head = (f"POST {url} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode("latin-1")
        try:
            self._socket.sendall(head + body)
            return self._answer()
        except OSError:
            self.close()
            raise
        except ValueError as error:  # a status or length that is not a number
            self.close()
            raise AnswerError(f"a garbled answer ({error})") from error

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def _answer(self) -> tuple[int, bytes]:
        received = self._unread
        while (end := received.find(b"\r\n\r\n")) < 0:
            received += self._receive()
        lines = received[:end].split(b"\r\n")
        rest = received[end + 4:]
        parts = lines[0].split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/"):
            raise AnswerError(f"not an HTTP status line: {lines[0][:80]!r}")
        status, length, close = int(parts[1]), None, parts[0] == b"HTTP/1.0"
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection":
                close = value.strip().lower() == b"close"
            elif name == b"transfer-encoding":
                raise AnswerError(f"a {value.strip().decode('latin-1')} answer: this client reads Content-Length only")
        if length is None:
            raise AnswerError("an answer without Content-Length")
        while len(rest) < length:
            rest += self._receive()
        body, self._unread = rest[:length], rest[length:]
        if close:
            self.close()
        return status, body

    def _receive(self) -> bytes:
        chunk = self._socket.recv(RECEIVE)
        if not chunk:
            raise AnswerError("the server closed the connection mid-answer")
        return chunk


class StandardConnection:
    """http.client's HTTPConnection behind the same post()."""

    def __init__(self, host: str, port: int, timeout: float = 60.0) -> None:
        self._make = lambda: http.client.HTTPConnection(host, port, timeout=timeout)
        self._connection = self._make()

    def post(self, url: str, body: bytes, content_type: str) -> tuple[int, bytes]:
        try:
            self._connection.request("POST", url, body, {"Content-Type": content_type})
            response = self._connection.getresponse()
            return response.status, response.read()
        except OSError:
            self._reconnect()
            raise
        except http.client.HTTPException as error:
            self._reconnect()
            raise AnswerError(f"{type(error).__name__}: {error}") from error

    def _reconnect(self) -> None:
        self.close()
        self._connection = self._make()

    def close(self) -> None:
        self._connection.close()


CLIENTS: dict[str, Callable[..., Connection]] = {"lean": LeanConnection, "http.client": StandardConnection}
