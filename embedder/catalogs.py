"""Open the configured catalog, whichever kind it is."""
from __future__ import annotations

from pathlib import Path

from config import CatalogConfig
from embedder.catalog import Catalog, CatalogError
from embedder.deepfashion import DeepFashionCatalog
from embedder.fashion_mnist import FashionMnistCatalog, locate_fashion_mnist


def open_catalog(catalog: CatalogConfig, download_dir: Path) -> Catalog:
    """The catalog that ``catalog`` describes; Fashion-MNIST may be downloaded into ``download_dir``."""
    if catalog.kind == "fashion-mnist":
        return FashionMnistCatalog(locate_fashion_mnist(catalog.root, download_dir))
    if catalog.kind == "deepfashion":
        if catalog.root is None:
            raise CatalogError(
                "a DeepFashion catalog needs catalog.root (LOOKBOOK_CATALOG_ROOT, or --root): the directory "
                "that holds Anno/, Eval/ and img/; `python manage.py make-sample-catalog DIR` writes a small one"
            )
        return DeepFashionCatalog(catalog.root, subset=catalog.subset)
    raise CatalogError(f"catalog.kind {catalog.kind!r} is not one of fashion-mnist, deepfashion")
