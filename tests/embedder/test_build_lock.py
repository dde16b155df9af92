"""Two build-index runs on the same artifacts: the second stops and names the first; nothing is deleted."""
from __future__ import annotations

import subprocess
import sys

import pytest
from click.testing import CliRunner

from embedder.inference.build import BuildLockedError, build_lock
from manage import cli

HOLD = """
import sys, time
from pathlib import Path
from embedder.inference.build import build_lock
with build_lock(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(120)
"""


@pytest.fixture
def held_by_a_child(tmp_path):
    """The artifacts' build lock held by another process (as by a running build-index)."""
    child = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "held"
    yield child
    child.kill()
    child.wait()


def test_a_second_build_stops_naming_the_process_and_the_lock_dies_with_its_holder(tmp_path, held_by_a_child):
    with pytest.raises(BuildLockedError, match=rf"another build-index \(process {held_by_a_child.pid}\) is writing"):
        with build_lock(tmp_path):
            pass
    held_by_a_child.kill()  # killed mid-build: the kernel releases its lock
    held_by_a_child.wait()
    with build_lock(tmp_path):
        pass


def test_build_index_refuses_to_run_beside_another_and_leaves_its_partial_file(tmp_path, held_by_a_child):
    partial = tmp_path / "embeddings.h5.partial"
    partial.write_bytes(b"the first build's work in progress")
    result = CliRunner().invoke(cli, ["--catalog", "deepfashion", "--root", str(tmp_path), "--artifacts", str(tmp_path),
                                      "build-index"])
    assert result.exit_code == 1 and f"process {held_by_a_child.pid}" in result.output
    assert partial.read_bytes() == b"the first build's work in progress"
