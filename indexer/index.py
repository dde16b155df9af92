"""The FAISS index over catalog vectors: build, search, save and load it with its JSON sidecar."""
from __future__ import annotations

import glob
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from config import IndexConfig, LookbookError
from indexer.approximate import (IndexPlan, build_approximate, choose_kind, default_nlist, search_filled,
                                 set_search_breadth, why_retrain)
from indexer.embeddings_file import embeddings_shape, file_sha256, read_embeddings

log = logging.getLogger(__name__)

INDEX_FORMAT = "lookbook-index"
INDEX_VERSION = 1
INDEX_KIND = "flat"
METRICS = ("ip", "l2")
GPU_CHOICES = ("auto", "on", "off")
FIX_HINT = "re-run `python manage.py build-index` to rebuild it"
# Queries per faiss call: bounds the temporary distance tables, costs nothing in speed.
SEARCH_BATCH = 4096


class IndexFileError(LookbookError, RuntimeError):
    """An index file or sidecar that is missing, unreadable or does not match the embeddings file."""


class IndexDeviceError(LookbookError, RuntimeError):
    """A GPU index was asked for where faiss cannot use a GPU."""


@dataclass(frozen=True)
class IndexBuildReport:
    """What build_index_file did."""

    count: int
    dimension: int
    metric: str
    device: str  # "cpu" or "gpu": where the index was built; "cpu" when an existing one was reused
    seconds: float
    reused: bool
    kind: str = INDEX_KIND  # "flat" (exact), "ivf" or "hnsw"
    parameters: dict = field(default_factory=dict)  # nlist, nprobe, measured recall... (as in the sidecar)


def gpu_available() -> bool:
    """Whether this faiss was built with GPU support and sees at least one GPU."""
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def _wants_gpu(use_gpu: str) -> bool:
    if use_gpu not in GPU_CHOICES:
        raise ValueError(f"use_gpu is {use_gpu!r}; expected one of {', '.join(GPU_CHOICES)}")
    if use_gpu == "on" and not gpu_available():
        raise IndexDeviceError(
            "index.gpu is 'on' but faiss has no usable GPU (install faiss-gpu and check CUDA); "
            "set index.gpu to 'auto' or 'off' to use the CPU"
        )
    return use_gpu == "on" or (use_gpu == "auto" and gpu_available())


def _as_matrix(x: np.ndarray, name: str) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (rows x dimension), got shape {x.shape}")
    return x


def _to_device(index: faiss.Index, use_gpu: str, kind: str = INDEX_KIND) -> faiss.Index:
    if kind == "hnsw":  # faiss has no GPU HNSW; it searches fast enough on the CPU
        return index
    if _wants_gpu(use_gpu):
        log.info("moving the index to %d GPU(s)", faiss.get_num_gpus())
        return faiss.index_cpu_to_all_gpus(index)
    return index


def build_index(xb: np.ndarray, metric: str = "ip", use_gpu: str = "auto") -> faiss.Index:
    """An exact index over the rows of ``xb``: IndexFlatIP ("ip") or IndexFlatL2 ("l2"), on GPU if asked."""
    xb = _as_matrix(xb, "xb")
    if metric not in METRICS:
        raise ValueError(f"metric is {metric!r}; expected one of {', '.join(METRICS)}")
    index = faiss.IndexFlatIP(xb.shape[1]) if metric == "ip" else faiss.IndexFlatL2(xb.shape[1])
    index = _to_device(index, use_gpu)
    index.add(xb)
    return index


def search(index: faiss.Index, xq: np.ndarray, k: int, selector: faiss.IDSelector | None = None,
           available: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The k nearest rows for each query, in batches: D (nq x k float32) and I (nq x k int64, -1 = none).

    With a selector, only its rows (``available`` of them) are searched. Approximate indexes look wider
    where the rows they probe leave a query with fewer than k answers (approximate.search_filled).
    """
    xq = _as_matrix(xq, "xq")
    if xq.shape[1] != index.d:
        raise ValueError(f"queries have dimension {xq.shape[1]} but the index holds vectors of dimension {index.d}")
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    available = index.ntotal if available is None else available
    D = np.empty((xq.shape[0], k), dtype=np.float32)
    I = np.empty((xq.shape[0], k), dtype=np.int64)
    for start in range(0, xq.shape[0], SEARCH_BATCH):
        stop = start + SEARCH_BATCH
        D[start:stop], I[start:stop] = search_filled(index, xq[start:stop], k, available, selector)
    return D, I


def sidecar_path(index_path: str | Path) -> Path:
    """Where the JSON sidecar of an index file lies: index.faiss -> index.json."""
    return Path(index_path).with_suffix(".json")


def write_atomically(path: str | Path, write: Callable[[Path], None]) -> None:
    """Call ``write(temporary_path)`` in path's directory, then rename over ``path``; readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        write(Path(temporary))
        os.chmod(temporary, 0o644)  # mkstemp makes it private; artifacts are shared like any other file
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def remove_leftovers(path: str | Path) -> None:
    """Delete the temporary files of earlier writes to ``path`` that were killed before they could clean up;
    only for files one process at a time writes (build-index holds a lock on its artifacts)."""
    path = Path(path)
    for leftover in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        log.info("removing %s, left by a write that was killed", leftover)
        leftover.unlink(missing_ok=True)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def save_index(index: faiss.Index, index_path: str | Path, sidecar: dict[str, Any]) -> None:
    """Write the index (as a CPU index) and its JSON sidecar, each atomically."""
    if hasattr(faiss, "index_gpu_to_cpu"):
        # Also accepts CPU indexes (it clones them), so no need to tell GPU and CPU indexes apart.
        index = faiss.index_gpu_to_cpu(index)
    index_path = Path(index_path)
    for path in (index_path, sidecar_path(index_path)):
        remove_leftovers(path)
    # Removing the old sidecar first means a crash between the two writes leaves no sidecar,
    # which loading and reuse treat as "rebuild", never a stale sidecar beside a new index.
    sidecar_path(index_path).unlink(missing_ok=True)
    write_atomically(index_path, lambda temporary: faiss.write_index(index, str(temporary)))
    write_atomically(sidecar_path(index_path), lambda temporary: _write_json(temporary, sidecar))
    log.info("wrote %s (%d vectors) and %s", index_path, index.ntotal, sidecar_path(index_path).name)


def make_sidecar(count: int, dimension: int, metric: str, embeddings_path: Path, embeddings_sha256: str,
                 plan: IndexPlan | None = None, request: dict | None = None) -> dict:
    """The ``index.json`` contents for an index built over ``embeddings_path`` (docs/artifacts.md)."""
    plan = plan or IndexPlan(INDEX_KIND)
    return {
        "format": INDEX_FORMAT,
        "format_version": INDEX_VERSION,
        "kind": plan.kind,
        "parameters": plan.parameters,
        "request": request or {},
        "metric": metric,
        "count": count,
        "dimension": dimension,
        "embeddings_file": Path(embeddings_path).name,
        "embeddings_sha256": embeddings_sha256,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def read_sidecar(index_path: str | Path) -> dict[str, Any]:
    """The parsed ``index.json`` beside an index file; IndexFileError if missing or malformed."""
    path = sidecar_path(index_path)
    try:
        sidecar = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise IndexFileError(f"{path}: index sidecar does not exist; {FIX_HINT}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise IndexFileError(f"{path}: index sidecar is not readable JSON ({error}); {FIX_HINT}") from None
    if not isinstance(sidecar, dict):
        raise IndexFileError(f"{path}: index sidecar must be a JSON object; {FIX_HINT}")
    return sidecar


def sidecar_mismatch(sidecar: dict[str, Any], expected: dict[str, Any]) -> str | None:
    """The first sidecar field that differs from ``expected``, described for people; None if all match."""
    for key, wanted in expected.items():
        found = sidecar.get(key)
        if found != wanted:
            return f"{key} is {found!r} in the sidecar but {wanted!r} is expected"
    return None


def _expected_fields(embeddings_path: Path, sha256: str | None = None) -> dict[str, Any]:
    count, dimension = embeddings_shape(embeddings_path)
    expected = {"format": INDEX_FORMAT, "format_version": INDEX_VERSION, "count": count, "dimension": dimension}
    expected["embeddings_sha256"] = sha256 if sha256 is not None else file_sha256(embeddings_path)
    return expected


def load_index(index_path: str | Path, embeddings_path: str | Path, use_gpu: str = "auto") -> faiss.Index:
    """Read ``index.faiss``, check its sidecar against the embeddings file, and move it to GPU if asked."""
    index_path, embeddings_path = Path(index_path), Path(embeddings_path)
    sidecar = read_sidecar(index_path)
    problem = sidecar_mismatch(sidecar, _expected_fields(embeddings_path))
    if problem:
        raise IndexFileError(
            f"{sidecar_path(index_path)} does not match {embeddings_path}: {problem}; {FIX_HINT}"
        )
    if not index_path.is_file():
        raise IndexFileError(f"{index_path}: index file does not exist; {FIX_HINT}")
    try:
        index = faiss.read_index(str(index_path))
    except RuntimeError as error:
        raise IndexFileError(f"{index_path}: not a readable faiss index ({error}); {FIX_HINT}") from None
    expected_type = faiss.METRIC_INNER_PRODUCT if sidecar.get("metric") == "ip" else faiss.METRIC_L2
    if index.ntotal != sidecar["count"] or index.d != sidecar["dimension"] or index.metric_type != expected_type:
        raise IndexFileError(
            f"{index_path}: holds {index.ntotal} vectors of dimension {index.d} (metric type "
            f"{index.metric_type}) but its sidecar says {sidecar['count']} x {sidecar['dimension']} "
            f"({sidecar.get('metric')!r}); {FIX_HINT}"
        )
    kind = sidecar.get("kind", INDEX_KIND)
    breadth = sidecar.get("parameters", {}).get("nprobe" if kind == "ivf" else "efSearch")
    if breadth:
        set_search_breadth(index, kind, breadth)  # faiss saves it too; the sidecar is what people read
    log.info("loaded %s: %d vectors of dimension %d (%s)", index_path, index.ntotal, index.d, kind)
    return _to_device(index, use_gpu, kind)


def _reusable(index_path: Path, embeddings_path: Path, sha256: str, config: IndexConfig) -> bool:
    if not index_path.is_file():
        return False
    try:
        sidecar = read_sidecar(index_path)
    except IndexFileError as error:
        log.info("not reusing %s: %s", index_path, error)
        return False
    expected = _expected_fields(embeddings_path, sha256) | {"metric": config.metric, "request": index_request(config)}
    problem = sidecar_mismatch(sidecar, expected)
    if problem:
        log.info("rebuilding %s: %s", index_path, problem)
    return problem is None


def index_request(config: IndexConfig) -> dict[str, Any]:
    """The settings an index was asked for (kept in the sidecar: changing any of them rebuilds the index)."""
    return {"kind": config.kind, "approximate_from": config.approximate_from, "nlist": config.nlist,
            "nprobe": config.nprobe, "recall_target": config.recall_target}


def build_planned_index(xb: np.ndarray, config: IndexConfig, previous: Path | None = None
                        ) -> tuple[faiss.Index, IndexPlan]:
    """The configured index over ``xb``: exact, or IVF / HNSW with a tuned search breadth (kind "auto": by size).
    ``previous``: an earlier index file of this catalog, whose IVF cells are kept while they still fit."""
    kind = choose_kind(len(xb), config.kind, config.approximate_from)
    if kind == "flat":
        return build_index(xb, config.metric, config.gpu), IndexPlan("flat")
    xb = _as_matrix(xb, "xb")
    cells_from = _cells_to_keep(previous, xb, config) if kind == "ivf" and previous is not None else None
    return build_approximate(xb, kind, config.metric, nlist=config.nlist, nprobe=config.nprobe,
                             recall_target=config.recall_target, gpu=kind == "ivf" and _wants_gpu(config.gpu),
                             cells_from=cells_from)


def _cells_to_keep(previous: Path, xb: np.ndarray, config: IndexConfig) -> tuple[faiss.Index, dict] | None:
    """The earlier IVF index and its parameters when its trained cells still fit ``xb``; else None (and why)."""
    try:
        sidecar = read_sidecar(previous)
    except IndexFileError:
        return None
    if sidecar.get("kind") != "ivf" or sidecar.get("metric") != config.metric:
        return None
    if sidecar.get("request", {}) != index_request(config):
        log.info("training new IVF cells: the index settings changed")
        return None
    try:
        index = faiss.read_index(str(previous))
    except RuntimeError as error:
        log.warning("training new IVF cells: %s cannot be read (%s)", previous, error)
        return None
    reason = why_retrain(index, sidecar.get("parameters", {}), xb, config.nlist or default_nlist(len(xb)))
    if reason:
        log.info("training new IVF cells: %s", reason)
        return None
    log.info("keeping the IVF cells of %s: they still fit the catalog", previous)
    return index, sidecar["parameters"]


def build_index_file(embeddings_path: str | Path, index_path: str | Path, config: IndexConfig,
                     force: bool = False) -> IndexBuildReport:
    """Build and save the index over every row of the embeddings file, or reuse a matching one (and an IVF
    index's trained cells while they fit); ``force``: build it all anew."""
    embeddings_path, index_path = Path(embeddings_path), Path(index_path)
    started = time.perf_counter()
    sha256 = file_sha256(embeddings_path) if embeddings_path.is_file() else ""
    if sha256 and not force and _reusable(index_path, embeddings_path, sha256, config):
        count, dimension = embeddings_shape(embeddings_path)
        sidecar = read_sidecar(index_path)
        log.info("reusing %s: it matches %s", index_path, embeddings_path)
        return IndexBuildReport(count, dimension, config.metric, "cpu", time.perf_counter() - started, True,
                                sidecar.get("kind", INDEX_KIND), sidecar.get("parameters", {}))
    vectors = read_embeddings(embeddings_path)
    device = "gpu" if _wants_gpu(config.gpu) else "cpu"
    previous = index_path if index_path.is_file() and not force else None
    index, plan = build_planned_index(vectors.embeddings, config, previous)
    device = "cpu" if plan.kind == "hnsw" else device
    sidecar = make_sidecar(vectors.count, vectors.dimension, config.metric, embeddings_path, sha256, plan,
                           index_request(config))
    save_index(index, index_path, sidecar)
    seconds = time.perf_counter() - started
    log.info("built a %s %s index over %d vectors on %s in %.1fs %s", plan.kind, config.metric,
             vectors.count, device, seconds, plan.parameters or "")
    return IndexBuildReport(vectors.count, vectors.dimension, config.metric, device, seconds, False, plan.kind,
                            plan.parameters)
