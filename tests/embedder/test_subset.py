"""catalog.limit: a slice of a catalog spread evenly over it, read through the base catalog."""
from __future__ import annotations

import numpy as np
import pytest

from config import ConfigError, load_config
from embedder.catalogs import open_catalog
from embedder.catalogs.subset import CatalogSlice, limit_catalog
from tests.conftest import ColourCatalog
from tests.embedder.conftest import write_fashion_mnist


def test_a_slice_spreads_over_the_catalog_and_reads_through_it():
    base = ColourCatalog(count=24)
    part = limit_catalog(base, 6)
    assert isinstance(part, CatalogSlice) and len(part) == 6
    assert part.rows.tolist() == [0, 5, 9, 14, 18, 23]
    assert part.items == [base.items[row] for row in part.rows]
    assert np.array_equal(np.asarray(part.open_image(1)), np.asarray(base.open_image(5)))
    assert {item.split for item in part.items} == {item.split for item in base.items}
    assert (part.kind, part.class_names, part.default_image_size) == (base.kind, base.class_names, 32)
    assert part.options == {"limit": 6}  # recorded in embeddings.h5: a slice's file is never taken for the whole


def test_no_limit_or_a_large_one_is_the_catalog_itself():
    base = ColourCatalog(count=5)
    assert limit_catalog(base, 0) is base and limit_catalog(base, 5) is base and limit_catalog(base, 50) is base


def test_open_catalog_applies_the_configured_limit(tmp_path):
    root = write_fashion_mnist(tmp_path / "fm", train=12, test=5)
    config = load_config(env={}, overrides={"catalog.root": str(root), "catalog.limit": "4"})
    catalog = open_catalog(config.catalog, tmp_path / "downloads")
    assert [item.item_id for item in catalog.items] == ["train-00000", "train-00005", "train-00011", "test-00004"]
    with pytest.raises(ConfigError, match="catalog.limit: -1 must be an integer"):
        load_config(env={}, overrides={"catalog.limit": "-1"})
