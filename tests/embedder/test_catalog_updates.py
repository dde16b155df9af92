"""build-index after the catalog changed: it embeds only new and changed items, keeps the rest, drops removed
ones, and gives what a full rebuild gives."""
from __future__ import annotations

import json
from pathlib import Path

import faiss
import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from embedder.catalogs.deepfashion import ATTR_IMG, CATEGORY_IMG
from embedder.catalogs.sample_deepfashion import write_sample_catalog
from embedder.inference.partial_embeddings import PartialEmbeddings
from manage import cli
from tests.conftest import Listing, sample_build_arguments

BATCH = 4


@pytest.fixture
def listing(tmp_path) -> Listing:
    # 63 images, one of them cut short (skipped, and not tried again while it stays the same).
    return Listing(write_sample_catalog(tmp_path / "catalog", images_per_category=7, seed=3, truncated=1))


def build(root: Path, artifacts: Path, *more: str) -> dict:
    result = CliRunner().invoke(cli, [*sample_build_arguments(root, artifacts, BATCH), "build-index", *more],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads((artifacts / "build-report.json").read_text())["embeddings"]


def test_only_new_and_changed_items_are_embedded_and_the_result_equals_a_full_rebuild(listing, tmp_path):
    names, readable = listing.names, listing.readable
    added, removed, changed = readable[1::6][:10], readable[2::6][:5], readable[3::6][:3]
    listing.show_only([name for name in names if name not in added])
    first = build(listing.root, tmp_path / "artifacts")
    assert first["added"] == 53 and first["images_embedded"] == 53

    listing.show_only([name for name in names if name not in removed])
    for name in changed:
        listing.redraw(name)
    update = build(listing.root, tmp_path / "artifacts")

    assert (update["added"], update["changed"], update["removed"], update["kept"]) == (10, 3, 5, 58 - 13)
    assert update["images_embedded"] == 13 and not update["reused"]
    full = build(listing.root, tmp_path / "full")
    assert full["images_embedded"] == 58
    with h5py.File(tmp_path / "full" / "embeddings.h5") as want, h5py.File(tmp_path / "artifacts" / "embeddings.h5") as got:
        for name in ("item_id", "path", "label", "split", "title", "fingerprint", "attributes"):
            assert np.array_equal(got[name][:], want[name][:]), name
        assert list(got["skipped/item_id"][:]) == list(want["skipped/item_id"][:]) and len(got["skipped/item_id"]) == 1
        np.testing.assert_allclose(got["embeddings"][:], want["embeddings"][:], atol=1e-5)
        vectors = want["embeddings"][:]
    indexes = [faiss.read_index(str(tmp_path / directory / "index.faiss")) for directory in ("full", "artifacts")]
    (_, want_rows), (_, got_rows) = (index.search(vectors, 5) for index in indexes)
    assert np.array_equal(got_rows, want_rows)

    again = build(listing.root, tmp_path / "artifacts")
    assert again["reused"] and again["images_embedded"] == 0 and len(again["skipped"]) == 1


def test_a_relabelled_item_is_rewritten_without_embedding(listing, tmp_path):
    build(listing.root, tmp_path / "artifacts")
    path = listing.root / CATEGORY_IMG
    lines = path.read_text().splitlines()
    name, label = lines[2].split()
    lines[2] = f"{name} {int(label) % 20 + 1}"
    path.write_text("\n".join(lines) + "\n")
    update = build(listing.root, tmp_path / "artifacts")
    assert update["images_embedded"] == 0 and update["kept"] == 63 and not update["reused"]
    with h5py.File(tmp_path / "artifacts" / "embeddings.h5") as handle:
        assert int(handle["label"][0]) == int(label) % 20  # labels are 0-based in the file


def test_an_edited_attribute_file_is_rewritten_into_the_file_without_embedding(listing, tmp_path):
    build(listing.root, tmp_path / "artifacts")
    path = listing.root / ATTR_IMG
    lines = path.read_text().splitlines()
    name, *values = lines[2].split()
    values[0] = "1" if values[0] != "1" else "-1"
    lines[2] = " ".join([name, *values])
    path.write_text("\n".join(lines) + "\n")
    update = build(listing.root, tmp_path / "artifacts")
    assert update["images_embedded"] == 0 and update["kept"] == 63 and not update["reused"]
    with h5py.File(tmp_path / "artifacts" / "embeddings.h5") as handle:
        row = list(handle["path"].asstr()[:]).index(name)
        assert int(handle["attributes"][row, 0]) == int(values[0])
    assert build(listing.root, tmp_path / "artifacts")["reused"]


def test_a_partial_file_is_resumed_only_for_the_same_items(listing, tmp_path, monkeypatch):
    write, calls = PartialEmbeddings.write, []

    def dies_on_the_third_batch(self, *args):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        write(self, *args)

    for change in (None, listing.readable[40]):
        artifacts = tmp_path / f"artifacts-{change is None}"
        calls.clear()
        monkeypatch.setattr(PartialEmbeddings, "write", dies_on_the_third_batch)
        result = CliRunner().invoke(cli, [*sample_build_arguments(listing.root, artifacts, BATCH), "build-index"])
        assert result.exit_code != 0 and (artifacts / "embeddings.h5.partial").exists()
        monkeypatch.setattr(PartialEmbeddings, "write", write)
        if change is not None:
            listing.redraw(change)  # the partial file's rows are of another catalog now
        report = build(listing.root, artifacts)
        assert report["resumed_rows"] == (2 * BATCH if change is None else 0)
