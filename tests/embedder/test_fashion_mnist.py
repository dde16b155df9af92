"""Fashion-MNIST: idx parsing (gzipped or not), the catalog, and where the files are looked for."""
from __future__ import annotations

import gzip
import sys
from pathlib import Path

import numpy as np
import pytest

from embedder.catalogs.base import CatalogError
from embedder.catalogs.fashion_mnist import (
    CLASS_NAMES,
    DEBIAN_DIRS,
    FashionMnistCatalog,
    locate_fashion_mnist,
    read_idx,
)
from tests.embedder.conftest import write_fashion_mnist, write_idx

REAL_DIR = DEBIAN_DIRS[0]


@pytest.mark.parametrize("gz", [True, False])
def test_catalog_reads_train_then_test(tmp_path, gz):
    root = write_fashion_mnist(tmp_path / "fm", train=12, test=5, gz=gz)
    catalog = FashionMnistCatalog(root)
    assert catalog.kind == "fashion-mnist" and catalog.default_image_size == 32 and not catalog.has_titles
    assert catalog.class_names == list(CLASS_NAMES) and len(CLASS_NAMES) == 10
    assert len(catalog) == 17 and catalog.pixels.shape == (17, 28, 28) and catalog.pixels.dtype == np.uint8
    assert [item.split for item in catalog.items] == ["train"] * 12 + ["test"] * 5
    first, last = catalog.items[0], catalog.items[-1]
    assert (first.item_id, first.path, first.title) == ("train-00000", "train#0", "")
    assert (last.item_id, last.path, last.label) == ("test-00004", "test#4", 4)
    assert [item.label for item in catalog.items[:12]] == [n % 10 for n in range(12)]


def test_open_image_is_the_gray_picture_in_rgb(fashion_mnist_dir):
    catalog = FashionMnistCatalog(fashion_mnist_dir)
    with gzip.open(fashion_mnist_dir / "t10k-images-idx3-ubyte.gz") as handle:
        test_pixels = np.frombuffer(handle.read(), dtype=np.uint8, offset=16).reshape(-1, 28, 28)
    image = catalog.open_image(12 + 3)
    assert image.mode == "RGB" and image.size == (28, 28)
    array = np.asarray(image)
    for channel in range(3):
        assert np.array_equal(array[..., channel], test_pixels[3])


def test_mixed_gz_and_plain_files(tmp_path):
    root = write_fashion_mnist(tmp_path / "fm", gz=True)
    plain = root / "train-labels-idx1-ubyte"
    plain.write_bytes(gzip.decompress((root / "train-labels-idx1-ubyte.gz").read_bytes()))
    (root / "train-labels-idx1-ubyte.gz").unlink()
    assert len(FashionMnistCatalog(root)) == 17


def test_read_idx_checks_magic_shape_and_length(tmp_path):
    images = write_idx(tmp_path / "images-idx3-ubyte", np.zeros((2, 28, 28)))
    assert read_idx(images, dimensions=3).shape == (2, 28, 28)
    with pytest.raises(CatalogError, match=r"images-idx3-ubyte: not an idx file of 1-dimensional .* 0x00000801, found 0x00000803"):
        read_idx(images, dimensions=1)
    cut = tmp_path / "cut-idx3-ubyte"
    cut.write_bytes(images.read_bytes()[:-10])
    with pytest.raises(CatalogError, match=r"cut-idx3-ubyte: the header promises 2x28x28 = 1568 bytes of data, found 1558"):
        read_idx(cut, dimensions=3)
    text = tmp_path / "text-idx1-ubyte"
    text.write_text("hello")
    with pytest.raises(CatalogError, match=r"text-idx1-ubyte: not an idx file"):
        read_idx(text, dimensions=1)


def test_damaged_gzip_names_the_file(tmp_path):
    path = write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.arange(100) % 10)
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(CatalogError, match=r"train-labels-idx1-ubyte\.gz: cannot be read"):
        read_idx(path, dimensions=1)


def test_corrupt_compressed_data_names_the_file(tmp_path):
    path = write_idx(tmp_path / "train-images-idx3-ubyte.gz", np.random.default_rng(0).integers(0, 256, (50, 28, 28)))
    data = bytearray(path.read_bytes())
    data[10] ^= 0xFF  # the first deflate block's header: zlib.error, which is not an OSError
    path.write_bytes(bytes(data))
    with pytest.raises(CatalogError, match=r"train-images-idx3-ubyte\.gz: cannot be read"):
        read_idx(path, dimensions=3)


def test_labels_and_images_must_agree(tmp_path):
    root = write_fashion_mnist(tmp_path / "fm")
    write_idx(root / "t10k-labels-idx1-ubyte.gz", np.arange(4))
    with pytest.raises(CatalogError, match="t10k-images-idx3-ubyte holds 5 images but t10k-labels-idx1-ubyte 4 labels"):
        FashionMnistCatalog(root)
    write_idx(root / "t10k-labels-idx1-ubyte.gz", np.array([0, 1, 2, 3, 10]))
    with pytest.raises(CatalogError, match=r"t10k-labels-idx1-ubyte\.gz: label 10 is not 0\.\.9"):
        FashionMnistCatalog(root)


def test_locate_prefers_the_configured_root(fashion_mnist_dir, tmp_path):
    other = write_fashion_mnist(tmp_path / "debian")
    assert locate_fashion_mnist(fashion_mnist_dir, tmp_path / "dl", candidates=[other]) == fashion_mnist_dir


def test_configured_root_missing_a_file_names_it(fashion_mnist_dir, tmp_path):
    (fashion_mnist_dir / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(CatalogError, match=r"t10k-labels-idx1-ubyte\(\.gz\) is missing"):
        locate_fashion_mnist(fashion_mnist_dir, tmp_path / "dl", candidates=[])
    with pytest.raises(CatalogError, match="is not a directory"):
        locate_fashion_mnist(tmp_path / "nowhere", tmp_path / "dl", candidates=[])


def test_locate_takes_the_first_complete_candidate(tmp_path):
    incomplete = write_fashion_mnist(tmp_path / "incomplete")
    (incomplete / "train-images-idx3-ubyte.gz").unlink()
    complete = write_fashion_mnist(tmp_path / "complete", gz=False)
    never = write_fashion_mnist(tmp_path / "later")

    def must_not_download(directory: Path) -> None:
        raise AssertionError("downloaded although a candidate directory had the files")

    found = locate_fashion_mnist(None, tmp_path / "dl", [tmp_path / "absent", incomplete, complete, never], must_not_download)
    assert found == complete


def test_locate_downloads_into_torchvision_layout(tmp_path):
    calls = []

    def fake_download(directory: Path) -> None:
        calls.append(directory)
        write_fashion_mnist(directory / "FashionMNIST" / "raw")

    found = locate_fashion_mnist(None, tmp_path / "dl", [tmp_path / "absent"], fake_download)
    assert found == tmp_path / "dl" / "FashionMNIST" / "raw" and calls == [tmp_path / "dl"]
    # A second time the earlier download is used; nothing is fetched again.
    assert locate_fashion_mnist(None, tmp_path / "dl", [], fake_download) == found and len(calls) == 1


def assert_three_ways(message: str) -> None:
    assert "apt-get install dataset-fashion-mnist" in message
    assert "catalog.root" in message and "LOOKBOOK_CATALOG_ROOT" in message
    assert "go online" in message and "torchvision" in message


def test_failed_torchvision_download_lists_the_three_ways(tmp_path, monkeypatch):
    import torchvision.datasets

    class Offline:
        def __init__(self, root, train=True, download=False, **kwargs):
            raise RuntimeError("Error downloading train-images-idx3-ubyte.gz: no network")

    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", Offline)
    with pytest.raises(CatalogError) as caught:
        locate_fashion_mnist(None, tmp_path / "dl", candidates=[tmp_path / "absent"])
    message = str(caught.value)
    assert_three_ways(message)
    assert "no network" in message and str(tmp_path / "absent") in message


def test_missing_torchvision_lists_the_three_ways(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torchvision.datasets", None)
    with pytest.raises(CatalogError) as caught:
        locate_fashion_mnist(None, tmp_path / "dl", candidates=[])
    assert_three_ways(str(caught.value))
    assert "ModuleNotFoundError" in str(caught.value) or "ImportError" in str(caught.value)


@pytest.mark.skipif(not REAL_DIR.is_dir(), reason=f"{REAL_DIR} not installed (apt-get install dataset-fashion-mnist)")
def test_real_fashion_mnist_from_the_debian_package(tmp_path):
    root = locate_fashion_mnist(None, tmp_path / "dl")
    assert root == REAL_DIR
    catalog = FashionMnistCatalog(root)
    train = np.array([item.label for item in catalog.items if item.split == "train"])
    test = np.array([item.label for item in catalog.items if item.split == "test"])
    assert len(train) == 60_000 and len(test) == 10_000 and len(catalog.class_names) == 10
    assert np.bincount(train).tolist() == [6000] * 10 and np.bincount(test).tolist() == [1000] * 10
    assert catalog.items[-1].item_id == "test-09999" and catalog.open_image(0).size == (28, 28)
