"""The sample-catalog generator: the real DeepFashion layout, deterministic, with distinct drawn categories."""
from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image

from embedder.catalogs.deepfashion import ATTR_CLOTH, ATTR_IMG, BBOX, CATEGORY_CLOTH, CATEGORY_IMG, PARTITION
from embedder.catalogs.sample_deepfashion import COLOURS, GARMENTS, write_sample_catalog
from embedder.catalogs.sample_drawing import SLEEVE_WORDS

FILES = (CATEGORY_CLOTH, CATEGORY_IMG, BBOX, PARTITION, ATTR_CLOTH, ATTR_IMG)


def rows(root, name):
    lines = (root / name).read_text().splitlines()
    assert int(lines[0]) == len(lines) - 2, f"{name}: the count line disagrees with the rows"
    return [line.split() for line in lines[2:]]


def all_files(root):
    return {path.relative_to(root).as_posix(): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


def test_writes_the_real_layout(sample_catalog_root):
    categories = rows(sample_catalog_root, CATEGORY_CLOTH)
    types = [int(row[-1]) for row in categories]
    assert types.count(1) >= 4 and types.count(2) >= 1 and types.count(3) >= 1
    listed = rows(sample_catalog_root, CATEGORY_IMG)
    names = [row[0] for row in listed]
    assert len(names) == len(set(names)) == len(categories) * 6
    for file_name in (BBOX, PARTITION, ATTR_IMG):
        assert [row[0] for row in rows(sample_catalog_root, file_name)] == names
    assert {row[1] for row in rows(sample_catalog_root, PARTITION)} == {"train", "val", "test"}
    assert len(rows(sample_catalog_root, ATTR_CLOTH)) == len(rows(sample_catalog_root, ATTR_IMG)[0]) - 1
    for name in names:
        assert re.fullmatch(r"img/[A-Za-z_-]+/img_\d{8}\.jpg", name)
        assert (sample_catalog_root / name).read_bytes()[:2] == b"\xff\xd8"  # a real JPEG


def test_titles_say_what_is_drawn(sample_catalog_root):
    category_names = [row[0] for row in rows(sample_catalog_root, CATEGORY_CLOTH)]
    colours = "|".join(colour.replace(" ", "_") for colour in COLOURS)
    for name, label in rows(sample_catalog_root, CATEGORY_IMG):
        folder = name.split("/")[1]
        match = re.fullmatch(
            rf"({colours})_(?:(Striped|Polka_Dot|Plaid)_)?(?:(Long-Sleeve|Short-Sleeve|Sleeveless)_)?([A-Za-z-]+)", folder
        )
        assert match, folder
        garment = GARMENTS[int(label) - 1]
        assert match.group(4) == category_names[int(label) - 1] == garment.name
        assert (match.group(3) or "") == SLEEVE_WORDS[garment.sleeves] or match.group(3) in {
            SLEEVE_WORDS[variant.sleeves] for variant in garment.variants}


def test_boxes_lie_inside_varied_images_and_hold_the_garment(sample_catalog_root):
    sizes = set()
    for name, *box in rows(sample_catalog_root, BBOX):
        x1, y1, x2, y2 = map(int, box)
        with Image.open(sample_catalog_root / name) as image:
            width, height = image.size
            pixels = np.asarray(image.convert("L"), dtype=np.float32)
        sizes.add((width, height))
        assert 120 <= width <= 200 and 120 <= height <= 200
        assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height
        # Outside the box lies a plain backdrop; the garment inside is not plain.
        outside = np.ones_like(pixels, dtype=bool)
        outside[y1:y2, x1:x2] = False
        assert pixels[outside].std() < pixels[y1:y2, x1:x2].std()
    assert len(sizes) > 10


def test_categories_have_their_own_shapes(sample_catalog_root):
    aspects = {}
    for (name, label), (_, *box) in zip(rows(sample_catalog_root, CATEGORY_IMG), rows(sample_catalog_root, BBOX)):
        x1, y1, x2, y2 = map(int, box)
        aspects.setdefault(GARMENTS[int(label) - 1].name, []).append((y2 - y1) / (x2 - x1))
    mean = {name: np.mean(values) for name, values in aspects.items()}
    # Long coats and dresses stand tall; tees and skirts are about as wide as they are high.
    assert min(mean["Coat"], mean["Dress"], mean["Jeans"]) > 1.35
    assert max(mean["Tee"], mean["Skirt"], mean["Blouse"]) < 1.2


def test_same_seed_same_bytes_other_seed_other_catalog(tmp_path):
    first = all_files(write_sample_catalog(tmp_path / "a", images_per_category=2, seed=5))
    again = all_files(write_sample_catalog(tmp_path / "b", images_per_category=2, seed=5))
    other = all_files(write_sample_catalog(tmp_path / "c", images_per_category=2, seed=6))
    assert first == again
    assert first[BBOX] != other[BBOX]
    assert set(first) >= set(FILES)


def test_truncated_and_missing_images(tmp_path):
    root = write_sample_catalog(tmp_path / "damaged", images_per_category=3, seed=1, truncated=2, missing=3)
    names = [row[0] for row in rows(root, CATEGORY_IMG)]
    absent = [name for name in names if not (root / name).exists()]
    cut = [name for name in names if (root / name).exists() and not (root / name).read_bytes().endswith(b"\xff\xd9")]
    assert len(absent) == 3 and len(cut) == 2
    with Image.open(root / cut[0]) as image, pytest.raises(OSError, match="truncated"):
        image.load()


def test_refuses_impossible_requests(tmp_path):
    with pytest.raises(ValueError, match="at least 1"):
        write_sample_catalog(tmp_path / "none", images_per_category=0)
    with pytest.raises(ValueError, match="cannot damage"):
        write_sample_catalog(tmp_path / "all", images_per_category=1, truncated=9, missing=1)


def test_sleeve_length_is_drawn_and_named(tmp_path):
    """Tees come with short and long sleeves; the title and the attribute row say which, and so does the outline."""
    root = write_sample_catalog(tmp_path / "tees", images_per_category=30, seed=2)
    names = [" ".join(row[:-1]) for row in rows(root, ATTR_CLOTH)]
    tees = [row for row in rows(root, ATTR_IMG) if row[0].split("/")[1].endswith("_Tee")]
    titles = {row[0].split("/")[1] for row in tees}
    assert any("_Long-Sleeve_" in title for title in titles) and any("_Short-Sleeve_" in title for title in titles)
    for row in tees:
        values = dict(zip(names, map(int, row[1:])))
        long = "_Long-Sleeve_" in row[0]
        assert (values["long sleeve"], values["short sleeve"], values["sleeveless"]) == ((1, -1, -1) if long else (-1, 1, -1))
