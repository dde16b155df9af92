"""The Milvus backend (Milvus Lite in a temporary file) answers as FAISS's exact search does: the same
top 10, within a category, page by page and by item; syncing the catalog upserts and deletes only what changed."""
from __future__ import annotations

import dataclasses

import faiss
import numpy as np
import pytest

from config import IndexConfig
from indexer.vector_store import FaissStore, MilvusStore, VectorStoreError, sync_milvus

COUNT, DIMENSION, CLASSES = 3000, 32, 5


def catalog(seed: int = 0, count: int = COUNT) -> tuple[list[str], np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((count, DIMENSION)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return [f"item-{row:05d}" for row in range(count)], vectors, rng.integers(0, CLASSES, count)


def faiss_store(vectors: np.ndarray, labels: np.ndarray) -> FaissStore:
    index = faiss.IndexFlatIP(DIMENSION)
    index.add(vectors)
    return FaissStore(index, labels, CLASSES)


def queries(count: int = 40) -> np.ndarray:
    return catalog(seed=99, count=count)[1]


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    directory = tmp_path_factory.mktemp("milvus")
    config = IndexConfig(backend="milvus", uri=str(directory / "milvus.db"))
    ids, vectors, labels = catalog()
    report = sync_milvus(config, directory, "test", ids, vectors, labels, "ip")
    assert (report.added, report.updated, report.removed, report.rows) == (COUNT, 0, 0, COUNT)
    milvus = MilvusStore.open(config, directory, "test", ids, labels, DIMENSION, "ip")
    yield milvus, faiss_store(vectors, labels), vectors
    milvus.close()


def assert_same(got: tuple, want: tuple) -> None:
    """The same distances, and the same rows but for order among ties (float32 sums differ in the last bit)."""
    np.testing.assert_allclose(got[0], want[0], atol=1e-5)
    for (got_d, got_i), want_i in zip(zip(*got), want[1]):
        differ = set(got_i) ^ set(want_i)
        assert not differ or np.all(np.abs(got_d[np.isin(got_i, list(differ))] - got_d[-1]) < 1e-5), (got_i, want_i)


def test_the_nearest_items_are_faiss_exacts(stores):
    milvus, exact, _ = stores
    assert len(milvus) == len(exact) == COUNT
    assert_same(milvus.search(queries(), 10), exact.search(queries(), 10))


def test_a_category_search_finds_only_that_categorys_nearest_items(stores):
    milvus, exact, _ = stores
    for label in range(CLASSES):
        D, I = milvus.search(queries(8), 10, label=label)
        assert (exact.labels[I] == label).all() and milvus.count_of(label) == exact.count_of(label)
        assert_same((D, I), exact.search(queries(8), 10, label=label))


def test_pages_follow_one_another(stores):
    milvus, exact, _ = stores
    first, deeper = milvus.search(queries(5), 10), milvus.search(queries(5), 30)
    np.testing.assert_array_equal(deeper[1][:, :10], first[1])
    assert_same(deeper, exact.search(queries(5), 30))


def test_an_items_vector_is_the_one_stored(stores):
    milvus, exact, vectors = stores
    np.testing.assert_allclose(milvus.vector(1234), vectors[1234:1235], atol=1e-6)
    assert_same(milvus.search(milvus.vector(77), 5), exact.search(exact.vector(77), 5))


def test_items_the_catalog_no_longer_has_leave_no_gaps(stores, tmp_path):
    milvus, exact, _ = stores
    D, I = milvus.search(queries(3), 10)
    forgotten = MilvusStore(milvus.client, milvus.collection, [f"other-{row}" if row in set(I[0, :3]) else item_id
                                                              for row, item_id in enumerate(milvus.item_ids)],
                            milvus.labels, DIMENSION, "ip", milvus.timeout_s)
    D2, I2 = forgotten.search(queries(3), 10)
    assert list(I2[0, :7]) == list(I[0, 3:]) and (I2[0, 7:] == -1).all()  # the rest moved up, -1 only at the end


def test_syncing_a_changed_catalog_upserts_and_deletes_only_what_changed(tmp_path):
    config = IndexConfig(backend="milvus", uri=str(tmp_path / "milvus.db"))
    ids, vectors, labels = catalog(seed=1, count=500)
    sync_milvus(config, tmp_path, "test", ids, vectors, labels, "ip")
    more_ids, more_vectors, more_labels = catalog(seed=2, count=10)
    keep = np.setdiff1d(np.arange(500), [3, 50, 100, 200, 400])  # 5 removed
    vectors = vectors.copy()
    vectors[[10, 20]] = more_vectors[:2]  # 2 images replaced
    labels = labels.copy()
    labels[30] = (labels[30] + 1) % CLASSES  # 1 relabelled
    new_ids = [ids[row] for row in keep] + [f"new-{n}" for n in range(10)]
    new_vectors = np.concatenate([vectors[keep], more_vectors])
    new_labels = np.concatenate([labels[keep], more_labels])
    report = sync_milvus(config, tmp_path, "test", new_ids, new_vectors, new_labels, "ip")
    assert (report.added, report.updated, report.removed, report.kept) == (10, 3, 5, 492)
    milvus = MilvusStore.open(config, tmp_path, "test", new_ids, new_labels, DIMENSION, "ip")
    try:
        exact = faiss_store(new_vectors, new_labels)
        assert_same(milvus.search(queries(), 10), exact.search(queries(), 10))
        assert_same(milvus.search(queries(), 10, label=2), exact.search(queries(), 10, label=2))
    finally:
        milvus.close()
    again = sync_milvus(config, tmp_path, "test", new_ids, new_vectors, new_labels, "ip")
    assert (again.added, again.updated, again.removed, again.kept) == (0, 0, 0, 505)


def test_a_collection_that_does_not_hold_the_catalog_is_refused(tmp_path):
    config = IndexConfig(backend="milvus", uri=str(tmp_path / "milvus.db"))
    ids, vectors, labels = catalog(count=300)
    with pytest.raises(VectorStoreError, match="has no collection 'lookbook_test'"):
        MilvusStore.open(config, tmp_path, "test", ids, labels, DIMENSION, "ip")
    sync_milvus(config, tmp_path, "test", ids[:200], vectors[:200], labels[:200], "ip")
    with pytest.raises(VectorStoreError, match="holds 200 items, the catalog 300"):
        MilvusStore.open(config, tmp_path, "test", ids, labels, DIMENSION, "ip")
    assert dataclasses.replace(config, collection="mine").collection == "mine"


def test_closing_a_retired_store_leaves_the_new_one_searching(tmp_path):
    """A reload opens the new store beside the old one, on the same URI, then closes the old one."""
    config = IndexConfig(backend="milvus", uri=str(tmp_path / "milvus.db"))
    ids, vectors, labels = catalog(count=300)
    sync_milvus(config, tmp_path, "test", ids, vectors, labels, "ip")
    retired = MilvusStore.open(config, tmp_path, "test", ids, labels, DIMENSION, "ip")
    served = MilvusStore.open(config, tmp_path, "test", ids, labels, DIMENSION, "ip")
    retired.close()
    try:
        assert_same(served.search(queries(), 10), faiss_store(vectors, labels).search(queries(), 10))
    finally:
        served.close()
