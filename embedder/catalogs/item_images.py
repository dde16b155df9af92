"""The catalog image behind each row of an embeddings file, for pages and reports that show items."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image

from config import CatalogConfig, ConfigError
from embedder.catalogs import open_catalog
from embedder.catalogs.base import CatalogError

REBUILD_HINT = "re-run `python manage.py build-index`"


class EmbeddedCatalog(Protocol):
    """What an embeddings file records about the catalog it was made from (indexer's EmbeddingsFile has it)."""

    source: Path
    catalog_kind: str
    catalog_root: str
    catalog_subset: str
    item_id: Sequence[str]


def catalog_image_loader(stored: EmbeddedCatalog, download_dir: Path) -> Callable[[int], Image.Image]:
    """Reopen the catalog that was embedded; the function returned maps an embeddings row to its item's image.

    CatalogError when the catalog cannot be reopened or no longer holds every embedded item. The
    images themselves are opened on each call and raise the catalog's CatalogImageError when unreadable.
    """
    try:
        catalog_config = CatalogConfig(kind=stored.catalog_kind, root=Path(stored.catalog_root),
                                       subset=stored.catalog_subset)
    except ConfigError as error:
        raise CatalogError(f"{stored.source} names a catalog Lookbook cannot reopen ({error}); {REBUILD_HINT}") from None
    catalog = open_catalog(catalog_config, download_dir)
    position = {item.item_id: number for number, item in enumerate(catalog.items)}
    item_ids = [str(item_id) for item_id in stored.item_id]
    unknown = [item_id for item_id in item_ids if item_id not in position]
    if unknown:
        raise CatalogError(
            f"{stored.source} lists {len(unknown)} item(s) that the catalog at {catalog.root} does not hold "
            f"(first: {unknown[0]!r}); the catalog changed since the index was built; {REBUILD_HINT}"
        )
    catalog_rows = np.array([position[item_id] for item_id in item_ids], dtype=np.int64)
    return lambda row: catalog.open_image(int(catalog_rows[row]))
