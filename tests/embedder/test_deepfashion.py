"""The DeepFashion reader on generated catalogs in the real layout: subsets, labels, titles, images, errors."""
from __future__ import annotations

import re
import shutil

import numpy as np
import pytest
from PIL import Image

from embedder.catalogs.base import CatalogError, CatalogImageError
from embedder.catalogs.deepfashion import (
    ATTR_CLOTH,
    ATTR_IMG,
    BBOX,
    CATEGORY_CLOTH,
    CATEGORY_IMG,
    PARTITION,
    DeepFashionCatalog,
    ItemNames,
    clamp_box,
)
from embedder.catalogs.sample_deepfashion import write_sample_catalog
from tests.embedder.conftest import SAMPLE_PER_CATEGORY, rewrite_rows

ALL_CATEGORIES = ["Blouse", "Button-Down", "Hoodie", "Jeans", "Tank", "Tee", "Skirt", "Coat", "Dress"]
URL_SAFE = re.compile(r"^[A-Za-z0-9_.-]+$")


def category_of(item) -> str:
    """The category name at the end of a sample item's folder: img/Red_Striped_Tee/... -> Tee."""
    return item.path.split("/")[-2].rsplit("_", 1)[-1]


def test_all_subset_reads_every_image_with_file_order_labels(sample_catalog_root):
    catalog = DeepFashionCatalog(sample_catalog_root, "all")
    assert catalog.kind == "deepfashion" and catalog.default_image_size == 224 and catalog.has_titles
    assert catalog.class_names == ALL_CATEGORIES
    assert len(catalog) == len(ALL_CATEGORIES) * SAMPLE_PER_CATEGORY
    for item in catalog.items:
        assert catalog.class_names[item.label] == category_of(item)
    listed = (sample_catalog_root / CATEGORY_IMG).read_text().split()[3::2]
    assert [item.path for item in catalog.items] == listed


@pytest.mark.parametrize(
    ("subset", "names"),
    [
        ("upper", ["Blouse", "Button-Down", "Hoodie", "Tank", "Tee"]),
        ("lower", ["Jeans", "Skirt"]),
        ("full", ["Coat", "Dress"]),
    ],
)
def test_subset_keeps_its_categories_and_remaps_labels(sample_catalog_root, subset, names):
    catalog = DeepFashionCatalog(sample_catalog_root, subset)
    assert catalog.class_names == names
    assert len(catalog) == len(names) * SAMPLE_PER_CATEGORY
    assert sorted({item.label for item in catalog.items}) == list(range(len(names)))
    assert all(catalog.class_names[item.label] == category_of(item) for item in catalog.items)


def test_category_without_images_is_still_a_class(sample_catalog_copy):
    rewrite_rows(sample_catalog_copy / CATEGORY_CLOTH, lambda rows: [*rows, "Jersey                       1"])
    catalog = DeepFashionCatalog(sample_catalog_copy, "upper")
    assert catalog.class_names == ["Blouse", "Button-Down", "Hoodie", "Tank", "Tee", "Jersey"]
    assert {item.label for item in catalog.items} == {0, 1, 2, 3, 4}


def test_titles_ids_splits_and_boxes_come_from_the_files(sample_catalog_root):
    catalog = DeepFashionCatalog(sample_catalog_root, "all")
    ids = [item.item_id for item in catalog.items]
    assert len(set(ids)) == len(ids) and all(URL_SAFE.match(item_id) for item_id in ids)
    splits = dict(line.split() for line in (sample_catalog_root / PARTITION).read_text().splitlines()[2:])
    boxes = {row[0]: tuple(map(int, row[1:])) for row in map(str.split, (sample_catalog_root / BBOX).read_text().splitlines()[2:])}
    for item in catalog.items:
        folder = item.path.split("/")[1]
        assert item.title == folder.replace("_", " ")
        assert item.item_id == f"{folder}--{item.path.rsplit('/', 1)[1][:-4]}"
        assert item.split == splits[item.path] and item.bbox == boxes[item.path]
    assert {item.split for item in catalog.items} == {"train", "val", "test"}


def test_files_listing_images_in_another_order_give_the_same_items(sample_catalog_root, sample_catalog_copy):
    expected = DeepFashionCatalog(sample_catalog_root, "upper").items
    rewrite_rows(sample_catalog_copy / BBOX, lambda rows: rows[::-1])
    rewrite_rows(sample_catalog_copy / PARTITION, lambda rows: rows[1::2] + rows[::2])
    assert DeepFashionCatalog(sample_catalog_copy, "upper").items == expected


def test_item_names_from_real_style_image_names():
    names = ItemNames()
    assert names.describe("img/Sheer_Pleated-Front_Blouse/img_00000001.jpg") == (
        "Sheer_Pleated-Front_Blouse--img_00000001", "Sheer Pleated-Front Blouse")
    odd_id, odd_title = names.describe("img/Lace & Mesh_Top!/img_00000002.jpg")
    assert odd_id == "Lace___Mesh_Top_--img_00000002" and odd_title == "Lace & Mesh Top!"
    # Sanitising makes these two alike; the second gets a stable suffix instead of a clash.
    twin_id, _ = names.describe("img/Lace_&_Mesh_Top?/img_00000002.jpg")
    assert twin_id != odd_id and twin_id.startswith(odd_id + "-") and URL_SAFE.match(twin_id)
    assert names.describe("img/img_00000009.jpg") == ("img_00000009", "img 00000009")


def test_open_image_crops_to_the_box(sample_catalog_root):
    catalog = DeepFashionCatalog(sample_catalog_root, "all")
    for index in (0, len(catalog) // 2, len(catalog) - 1):
        item = catalog.items[index]
        image = catalog.open_image(index)
        x1, y1, x2, y2 = item.bbox
        assert image.mode == "RGB" and image.size == (x2 - x1, y2 - y1)
        with Image.open(sample_catalog_root / item.path) as whole:
            expected = whole.convert("RGB").crop(item.bbox)
        assert np.array_equal(np.asarray(image), np.asarray(expected))


@pytest.mark.parametrize("name", ["../../etc/passwd", "img/../../secret.jpg", "/etc/passwd", "img\\..\\x.jpg"])
def test_image_names_that_leave_the_catalog_root_are_refused_naming_the_line(sample_catalog_copy, name):
    def replace_first(rows):
        first = rows[0].split()
        return [f"{name}  {first[-1]}", *rows[1:]]

    rewrite_rows(sample_catalog_copy / CATEGORY_IMG, replace_first)
    with pytest.raises(CatalogError, match=rf"{CATEGORY_IMG}, line 3: image name .* must be a path inside the catalog"):
        DeepFashionCatalog(sample_catalog_copy, "all")


def test_clamp_box():
    assert clamp_box((10, 20, 90, 80), 100, 100) == (10, 20, 90, 80)
    assert clamp_box((-5, -7, 150, 80), 100, 90) == (0, 0, 100, 80)
    assert clamp_box((50, 50, 40, 60), 100, 100) is None  # x2 before x1
    assert clamp_box((120, 10, 180, 50), 100, 100) is None  # wholly outside
    assert clamp_box((10, 10, 10, 50), 100, 100) is None  # no width
    assert clamp_box(None, 100, 100) is None


def test_boxes_out_of_bounds_are_clamped_and_degenerate_ones_ignored(sample_catalog_copy):
    names = [line.split()[0] for line in (sample_catalog_copy / BBOX).read_text().splitlines()[2:]]
    rewrite_rows(sample_catalog_copy / BBOX, lambda rows: [
        f"{names[0]} -20 -30 5000 40", f"{names[1]} 300 300 400 400", *rows[2:]])
    catalog = DeepFashionCatalog(sample_catalog_copy, "all")
    with Image.open(sample_catalog_copy / names[0]) as first, Image.open(sample_catalog_copy / names[1]) as second:
        sizes = first.size, second.size
    assert catalog.open_image(0).size == (sizes[0][0], 40)
    assert catalog.open_image(1).size == sizes[1]


def test_missing_truncated_and_non_images_raise_catalog_image_error(tmp_path):
    root = write_sample_catalog(tmp_path / "damaged", images_per_category=2, seed=3, truncated=2, missing=1)
    catalog = DeepFashionCatalog(root, "all")
    (root / catalog.items[0].path).write_text("not a picture")
    failures = {}
    for index, item in enumerate(catalog.items):
        try:
            catalog.open_image(index)
        except CatalogImageError as error:
            failures[index] = str(error)
    absent = [i for i, item in enumerate(catalog.items) if not (root / item.path).exists()]
    cut = [i for i, item in enumerate(catalog.items)
           if i and (root / item.path).exists() and not (root / item.path).read_bytes().endswith(b"\xff\xd9")]
    assert len(absent) == 1 and len(cut) == 2 and 0 not in absent + cut
    assert sorted(failures) == sorted([0, *absent, *cut])
    assert "missing" in failures[absent[0]] and str(root / catalog.items[absent[0]].path) in failures[absent[0]]
    assert all("truncated" in failures[i] for i in cut)
    assert "not an image" in failures[0]


def test_images_under_img_folder_of_the_official_download(sample_catalog_copy):
    (sample_catalog_copy / "Img").mkdir()
    shutil.move(sample_catalog_copy / "img", sample_catalog_copy / "Img" / "img")
    catalog = DeepFashionCatalog(sample_catalog_copy, "lower")
    assert catalog.items[0].path.startswith("Img/img/") and catalog.items[0].item_id.startswith(("Indigo", "Light", "Black", "Grey"))
    assert catalog.open_image(0).mode == "RGB"


@pytest.mark.parametrize("file_name", [BBOX, PARTITION])
def test_image_missing_from_bbox_or_partition_names_the_file(sample_catalog_copy, file_name):
    rewrite_rows(sample_catalog_copy / file_name, lambda rows: rows[1:])
    with pytest.raises(CatalogError) as caught:
        DeepFashionCatalog(sample_catalog_copy, "all")
    message = str(caught.value)
    assert file_name.split("/")[1] in message and "has no row for img/" in message and "line 3" in message


@pytest.mark.parametrize(
    ("file_name", "change", "expected"),
    [
        (CATEGORY_IMG, lambda rows: [rows[0].rsplit(None, 1)[0] + " 10", *rows[1:]], r"list_category_img\.txt, line 3: category_label 10 is not a row"),
        (CATEGORY_IMG, lambda rows: [*rows, rows[0]], r"list_category_img\.txt, line \d+: .* listed a second time"),
        (PARTITION, lambda rows: [rows[0].rsplit(None, 1)[0] + " training", *rows[1:]], r"list_eval_partition\.txt, line 3: evaluation_status should be one of train, val, test"),
        (CATEGORY_CLOTH, lambda rows: [*rows[:2], "Hoodie 4", *rows[3:]], r"list_category_cloth\.txt, line 5: category_type should be 1"),
        (BBOX, lambda rows: [rows[0] + " 7", *rows[1:]], r"list_bbox\.txt, line 3: expected 5 columns"),
    ],
)
def test_bad_rows_name_file_and_line(sample_catalog_copy, file_name, change, expected):
    rewrite_rows(sample_catalog_copy / file_name, change)
    with pytest.raises(CatalogError, match=expected):
        DeepFashionCatalog(sample_catalog_copy, "all")


def test_missing_annotation_file_and_root(sample_catalog_copy, tmp_path):
    (sample_catalog_copy / PARTITION).unlink()
    with pytest.raises(CatalogError, match=r"list_eval_partition\.txt: annotation file is missing"):
        DeepFashionCatalog(sample_catalog_copy, "all")
    with pytest.raises(CatalogError, match="is not a directory"):
        DeepFashionCatalog(tmp_path / "nowhere", "all")


def test_attributes_line_up_with_items(sample_catalog_root):
    catalog = DeepFashionCatalog(sample_catalog_root, "upper")
    names, types, values = catalog.read_attributes()
    assert names[:3] == ["striped", "polka dot", "plaid"] and "long sleeve" in names
    assert types.dtype == np.int8 and types.tolist() == [1, 1, 1, 2, 2, 3, 4, 4, 4, 4, 4, 5]
    assert values.dtype == np.int8 and values.shape == (len(catalog), len(names))
    assert set(np.unique(values)) <= {-1, 0, 1}
    for item, row in zip(catalog.items, values):
        assert (row[names.index("striped")] == 1) == ("Striped" in item.title)
        assert (row[names.index("polka dot")] == 1) == ("Polka Dot" in item.title)
        assert (row[names.index("sleeveless")] == 1) == item.title.endswith("Tank")
        assert row[names.index("cotton")] == (1 if item.title.endswith(("Tee", "Hoodie")) else 0)


def test_attributes_absent_or_half_present(sample_catalog_copy):
    (sample_catalog_copy / ATTR_IMG).unlink()
    with pytest.raises(CatalogError, match=r"list_attr_img\.txt is missing while .*list_attr_cloth\.txt is there"):
        DeepFashionCatalog(sample_catalog_copy, "all").read_attributes()
    (sample_catalog_copy / ATTR_CLOTH).unlink()
    assert DeepFashionCatalog(sample_catalog_copy, "all").read_attributes() is None
