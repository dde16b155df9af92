"""Reading embeddings.h5: a faithful round trip, and a clear error naming the file for each malformation."""
from __future__ import annotations

import hashlib

import h5py
import numpy as np
import pytest

from indexer.embeddings_file import EmbeddingsFileError, embeddings_shape, file_sha256, read_embeddings
from tests.indexer.conftest import CLASS_NAMES, unit_rows, write_embeddings


def test_round_trip_keeps_every_column_and_attribute(tmp_path):
    rng = np.random.default_rng(1)
    vectors = unit_rows(rng, 5, 4)
    path = write_embeddings(
        tmp_path / "e.h5", vectors, [0, 1, 2, 1, 0], ["train", "val", "test", "train", "train"],
        titles=["Blue shirt", "Jeans — slim", "", "Kjóll", "x"], attrs={"has_titles": True},
    )
    read = read_embeddings(path)
    assert read.embeddings.dtype == np.float32 and read.embeddings.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(read.embeddings, vectors)
    assert read.item_id.tolist() == [f"item-{row:04d}" for row in range(5)]
    assert read.path.tolist()[:2] == ["train#0", "train#1"]
    assert read.label.tolist() == [0, 1, 2, 1, 0]
    assert read.split.tolist() == ["train", "val", "test", "train", "train"]
    assert read.title.tolist() == ["Blue shirt", "Jeans — slim", "", "Kjóll", "x"]
    assert all(isinstance(value, str) for value in read.title.tolist())
    assert read.class_names == CLASS_NAMES
    assert read.preprocessing["image_size"] == 32 and read.preprocessing["grayscale"] is True
    assert (read.model_name, read.embedding_size, read.has_titles) == ("resnet50", 4, True)
    assert type(read.embedding_size) is int and type(read.has_titles) is bool
    assert read.checkpoint_sha256 == "ab" * 32
    assert (read.catalog_kind, read.catalog_subset) == ("fashion-mnist", "upper")
    assert read.created_at.startswith("2024-05-01")
    assert read.source == path and (read.count, read.dimension) == (5, 4)
    assert read.split_counts() == {"train": 3, "val": 1, "test": 1}
    assert read.rows_in(("train", "test")).tolist() == [0, 2, 3, 4]
    assert embeddings_shape(path) == (5, 4)


def test_file_sha256_matches_hashlib(embeddings_path):
    assert file_sha256(embeddings_path) == hashlib.sha256(embeddings_path.read_bytes()).hexdigest()


def test_missing_file_says_to_build(tmp_path):
    with pytest.raises(EmbeddingsFileError, match=r"nothere\.h5.*does not exist.*build-index"):
        read_embeddings(tmp_path / "nothere.h5")


def test_not_hdf5(tmp_path):
    path = tmp_path / "junk.h5"
    path.write_text("not hdf5")
    with pytest.raises(EmbeddingsFileError, match=r"junk\.h5.*not a readable HDF5 file"):
        read_embeddings(path)


@pytest.mark.parametrize("dataset", ["embeddings", "item_id", "path", "label", "split", "title"])
def test_missing_dataset(make_embeddings, dataset):
    path = make_embeddings("bad.h5", drop=(dataset,))
    with pytest.raises(EmbeddingsFileError, match=rf"bad\.h5: dataset '{dataset}' missing.*build-index"):
        read_embeddings(path)


def test_missing_attribute(make_embeddings):
    path = make_embeddings("bad.h5", drop=("checkpoint_sha256",))
    with pytest.raises(EmbeddingsFileError, match=r"bad\.h5: attribute\(s\) checkpoint_sha256 missing"):
        read_embeddings(path)


def test_wrong_row_count(make_embeddings):
    path = make_embeddings("bad.h5", count=10, datasets={"title": ["t"] * 9})
    with pytest.raises(EmbeddingsFileError, match=r"bad\.h5: dataset 'title' has shape \(9,\), expected \(10,\)"):
        read_embeddings(path)


def test_wrong_format_attribute(make_embeddings):
    path = make_embeddings("bad.h5", attrs={"format": "clip-retrieval"})
    with pytest.raises(EmbeddingsFileError, match=r"bad\.h5: format attribute is 'clip-retrieval'"):
        read_embeddings(path)
    with pytest.raises(EmbeddingsFileError, match="format attribute"):
        embeddings_shape(path)


def test_newer_format_version(make_embeddings):
    path = make_embeddings("bad.h5", attrs={"format_version": 2})
    with pytest.raises(EmbeddingsFileError, match=r"bad\.h5: format_version is 2"):
        read_embeddings(path)


def test_dimension_differs_from_embedding_size(make_embeddings):
    path = make_embeddings("bad.h5", dimension=8, attrs={"embedding_size": 128})
    with pytest.raises(EmbeddingsFileError, match=r"bad\.h5: embeddings have 8 columns but .*says 128"):
        read_embeddings(path)


@pytest.mark.parametrize("row_value", [0.0, 2.0])  # NaN rows have their own check
def test_a_row_that_is_not_a_unit_vector_is_refused(make_embeddings, row_value):
    # Rows of zeros are what a crash leaves where vectors never reached the disk; they must not be indexed.
    vectors = np.full((6, 8), np.sqrt(1 / 8), dtype=np.float32)
    vectors[4] = row_value
    path = make_embeddings("bad.h5", count=6, datasets={"embeddings": vectors})
    with pytest.raises(EmbeddingsFileError, match=r"bad\.h5: row 4 \(item-0004\) is not a unit vector"):
        read_embeddings(path)


def test_label_outside_class_names(make_embeddings):
    path = make_embeddings("bad.h5", count=6, datasets={"label": np.array([0, 1, 2, 3, 0, 1], dtype=np.int32)})
    with pytest.raises(EmbeddingsFileError, match=r"bad\.h5: label of row 3 is 3, outside the 3 class_names"):
        read_embeddings(path)


def test_unknown_split(make_embeddings):
    path = make_embeddings("bad.h5", count=3, datasets={"split": ["train", "holdout", "test"]})
    with pytest.raises(EmbeddingsFileError, match=r"bad\.h5: split holds 'holdout'"):
        read_embeddings(path)


def test_duplicate_item_id(make_embeddings):
    path = make_embeddings("bad.h5", count=3, datasets={"item_id": ["a", "b", "a"]})
    with pytest.raises(EmbeddingsFileError, match=r"bad\.h5: item_id 'a' appears more than once"):
        read_embeddings(path)


def test_nan_vector(make_embeddings, tmp_path):
    path = make_embeddings("bad.h5", count=4)
    with h5py.File(path, "r+") as handle:
        handle["embeddings"][2, 1] = np.nan
    with pytest.raises(EmbeddingsFileError, match=r"bad\.h5: embeddings row 2 holds NaN"):
        read_embeddings(path)


def test_class_names_not_json(make_embeddings):
    path = make_embeddings("bad.h5", attrs={"class_names": "shirt, trouser"})
    with pytest.raises(EmbeddingsFileError, match=r"bad\.h5: attribute 'class_names' is not JSON"):
        read_embeddings(path)
