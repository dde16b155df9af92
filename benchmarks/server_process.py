"""`manage.py serve` as a child process on 127.0.0.1, for benchmarks and end-to-end tests."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STARTUP_SECONDS = 180


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (now)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def health(port: int, timeout: float = 5) -> dict:
    """The server's /healthz answer."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=timeout) as response:
        return json.load(response)


def start_server(args: list[str], port: int, log_path: Path, settings: tuple[str, ...] | list[str] = (),
                 prod: bool = True, startup_seconds: float = STARTUP_SECONDS) -> subprocess.Popen:
    """`manage.py ARGS [--set S ...] serve [--prod]` on 127.0.0.1:port, returned once /healthz says ok."""
    sets = [item for setting in settings for item in ("--set", setting)]
    command = [sys.executable, "manage.py", *args, *sets, "serve", *(["--prod"] if prod else []),
               "--host", "127.0.0.1", "--port", str(port)]
    server = subprocess.Popen(command, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=log_path.open("w"),
                              stderr=subprocess.STDOUT)
    deadline = time.monotonic() + startup_seconds
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited with {server.returncode}; {log_path}:\n{log_path.read_text()[-4000:]}")
        try:
            if health(port)["status"] == "ok":
                return server
        except (OSError, urllib.error.URLError, ValueError):
            time.sleep(0.3)
    stop_server(server)
    raise RuntimeError(f"the server did not answer /healthz within {startup_seconds} s; see {log_path}")


def stop_server(server: subprocess.Popen) -> None:
    """Stop the server, gently first."""
    server.terminate()
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()
