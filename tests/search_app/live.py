"""A real server for the end-to-end tests: sample-catalog artifacts built by the CLI, `serve --prod` in a subprocess."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from click.testing import CliRunner

from embedder.sample_catalog import write_sample_catalog
from manage import cli

ROOT = Path(__file__).resolve().parents[2]
STARTUP_SECONDS = 180


def build_sample_artifacts(directory: Path) -> list[str]:
    """A small DeepFashion-layout catalog embedded (random weights, 32 px) and indexed; the CLI arguments naming it."""
    root = write_sample_catalog(directory / "catalog", images_per_category=3, seed=5)
    args = ["--catalog", "deepfashion", "--root", str(root), "--weights", "none", "--artifacts",
            str(directory / "artifacts"), "--set", "catalog.subset=all", "--set", "embedder.image_size=32",
            "--set", "embedder.embedding_size=16", "--set", "embedder.batch_size=16", "--set", "embedder.workers=0"]
    result = CliRunner().invoke(cli, args + ["build-index"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return args


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (now)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_prod_server(args: list[str], port: int, log_path: Path, settings: tuple[str, ...] = ()) -> subprocess.Popen:
    """`manage.py serve --prod` on 127.0.0.1:port, returned once /healthz answers."""
    sets = [item for setting in settings for item in ("--set", setting)]
    command = [sys.executable, "manage.py", *args, *sets, "serve", "--prod", "--host", "127.0.0.1", "--port", str(port)]
    server = subprocess.Popen(command, cwd=ROOT, stdout=log_path.open("w"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"serve --prod exited with {server.returncode}:\n{log_path.read_text()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
                if json.load(response)["status"] == "ok":
                    return server
        except (OSError, urllib.error.URLError, ValueError):
            time.sleep(0.3)
    stop(server)
    raise RuntimeError(f"serve --prod did not answer within {STARTUP_SECONDS} s:\n{log_path.read_text()}")


def stop(server: subprocess.Popen) -> None:
    """Stop the server, gently first."""
    server.terminate()
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()
