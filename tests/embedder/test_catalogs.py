"""open_catalog: the configured kind, root and subset decide which reader runs."""
from __future__ import annotations

import pytest

from config import CatalogConfig
from embedder.catalogs import open_catalog
from embedder.catalogs.base import CatalogError
from embedder.catalogs.deepfashion import DeepFashionCatalog
from embedder.catalogs.fashion_mnist import DEBIAN_DIRS, FashionMnistCatalog


def test_fashion_mnist_from_the_configured_root(fashion_mnist_dir, tmp_path):
    catalog = open_catalog(CatalogConfig(kind="fashion-mnist", root=fashion_mnist_dir), tmp_path / "downloads")
    assert isinstance(catalog, FashionMnistCatalog) and len(catalog) == 17 and catalog.root == fashion_mnist_dir


def test_deepfashion_with_its_subset(sample_catalog_root, tmp_path):
    catalog = open_catalog(CatalogConfig(kind="deepfashion", root=sample_catalog_root, subset="lower"), tmp_path)
    assert isinstance(catalog, DeepFashionCatalog)
    assert catalog.subset == "lower" and catalog.class_names == ["Jeans", "Skirt"]


def test_deepfashion_without_a_root_says_to_set_it(tmp_path):
    with pytest.raises(CatalogError, match=r"needs catalog\.root \(LOOKBOOK_CATALOG_ROOT"):
        open_catalog(CatalogConfig(kind="deepfashion"), tmp_path)


def test_fashion_mnist_root_missing_files(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(CatalogError, match=r"train-images-idx3-ubyte\(\.gz\) is missing"):
        open_catalog(CatalogConfig(kind="fashion-mnist", root=tmp_path / "empty"), tmp_path / "downloads")


@pytest.mark.skipif(not DEBIAN_DIRS[0].is_dir(), reason=f"{DEBIAN_DIRS[0]} not installed")
def test_fashion_mnist_without_a_root_uses_the_debian_package(tmp_path):
    catalog = open_catalog(CatalogConfig(kind="fashion-mnist"), tmp_path / "downloads")
    assert catalog.root == DEBIAN_DIRS[0] and len(catalog) == 70_000
    assert not (tmp_path / "downloads").exists()
