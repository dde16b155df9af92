"""build-index killed with SIGKILL (no cleanup, no flush) at each point where it writes: the next build-index
resumes and its artifacts equal a clean build's, with nothing left behind."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import faiss
import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from embedder.catalogs.sample_deepfashion import write_sample_catalog
from embedder.checkpoint import file_sha256
from manage import cli
from tests.conftest import sample_build_arguments

BATCH = 4
ROOT = Path(__file__).parents[1]

# Runs build-index with a SIGKILL of itself planted at one point (argv[1]); argv[2:] are the CLI's arguments.
KILLED_BUILD = """
import os, signal, sys
point, args = sys.argv[1], sys.argv[2:]
import faiss
from embedder.inference.partial_embeddings import PartialEmbeddings


def die():
    os.kill(os.getpid(), signal.SIGKILL)


write, replace, write_index, batches = PartialEmbeddings.write, os.replace, faiss.write_index, []


def write_batch(self, rows, vectors, errors):
    batches.append(len(rows))
    if point == "a batch's vectors flushed, its status not" and len(batches) == 3:
        flush = self.file.flush
        self.file.flush = lambda: (flush(), die())
    write(self, rows, vectors, errors)
    if point == "after the third batch" and len(batches) == 3:
        die()


def replace_or_die(source, target):
    if point == f"before the rename to {os.path.basename(target)}":
        die()
    replace(source, target)


def half_an_index(index, path):
    write_index(index, path)
    os.truncate(path, os.path.getsize(path) // 2)
    die()


PartialEmbeddings.write = write_batch
os.replace = replace_or_die
if point == "halfway through writing the index":
    faiss.write_index = half_an_index
from manage import cli
cli.main(args)
"""

POINTS = [
    "after the third batch",
    "a batch's vectors flushed, its status not",
    "before the rename to embeddings.h5",
    "halfway through writing the index",
    "before the rename to index.faiss",
    "before the rename to index.json",
]
# Rows already in the partial file when the resumed build starts (None: all of them).
RESUMED = {"after the third batch": 3 * BATCH, "a batch's vectors flushed, its status not": 2 * BATCH,
           "before the rename to embeddings.h5": None}


@pytest.fixture(scope="module")
def catalog(tmp_path_factory) -> Path:
    return write_sample_catalog(tmp_path_factory.mktemp("catalog"), images_per_category=2, seed=11)


def arguments(catalog: Path, artifacts: Path) -> list[str]:
    return [*sample_build_arguments(catalog, artifacts, BATCH), "build-index"]


def build(catalog: Path, artifacts: Path) -> dict:
    result = CliRunner().invoke(cli, arguments(catalog, artifacts), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads((artifacts / "build-report.json").read_text())


@pytest.fixture(scope="module")
def clean(catalog, tmp_path_factory) -> tuple[Path, dict]:
    artifacts = tmp_path_factory.mktemp("clean")
    return artifacts, build(catalog, artifacts)


def files(artifacts: Path) -> set[str]:
    """The artifacts' names, an ONNX export's checkpoint hash (which differs between two builds' checkpoints by
    their creation time) replaced once it is checked to be this build's."""
    sha = file_sha256(artifacts / "embedder.pt")[:16]
    names = {str(path.relative_to(artifacts)) for path in artifacts.rglob("*")}
    assert all(sha in name for name in names if name.endswith(".onnx")), names
    return {name.replace(sha, "<checkpoint>") for name in names}


@pytest.mark.slow
@pytest.mark.parametrize("point", POINTS)
def test_a_build_killed_at_any_point_resumes_to_a_clean_builds_artifacts(catalog, clean, tmp_path, point):
    clean, clean_report = clean
    artifacts = tmp_path / "artifacts"
    killed = subprocess.run([sys.executable, "-c", KILLED_BUILD, point, *arguments(catalog, artifacts)],
                            capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert killed.returncode == -9, killed.stderr[-2000:]

    report = build(catalog, artifacts)

    resumed = RESUMED.get(point, 0)
    assert report["embeddings"]["resumed_rows"] == (clean_report["embeddings"]["catalog_items"] if resumed is None
                                                    else resumed)
    assert files(artifacts) == files(clean)
    with h5py.File(clean / "embeddings.h5") as want, h5py.File(artifacts / "embeddings.h5") as got:
        for name in ("item_id", "path", "label", "split", "title"):
            assert list(got[name][:]) == list(want[name][:]), name
        np.testing.assert_allclose(got["embeddings"][:], want["embeddings"][:], atol=1e-5)
        vectors = want["embeddings"][:]
    want_index, got_index = (faiss.read_index(str(path / "index.faiss")) for path in (clean, artifacts))
    assert got_index.ntotal == want_index.ntotal == len(vectors)
    np.testing.assert_allclose(got_index.reconstruct_n(0, got_index.ntotal), vectors, atol=1e-5)
    sidecar = {path: json.loads((path / "index.json").read_text()) for path in (clean, artifacts)}
    for key in ("count", "dimension", "metric", "kind", "request"):
        assert sidecar[artifacts][key] == sidecar[clean][key], key
