"""Where the catalog's vectors are searched, behind one interface with two engines: FAISS, embedded in the
process (the default), and Milvus (`index.backend = "milvus"`): Milvus Lite in a local file for tests and
laptops, or a Milvus server or cluster (`http://host:19530`) with its own sharding and replicas for
catalogs beyond one machine. Searches answer catalog rows (rows of embeddings.h5), nearest first, with
faiss's distances (inner products for "ip", squared L2 for "l2") and -1 past the last row found."""
from __future__ import annotations

import hashlib
import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from config import IndexConfig, LookbookError
from indexer.index import search as index_search

log = logging.getLogger(__name__)

# Milvus answers at most this many neighbours per query (offset included).
MILVUS_MAX_K = 16384
MILVUS_BATCH = 2000  # rows a request: a whole catalog in one message would pass gRPC's size limit


class VectorStoreError(LookbookError, RuntimeError):
    """A vector store that cannot be reached or does not hold what the catalog needs."""


class VectorStore(ABC):
    """The catalog's vectors, searchable by similarity, within one category if asked."""

    dimension: int
    metric: str  # "ip" or "l2"

    @abstractmethod
    def __len__(self) -> int:
        """How many rows can be found."""

    @abstractmethod
    def search(self, xq: np.ndarray, k: int, label: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """D, I (nq x k): the k nearest rows to each query, only rows of class ``label`` if given."""

    @abstractmethod
    def count_of(self, label: int) -> int:
        """How many rows class ``label`` has."""

    @abstractmethod
    def vector(self, row: int) -> np.ndarray:
        """The stored vector of a row (1 x dimension)."""

    def close(self) -> None:
        """Let go of connections."""


class FaissStore(VectorStore):
    """A faiss index in this process, rows as its ids; a category search makes faiss skip other rows itself,
    so results and paging stay exact."""

    backend = "faiss"

    def __init__(self, index: faiss.Index, labels: np.ndarray, num_classes: int) -> None:
        self.index = index
        self.dimension = index.d
        self.metric = "ip" if index.metric_type == faiss.METRIC_INNER_PRODUCT else "l2"
        self.labels = np.asarray(labels)
        self.rows = [np.flatnonzero(self.labels == label).astype(np.int64) for label in range(num_classes)]
        self._selectors = [faiss.IDSelectorBatch(rows) for rows in self.rows]
        # Held for every search: faiss GPU indexes must not be searched concurrently.
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return self.index.ntotal

    def count_of(self, label: int) -> int:
        return len(self.rows[label])

    def search(self, xq: np.ndarray, k: int, label: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        with self._lock:
            if label is None:
                return index_search(self.index, xq, k)
            k = max(1, min(k, self.count_of(label)))
            try:
                return index_search(self.index, xq, k, selector=self._selectors[label], available=self.count_of(label))
            except RuntimeError:
                # Some index types (faiss GPU) refuse selectors: search everything and keep the class's rows.
                D, I = index_search(self.index, xq, self.index.ntotal)
        keep = I[0] >= 0
        keep[keep] = self.labels[I[0][keep]] == label
        return D[:, keep][:, :k], I[:, keep][:, :k]

    def vector(self, row: int) -> np.ndarray:
        with self._lock:
            return self.index.reconstruct(int(row)).reshape(1, -1)


@dataclass(frozen=True)
class SyncReport:
    """What syncing a Milvus collection with the catalog did."""

    collection: str
    rows: int
    added: int
    updated: int
    removed: int
    kept: int
    seconds: float


class MilvusStore(VectorStore):
    """A Milvus collection keyed by item id (so updates are upserts and deletes, whatever rows shift), with
    each item's label to filter on; rows are found again through the catalog's item ids."""

    backend = "milvus"

    def __init__(self, client: Any, collection: str, item_ids: Sequence[str], labels: np.ndarray, dimension: int,
                 metric: str, timeout_s: float) -> None:
        self.client, self.collection, self.timeout_s = client, collection, timeout_s
        self.item_ids = np.asarray(item_ids)
        self.row_of = {str(item_id): row for row, item_id in enumerate(self.item_ids)}
        self.labels = np.asarray(labels)
        self.counts = np.bincount(self.labels, minlength=int(self.labels.max(initial=-1)) + 1)
        self.dimension, self.metric = dimension, metric

    @classmethod
    def open(cls, config: IndexConfig, artifacts: Path, catalog_kind: str, item_ids: Sequence[str],
             labels: np.ndarray, dimension: int, metric: str) -> MilvusStore:
        """The collection build-index synced for this catalog; VectorStoreError when it does not hold the
        catalog's items."""
        client, name = connect(config, artifacts, catalog_kind)
        if not client.has_collection(name, timeout=config.timeout_s):
            raise VectorStoreError(f"Milvus at {milvus_uri(config, artifacts)} has no collection {name!r}; run "
                                   "`python manage.py build-index` with index.backend = \"milvus\"")
        client.load_collection(name, timeout=config.timeout_s)
        store = cls(client, name, item_ids, labels, dimension, metric, config.timeout_s)
        held = client.get_collection_stats(name, timeout=config.timeout_s)["row_count"]
        if held != len(store):
            raise VectorStoreError(f"the Milvus collection {name!r} holds {held} items, the catalog {len(store)}; "
                                   "run `python manage.py build-index`")
        return store

    def __len__(self) -> int:
        return len(self.item_ids)

    def count_of(self, label: int) -> int:
        return int(self.counts[label]) if label < len(self.counts) else 0

    def search(self, xq: np.ndarray, k: int, label: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        xq = np.ascontiguousarray(xq, dtype=np.float32)
        k = max(1, min(k, len(self) if label is None else self.count_of(label), MILVUS_MAX_K))
        hits = self.client.search(
            self.collection, data=xq.tolist(), limit=k, filter="" if label is None else f"label == {int(label)}",
            output_fields=[], search_params={"metric_type": self.metric.upper()}, timeout=self.timeout_s,
        )
        D = np.full((len(xq), k), np.inf if self.metric == "l2" else -np.inf, dtype=np.float32)
        I = np.full((len(xq), k), -1, dtype=np.int64)
        for query, found in enumerate(hits):
            # Ids the catalog no longer has are dropped, so that -1 only ever stands past the last row found.
            known = [(hit["distance"], self.row_of[str(hit["item_id"])]) for hit in found
                     if str(hit["item_id"]) in self.row_of]
            for rank, (distance, row) in enumerate(known):
                D[query, rank], I[query, rank] = distance, row
        return D, I

    def vector(self, row: int) -> np.ndarray:
        found = self.client.get(self.collection, ids=[str(self.item_ids[row])], output_fields=["vector"],
                                timeout=self.timeout_s)
        if not found:
            raise VectorStoreError(f"the Milvus collection {self.collection!r} has no item {self.item_ids[row]!r}")
        return np.asarray(found[0]["vector"], dtype=np.float32).reshape(1, -1)

    def close(self) -> None:
        self.client.close()


def milvus_uri(config: IndexConfig, artifacts: Path) -> str:
    """index.uri, or Milvus Lite's file in the artifacts directory when it is empty."""
    return config.uri or str(Path(artifacts) / "milvus.db")


def connect(config: IndexConfig, artifacts: Path, catalog_kind: str) -> tuple[Any, str]:
    """A Milvus client for index.uri (every call given index.timeout_s) and the collection's name."""
    try:
        from pymilvus import MilvusClient
    except ImportError:
        raise VectorStoreError("index.backend = \"milvus\" needs pymilvus: pip install -e '.[cluster]'") from None
    uri = milvus_uri(config, artifacts)
    if "://" not in uri:
        Path(uri).parent.mkdir(parents=True, exist_ok=True)
    try:
        client = MilvusClient(uri, timeout=config.timeout_s)
    except Exception as error:  # noqa: BLE001 (pymilvus raises its own kinds; all mean "not reachable")
        raise VectorStoreError(f"cannot reach Milvus at {uri}: {error}") from error
    name = config.collection or "lookbook_" + "".join(c if c.isalnum() else "_" for c in catalog_kind)
    return client, name


def item_version(vector: np.ndarray, label: int) -> str:
    """What an item's row in Milvus must hold: a short hash of its vector and label."""
    return hashlib.blake2b(np.ascontiguousarray(vector, np.float32).tobytes() + int(label).to_bytes(4, "little"),
                           digest_size=12).hexdigest()


def sync_milvus(config: IndexConfig, artifacts: Path, catalog_kind: str, item_ids: Sequence[str],
                vectors: np.ndarray, labels: np.ndarray, metric: str) -> SyncReport:
    """Make the catalog's collection hold exactly these items: upsert the new and changed ones (by a hash of
    vector and label), delete the removed ones, keep the rest; created with index.milvus_index on first use."""
    started = time.perf_counter()
    client, name = connect(config, artifacts, catalog_kind)
    try:
        if client.has_collection(name, timeout=config.timeout_s):
            described = client.describe_collection(name, timeout=config.timeout_s)
            vector_field = next(f for f in described["fields"] if f["name"] == "vector")
            if vector_field["params"].get("dim") != vectors.shape[1] or _metric_of(client, name, config) != metric:
                log.info("dropping the Milvus collection %s: it holds vectors of another size or metric", name)
                client.drop_collection(name, timeout=config.timeout_s)
        if not client.has_collection(name, timeout=config.timeout_s):
            _create_collection(client, name, vectors.shape[1], metric, config)
        client.load_collection(name, timeout=config.timeout_s)
        stored = _stored_versions(client, name, config.timeout_s)
        versions = [item_version(vector, label) for vector, label in zip(vectors, labels)]
        wanted = {str(item_id): row for row, item_id in enumerate(item_ids)}
        changed = [row for item_id, row in wanted.items() if stored.get(item_id) != versions[row]]
        removed = [item_id for item_id in stored if item_id not in wanted]
        for start in range(0, len(changed), MILVUS_BATCH):
            rows = changed[start:start + MILVUS_BATCH]
            client.upsert(name, [{"item_id": str(item_ids[row]), "label": int(labels[row]), "version": versions[row],
                                  "vector": vectors[row].tolist()} for row in rows], timeout=config.timeout_s)
        for start in range(0, len(removed), MILVUS_BATCH):
            client.delete(name, ids=removed[start:start + MILVUS_BATCH], timeout=config.timeout_s)
        client.flush(name, timeout=config.timeout_s)
        added = sum(item_id not in stored for item_id in wanted)
        report = SyncReport(name, len(wanted), added, len(changed) - added, len(removed), len(wanted) - len(changed),
                            time.perf_counter() - started)
    finally:
        client.close()
    log.info("Milvus collection %s: %d items (%d added, %d updated, %d removed, %d kept) in %.1f s", name,
             report.rows, report.added, report.updated, report.removed, report.kept, report.seconds)
    return report


def _create_collection(client: Any, name: str, dimension: int, metric: str, config: IndexConfig) -> None:
    from pymilvus import DataType, MilvusClient

    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("item_id", DataType.VARCHAR, is_primary=True, max_length=256)
    schema.add_field("label", DataType.INT32)
    schema.add_field("version", DataType.VARCHAR, max_length=32)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dimension)
    index = client.prepare_index_params()
    index.add_index("vector", index_type=config.milvus_index, metric_type=metric.upper())
    client.create_collection(name, schema=schema, index_params=index, timeout=config.timeout_s)


def _metric_of(client: Any, name: str, config: IndexConfig) -> str:
    described = client.describe_index(name, index_name="vector", timeout=config.timeout_s)
    return str(described.get("metric_type", "")).lower()


def _stored_versions(client: Any, name: str, timeout_s: float) -> dict[str, str]:
    """Every stored item id with its version, read in pages."""
    versions = {}
    iterator = client.query_iterator(name, batch_size=MILVUS_BATCH, output_fields=["version"], timeout=timeout_s)
    try:
        while page := iterator.next():
            versions.update({str(row["item_id"]): str(row["version"]) for row in page})
    finally:
        iterator.close()
    return versions
