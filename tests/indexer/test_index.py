"""The FAISS index against a numpy brute-force oracle; saving, loading, sidecar checks and reuse."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import faiss
import h5py
import numpy as np
import pytest

from config import IndexConfig
from indexer import index as index_module
from indexer.index import (
    IndexDeviceError,
    IndexFileError,
    build_index,
    build_index_file,
    gpu_available,
    load_index,
    make_sidecar,
    read_sidecar,
    save_index,
    search,
    sidecar_path,
)
from tests.indexer.conftest import unit_rows

ROOT = Path(__file__).resolve().parents[2]


def brute_force(xq: np.ndarray, xb: np.ndarray, k: int, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """The exact answer, computed the slow obvious way."""
    if metric == "ip":
        scores = xq @ xb.T
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    else:
        scores = ((xq[:, None, :] - xb[None, :, :]) ** 2).sum(axis=2)
        order = np.argsort(scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, axis=1), order


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_search_matches_brute_force(metric, monkeypatch):
    rng = np.random.default_rng(7)
    xb, xq = unit_rows(rng, 300, 16), unit_rows(rng, 50, 16)
    # Several small batches exercise the batching as well as the search.
    monkeypatch.setattr(index_module, "SEARCH_BATCH", 7)
    D, I = search(build_index(xb, metric, use_gpu="off"), xq, 5)
    D_ref, I_ref = brute_force(xq.astype(np.float64), xb.astype(np.float64), 5, metric)
    assert D.shape == I.shape == (50, 5) and D.dtype == np.float32 and I.dtype == np.int64
    # Random float vectors have no ties, so the neighbour lists agree exactly.
    np.testing.assert_array_equal(I, I_ref)
    np.testing.assert_allclose(D, D_ref, atol=1e-5)


def test_index_kind_follows_metric():
    xb = unit_rows(np.random.default_rng(0), 10, 4)
    assert isinstance(build_index(xb, "ip", "off"), faiss.IndexFlatIP)
    assert isinstance(build_index(xb, "l2", "off"), faiss.IndexFlatL2)
    with pytest.raises(ValueError, match="metric is 'cosine'"):
        build_index(xb, "cosine", "off")


def test_search_accepts_float64_and_pads_missing_neighbours():
    xb = unit_rows(np.random.default_rng(0), 3, 4).astype(np.float64)
    D, I = search(build_index(xb, "ip", "off"), xb, 5)
    assert I[:, 3:].tolist() == [[-1, -1]] * 3
    assert I[:, 0].tolist() == [0, 1, 2]


def test_search_rejects_wrong_dimension():
    index = build_index(unit_rows(np.random.default_rng(0), 3, 4), "ip", "off")
    with pytest.raises(ValueError, match="dimension 5 but the index holds vectors of dimension 4"):
        search(index, np.zeros((2, 5), dtype=np.float32), 1)


@pytest.mark.skipif(gpu_available(), reason="this machine has a GPU")
def test_gpu_on_without_gpu_is_a_clear_error():
    with pytest.raises(IndexDeviceError, match="index.gpu is 'on' but faiss has no usable GPU"):
        build_index(np.zeros((2, 4), dtype=np.float32), "ip", use_gpu="on")
    # "auto" quietly uses the CPU.
    assert build_index(np.zeros((2, 4), dtype=np.float32), "ip", use_gpu="auto").ntotal == 2


@pytest.mark.gpu
@pytest.mark.skipif(not gpu_available(), reason="needs faiss with a CUDA GPU")
def test_gpu_index_matches_cpu_and_saves_as_cpu(tmp_path):
    rng = np.random.default_rng(3)
    xb, xq = unit_rows(rng, 500, 32), unit_rows(rng, 20, 32)
    _, I_cpu = search(build_index(xb, "ip", "off"), xq, 4)
    gpu = build_index(xb, "ip", "on")
    np.testing.assert_array_equal(search(gpu, xq, 4)[1], I_cpu)
    save_index(gpu, tmp_path / "index.faiss", {"format": "lookbook-index"})
    assert isinstance(faiss.read_index(str(tmp_path / "index.faiss")), faiss.IndexFlatIP)


def _built(embeddings_path: Path, metric: str = "ip") -> Path:
    index_path = embeddings_path.parent / "index.faiss"
    build_index_file(embeddings_path, index_path, IndexConfig(metric=metric, gpu="off"))
    return index_path


def test_save_load_round_trip(embeddings_path):
    index_path = _built(embeddings_path)
    assert not list(index_path.parent.glob("*.tmp")), "temporary files left behind"
    sidecar = read_sidecar(index_path)
    assert sidecar_path(index_path).name == "index.json"
    assert {k: sidecar[k] for k in ("format", "format_version", "kind", "metric", "count", "dimension")} == {
        "format": "lookbook-index", "format_version": 1, "kind": "flat", "metric": "ip", "count": 60, "dimension": 8,
    }
    assert sidecar["embeddings_file"] == "embeddings.h5" and len(sidecar["embeddings_sha256"]) == 64
    loaded = load_index(index_path, embeddings_path, use_gpu="off")
    with h5py.File(embeddings_path) as handle:
        xb = handle["embeddings"][()]
    assert loaded.ntotal == 60 and loaded.d == 8
    # Row i of the index is row i of the file: each vector finds itself first.
    assert search(loaded, xb, 1)[1][:, 0].tolist() == list(range(60))


def _rewrite_sidecar(index_path: Path, **changes) -> None:
    path = sidecar_path(index_path)
    path.write_text(json.dumps(json.loads(path.read_text()) | changes))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"count": 59}, "count is 59 in the sidecar but 60 is expected"),
        ({"dimension": 16}, "dimension is 16 in the sidecar but 8 is expected"),
        ({"embeddings_sha256": "0" * 64}, "embeddings_sha256 is '0000"),
        ({"format": "other"}, "format is 'other'"),
    ],
)
def test_load_rejects_mismatched_sidecar(embeddings_path, changes, message):
    index_path = _built(embeddings_path)
    _rewrite_sidecar(index_path, **changes)
    with pytest.raises(IndexFileError, match=message) as caught:
        load_index(index_path, embeddings_path, use_gpu="off")
    assert "index.json" in str(caught.value) and "build-index" in str(caught.value)


def test_load_rejects_changed_embeddings_file(make_embeddings):
    embeddings_path = make_embeddings()
    index_path = _built(embeddings_path)
    make_embeddings(seed=1)  # same shape, other vectors: only the hash can tell
    with pytest.raises(IndexFileError, match="embeddings_sha256 is .* build-index"):
        load_index(index_path, embeddings_path, use_gpu="off")


def test_load_without_sidecar_or_index(embeddings_path):
    index_path = _built(embeddings_path)
    index_path.unlink()
    with pytest.raises(IndexFileError, match=r"index\.faiss: index file does not exist.*build-index"):
        load_index(index_path, embeddings_path, use_gpu="off")
    sidecar_path(index_path).unlink()
    with pytest.raises(IndexFileError, match=r"index\.json: index sidecar does not exist"):
        load_index(index_path, embeddings_path, use_gpu="off")


def test_load_rejects_index_that_disagrees_with_its_sidecar(embeddings_path):
    index_path = _built(embeddings_path)
    sidecar = read_sidecar(index_path)
    save_index(build_index(np.zeros((3, 8), dtype=np.float32), "ip", "off"), index_path, sidecar)
    with pytest.raises(IndexFileError, match="holds 3 vectors of dimension 8 .* sidecar says 60 x 8"):
        load_index(index_path, embeddings_path, use_gpu="off")


def test_build_index_file_reuses_then_rebuilds(make_embeddings):
    embeddings_path = make_embeddings()
    index_path = embeddings_path.parent / "index.faiss"
    config = IndexConfig(metric="ip", gpu="off")
    first = build_index_file(embeddings_path, index_path, config)
    assert (first.count, first.dimension, first.metric, first.device, first.reused) == (60, 8, "ip", "cpu", False)
    written = index_path.stat().st_mtime_ns, sidecar_path(index_path).read_text()

    again = build_index_file(embeddings_path, index_path, config)
    assert again.reused and (again.count, again.dimension) == (60, 8)
    assert (index_path.stat().st_mtime_ns, sidecar_path(index_path).read_text()) == written

    other_metric = build_index_file(embeddings_path, index_path, IndexConfig(metric="l2", gpu="off"))
    assert not other_metric.reused and read_sidecar(index_path)["metric"] == "l2"
    assert isinstance(load_index(index_path, embeddings_path, "off"), faiss.IndexFlatL2)

    make_embeddings(count=70)  # the embeddings change under the index
    rebuilt = build_index_file(embeddings_path, index_path, IndexConfig(metric="l2", gpu="off"))
    assert not rebuilt.reused and rebuilt.count == 70
    assert load_index(index_path, embeddings_path, "off").ntotal == 70


def test_build_index_file_rebuilds_without_sidecar(embeddings_path):
    index_path = _built(embeddings_path)
    sidecar_path(index_path).unlink()
    report = build_index_file(embeddings_path, index_path, IndexConfig(gpu="off"))
    assert not report.reused and sidecar_path(index_path).is_file()


def test_make_sidecar_names_the_file_not_its_directory(tmp_path):
    sidecar = make_sidecar(3, 4, "ip", tmp_path / "deep" / "embeddings.h5", "f" * 64)
    assert sidecar["embeddings_file"] == "embeddings.h5" and sidecar["created_at"]


def test_indexer_never_imports_torch_or_embedder():
    code = (
        "import sys; import indexer.embeddings_file, indexer.index, indexer.knn, indexer.evaluation.protocol, indexer.report.text; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision', 'embedder', 'flask')); "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_atomic_writes_leave_readable_files_and_no_temporaries(tmp_path):
    from indexer.index import write_atomically

    target = tmp_path / "report.json"
    write_atomically(target, lambda temporary: temporary.write_text("{}"))
    assert target.read_text() == "{}"
    assert target.stat().st_mode & 0o777 == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]
