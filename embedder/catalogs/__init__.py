"""Catalogs: the three readers, sample catalogs, and opening the configured catalog, whichever kind it is."""
from __future__ import annotations

from pathlib import Path

from config import CatalogConfig
from embedder.catalogs.base import Catalog, CatalogError
from embedder.catalogs.deepfashion import DeepFashionCatalog
from embedder.catalogs.fashion_mnist import FashionMnistCatalog, locate_fashion_mnist
from embedder.catalogs.fashion_product_images import FashionProductImagesCatalog
from embedder.catalogs.subset import limit_catalog


def open_catalog(catalog: CatalogConfig, download_dir: Path) -> Catalog:
    """The catalog that ``catalog`` describes, or ``catalog.limit`` items of it spread evenly when that is set."""
    return limit_catalog(open_whole_catalog(catalog, download_dir), catalog.limit)


def open_whole_catalog(catalog: CatalogConfig, download_dir: Path) -> Catalog:
    """Every item of the catalog that ``catalog`` describes; Fashion-MNIST may be downloaded into ``download_dir``."""
    if catalog.kind == "fashion-mnist":
        return FashionMnistCatalog(locate_fashion_mnist(catalog.root, download_dir))
    if catalog.kind == "deepfashion":
        if catalog.root is None:
            raise CatalogError(
                "a DeepFashion catalog needs catalog.root (LOOKBOOK_CATALOG_ROOT, or --root): the directory "
                "that holds Anno/, Eval/ and img/; `python manage.py make-sample-catalog DIR` writes a small one"
            )
        return DeepFashionCatalog(catalog.root, subset=catalog.subset)
    if catalog.kind == "fashion-product-images":
        if catalog.root is None:
            raise CatalogError(
                "a Fashion Product Images catalog needs catalog.root (LOOKBOOK_CATALOG_ROOT, or --root): the directory "
                "that holds styles.csv and images/; `python manage.py make-sample-catalog --layout "
                "fashion-product-images DIR` writes a small one"
            )
        return FashionProductImagesCatalog(catalog.root, split=catalog.split, article_types=catalog.article_types)
    raise CatalogError(f"catalog.kind {catalog.kind!r} is not one of fashion-mnist, deepfashion, fashion-product-images")
