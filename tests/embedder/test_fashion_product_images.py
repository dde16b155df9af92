"""The Fashion Product Images reader and its sample generator: names with commas, bad rows, splits, subsets."""
from __future__ import annotations

import numpy as np
import pytest

from config import CatalogConfig
from embedder.catalogs import open_catalog
from embedder.catalogs.base import CatalogError
from embedder.catalogs.fashion_product_images import COLUMNS, STYLES, FashionProductImagesCatalog
from embedder.catalogs.sample_products import ARTICLE_TYPES, write_sample_products

HEADER = ",".join(COLUMNS)


@pytest.fixture(scope="module")
def products_root(tmp_path_factory):
    return write_sample_products(tmp_path_factory.mktemp("fpi") / "catalog", 4, seed=1, malformed=2, missing=1,
                                 comma_names=2)


def write_styles(root, *rows, images=()):
    (root / "images").mkdir(parents=True, exist_ok=True)
    for product_id in images:
        (root / "images" / f"{product_id}.jpg").write_bytes(b"")
    (root / STYLES).write_text("\n".join([HEADER, *rows]) + "\n")
    return root


def test_reads_products_labels_titles_and_reports_bad_rows(products_root):
    catalog = FashionProductImagesCatalog(products_root)
    assert catalog.kind == "fashion-product-images" and catalog.has_titles
    assert catalog.class_names == sorted(article for article, _, _ in ARTICLE_TYPES.values())
    assert len(catalog) == 4 * len(ARTICLE_TYPES) - 1  # one image is missing
    rejected = catalog.rejected
    assert len(rejected) == 3 and all(message.startswith(f"{products_root / STYLES}, line ") for message in rejected)
    assert any("id should be a whole number" in m for m in rejected)
    assert any("found 3" in m for m in rejected) and any("is missing" in m for m in rejected)
    commas = [item.title for item in catalog.items if "," in item.title]
    assert len(commas) == 2 and all(title.endswith(", Regular Fit") for title in commas)
    for item in catalog.items:
        assert item.path == f"images/{item.item_id}.jpg" and item.split in ("train", "val", "test")
        assert catalog.class_names[item.label] in {a for a, _, _ in ARTICLE_TYPES.values()}
    image = catalog.open_image(0)
    assert image.mode == "RGB" and image.size == (90, 120)


def test_year_split_and_top20(products_root):
    catalog = open_catalog(CatalogConfig(kind="fashion-product-images", root=products_root, split="year",
                                         article_types="top20"), products_root)
    years = {}
    for line in (products_root / STYLES).read_text().splitlines()[1:]:
        fields = line.split(",")
        if len(fields) >= 10 and fields[0].isdigit():
            years[fields[0]] = int(fields[7])
    for item in catalog.items:
        assert item.split == ("train" if years[item.item_id] % 2 == 0 else "test")
    assert catalog.options == {"split": "year", "article_types": "top20"}


def test_top20_keeps_the_most_frequent_article_types(tmp_path):
    rows, images = [], []
    for number in range(22):  # type t00 has 22 products, t01 21, ... t21 one
        for copy in range(22 - number):
            product_id = number * 100 + copy
            rows.append(f"{product_id},Men,Apparel,Topwear,t{number:02d},Red,Summer,2012,Casual,Shirt {product_id}")
            images.append(product_id)
    root = write_styles(tmp_path, *rows, images=images)
    assert len(FashionProductImagesCatalog(root).class_names) == 22
    catalog = FashionProductImagesCatalog(root, article_types="top20")
    assert catalog.class_names == [f"t{number:02d}" for number in range(20)]


def test_malformed_rows_are_skipped_with_file_and_line(tmp_path):
    root = write_styles(
        tmp_path,
        "1,Men,Apparel,Topwear,Shirts,Blue,Summer,2012,Casual,Blue Shirt",
        "2,Men,Apparel,Topwear,Shirts,Blue,Summer,20x2,Casual,Shirt",
        "1,Men,Apparel,Topwear,Shirts,Blue,Summer,2012,Casual,Again",
        "3,Men,Apparel,Topwear,,Blue,Summer,2012,Casual,No type",
        "4,Men,Apparel,Topwear,Shirts,Blue,Summer,,Casual,No year",
        "",
        "5,Women,Apparel,Topwear,Tops,Red,Fall,2013,Casual,\"Red Top, Slim\"",
        images=(1, 2, 3, 4, 5),
    )
    catalog = FashionProductImagesCatalog(root)
    assert [item.item_id for item in catalog.items] == ["1", "4", "5"]
    assert catalog.items[2].title == "Red Top, Slim"
    path = root / STYLES
    assert catalog.rejected == [
        f"{path}, line 3: year should be a number, found '20x2'",
        f"{path}, line 4: id 1 was listed before, at line 2",
        f"{path}, line 5: articleType is empty",
    ]
    by_year = FashionProductImagesCatalog(root, split="year")
    assert f"{path}, line 6: year is empty; catalog.split = year needs it" in by_year.rejected


def test_unreadable_files_are_errors(tmp_path):
    with pytest.raises(CatalogError, match="is not a directory"):
        FashionProductImagesCatalog(tmp_path / "nowhere")
    with pytest.raises(CatalogError, match=r"styles\.csv is missing"):
        FashionProductImagesCatalog(tmp_path)
    (tmp_path / STYLES).write_text("id,name\n1,x\n")
    with pytest.raises(CatalogError, match=r"styles\.csv, line 1: expected the header"):
        FashionProductImagesCatalog(tmp_path)
    (tmp_path / STYLES).write_bytes(HEADER.encode() + b"\n1,\xff\n")
    with pytest.raises(CatalogError, match=r"line 2: not UTF-8"):
        FashionProductImagesCatalog(tmp_path)
    write_styles(tmp_path)
    (tmp_path / "images").rmdir()
    with pytest.raises(CatalogError, match="images is missing"):
        FashionProductImagesCatalog(tmp_path)


def test_attributes_one_per_value(products_root):
    catalog = FashionProductImagesCatalog(products_root)
    names, kinds, values = catalog.item_attributes()
    assert values.shape == (len(catalog), len(names)) and values.dtype == np.int8
    assert "colour: Navy Blue" in names and set(kinds) == {"gender", "colour", "season", "usage"}
    colour_columns = [column for column, kind in enumerate(kinds) if kind == "colour"]
    assert (values[:, colour_columns] == 1).sum(axis=1).tolist() == [1] * len(catalog)
    for item, row in zip(catalog.items, values):
        named = [names[c].removeprefix("colour: ") for c in colour_columns if row[c] == 1]
        assert named[0] in item.title


def test_sample_products_are_deterministic(tmp_path):
    first = write_sample_products(tmp_path / "a", 2, seed=3)
    again = write_sample_products(tmp_path / "b", 2, seed=3)
    assert (first / STYLES).read_text() == (again / STYLES).read_text()
    assert sorted(p.name for p in (first / "images").iterdir()) == sorted(p.name for p in (again / "images").iterdir())
    with pytest.raises(ValueError, match="at least 1"):
        write_sample_products(tmp_path / "c", 0)


@pytest.mark.parametrize("year", ["inf", "1e999", "-inf", "nan"])
def test_a_year_that_is_no_whole_number_skips_its_row_not_the_build(tmp_path, year):
    root = write_styles(
        tmp_path,
        "1,Men,Apparel,Topwear,Shirts,Blue,Summer,2012,Casual,Blue Shirt",
        f"2,Men,Apparel,Topwear,Shirts,Blue,Summer,{year},Casual,Shirt",
        images=(1, 2),
    )
    catalog = FashionProductImagesCatalog(root)
    assert [item.item_id for item in catalog.items] == ["1"]
    assert catalog.rejected == [f"{root / STYLES}, line 3: year should be a number, found {year!r}"]
