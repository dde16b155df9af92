import json

import h5py
import numpy as np
import pytest

import embedder.inference.extract as extract
from config import EmbedderConfig
from embedder.checkpoint import provide_embedder
from embedder.inference.extract import embed_catalog, embeddings_attributes
from embedder.inference.partial_embeddings import FORMAT
from tests.conftest import ColourCatalog


@pytest.fixture
def small_embedder(tmp_path, colour_catalog):
    config = EmbedderConfig(weights="none", embedding_size=8, image_size=32)
    return provide_embedder(config, colour_catalog, tmp_path, "cpu")


def run(catalog, embedder, path, batch_size=4):
    # torch: these tests are about the file, and ONNX Runtime's export would cost each of them ~12 s
    # (tests/embedder/test_onnx_runtime.py covers that runtime, the CLI and server tests its default use).
    return embed_catalog(catalog, embedder, path, embeddings_attributes(catalog, embedder, "all"),
                         batch_size=batch_size, workers=0, runtime="torch")


def test_embeddings_file_follows_the_contract(tmp_path, small_embedder):
    catalog = ColourCatalog(count=10, broken=(3, 7))
    report = run(catalog, small_embedder, tmp_path / "embeddings.h5")
    assert (report.embedded, len(report.skipped)) == (8, 2)
    assert {s.item_id for s in report.skipped} == {"item-003", "item-007"}
    assert "truncated" in report.skipped[0].reason
    with h5py.File(tmp_path / "embeddings.h5") as f:
        assert f.attrs["format"] == FORMAT and f.attrs["embedding_size"] == 8
        assert f["embeddings"].shape == (8, 8) and f["embeddings"].dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(f["embeddings"][:], axis=1), 1, atol=1e-5)
        ids = [s.decode() for s in f["item_id"][:]]
        assert ids == [f"item-{i:03d}" for i in range(10) if i not in (3, 7)]
        assert list(f["label"][:]) == [catalog.items[int(i[-3:])].label for i in ids]
        assert f.attrs["checkpoint_sha256"] == small_embedder.sha256
    assert not (tmp_path / "embeddings.h5.partial").exists()


def interrupt_at_the_third_batch(catalog, embedder, output, monkeypatch) -> None:
    """Run an extraction that is interrupted (as by Ctrl-C) while embedding its third batch."""
    real_embed, calls = extract.embed_batch, []

    def dies_on_third_batch(*args):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_embed(*args)

    with monkeypatch.context() as patched:
        patched.setattr(extract, "embed_batch", dies_on_third_batch)
        with pytest.raises(KeyboardInterrupt):
            run(catalog, embedder, output)


def test_interrupted_run_resumes_and_matches_an_uninterrupted_one(tmp_path, small_embedder, monkeypatch):
    catalog = ColourCatalog(count=20, broken=(5,))
    run(catalog, small_embedder, tmp_path / "whole.h5")
    interrupt_at_the_third_batch(catalog, small_embedder, tmp_path / "resumed.h5", monkeypatch)
    assert (tmp_path / "resumed.h5.partial").exists() and not (tmp_path / "resumed.h5").exists()
    report = run(catalog, small_embedder, tmp_path / "resumed.h5")
    assert report.resumed_rows == 8 and report.embedded == 19 and len(report.skipped) == 1
    with h5py.File(tmp_path / "whole.h5") as a, h5py.File(tmp_path / "resumed.h5") as b:
        np.testing.assert_allclose(a["embeddings"][:], b["embeddings"][:], atol=1e-6)
        assert list(a["item_id"][:]) == list(b["item_id"][:])


def test_rows_marked_done_whose_vectors_never_reached_the_disk_are_embedded_again(tmp_path, small_embedder,
                                                                                monkeypatch):
    catalog = ColourCatalog(count=20)
    run(catalog, small_embedder, tmp_path / "whole.h5")
    interrupt_at_the_third_batch(catalog, small_embedder, tmp_path / "resumed.h5", monkeypatch)
    # What a crash between the status and the vectors reaching the disk leaves: rows done, vectors of zeros.
    with h5py.File(tmp_path / "resumed.h5.partial", "r+") as handle:
        assert list(handle["status"][:8]) == [1] * 8
        handle["embeddings"][2:4] = 0
    report = run(catalog, small_embedder, tmp_path / "resumed.h5")
    assert report.resumed_rows == 6 and report.embedded == 20
    with h5py.File(tmp_path / "whole.h5") as a, h5py.File(tmp_path / "resumed.h5") as b:
        np.testing.assert_allclose(a["embeddings"][:], b["embeddings"][:], atol=1e-6)


def test_partial_file_of_another_model_is_not_resumed(tmp_path, small_embedder, monkeypatch):
    catalog = ColourCatalog(count=12)
    partial = tmp_path / "e.h5.partial"
    partial.write_bytes(b"not hdf5 at all")  # a file cut off mid-write
    report = run(catalog, small_embedder, tmp_path / "e.h5")
    assert report.resumed_rows == 0 and report.embedded == 12


def test_a_catalog_with_no_readable_image_is_an_error(tmp_path, small_embedder):
    catalog = ColourCatalog(count=4, broken=(0, 1, 2, 3))
    with pytest.raises(RuntimeError, match="none of the 4"):
        run(catalog, small_embedder, tmp_path / "e.h5")


class AttributedColours(ColourCatalog):
    """Colour squares whose one attribute is their row number's parity, and catalog options of their own."""

    @property
    def options(self):
        return {"shade": "dark"}

    def item_attributes(self):
        from embedder.catalogs.base import ItemAttributes

        values = np.array([[1 if row % 2 else -1, 0] for row in range(len(self.items))], dtype=np.int8)
        return ItemAttributes(["odd", "unknown"], ["style", "style"], values)


def test_item_attributes_are_stored_for_the_embedded_rows(tmp_path, small_embedder):
    from indexer.embeddings_file import read_embeddings

    catalog = AttributedColours(count=8, broken=(3,))
    attributes = embeddings_attributes(catalog, small_embedder, "all")
    assert json.loads(attributes["catalog_options"]) == {"shade": "dark"}
    run(catalog, small_embedder, tmp_path / "embeddings.h5")
    stored = read_embeddings(tmp_path / "embeddings.h5")
    assert stored.attribute_names == ["odd", "unknown"] and stored.attribute_kinds == ["style", "style"]
    rows = [int(item_id[-3:]) for item_id in stored.item_id]
    assert rows == [0, 1, 2, 4, 5, 6, 7]
    assert stored.attributes[:, 0].tolist() == [1 if row % 2 else -1 for row in rows]
    assert not stored.attributes[:, 1].any()


def test_a_catalog_without_attributes_stores_none(tmp_path, small_embedder):
    from indexer.embeddings_file import read_embeddings

    run(ColourCatalog(count=4), small_embedder, tmp_path / "embeddings.h5")
    stored = read_embeddings(tmp_path / "embeddings.h5")
    assert stored.attributes is None and stored.attribute_names == []
