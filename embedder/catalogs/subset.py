"""A part of a catalog: N items spread evenly over it, for trials and benchmarks (catalog.limit)."""
from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

from embedder.catalogs.base import Catalog, ItemAttributes


class CatalogSlice(Catalog):
    """``limit`` items of ``base`` taken at even steps, so every split and class keeps its share."""

    def __init__(self, base: Catalog, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"catalog.limit must be at least 1, got {limit}")
        self.base = base
        self.rows = np.unique(np.linspace(0, len(base) - 1, num=min(limit, len(base))).round().astype(np.int64))
        self.limit = limit
        # The catalog's own kind and defaults: a slice embeds and serves exactly like the whole.
        self.kind = base.kind
        self.default_image_size = base.default_image_size
        self.has_titles = base.has_titles
        super().__init__(base.root, [base.items[row] for row in self.rows], base.class_names)

    @property
    def options(self) -> dict[str, Any]:
        """The base catalog's options and the limit, so embeddings of a slice are never taken for the whole."""
        return {**self.base.options, "limit": self.limit}

    @property
    def rejected(self) -> list[str]:
        """The rows the base catalog rejected while reading its files."""
        return self.base.rejected

    def item_attributes(self) -> ItemAttributes | None:
        """The base catalog's attributes for the items of the slice."""
        attributes = self.base.item_attributes()
        if attributes is None:
            return None
        return attributes._replace(values=attributes.values[self.rows])

    def open_image(self, index: int) -> Image.Image:
        """Item ``index`` of the slice, read by the base catalog."""
        return self.base.open_image(int(self.rows[index]))

    def fingerprints(self) -> list[str]:
        """The base catalog's fingerprints of the items of the slice."""
        prints = self.base.fingerprints()
        return [prints[row] for row in self.rows]


def limit_catalog(catalog: Catalog, limit: int) -> Catalog:
    """``catalog`` itself when ``limit`` is 0 or not below its size, else a CatalogSlice of ``limit`` items."""
    return CatalogSlice(catalog, limit) if 0 < limit < len(catalog) else catalog
