"""Fashion Product Images (Aggarwal, 2019): one product photo per row of styles.csv.

Layout under the root::

    styles.csv       id,gender,masterCategory,subCategory,articleType,baseColour,season,year,usage,productDisplayName
    images/<id>.jpg

The product name is the last column and the real file does not quote it, so a name with commas
gives a line of more than ten fields: the extra fields are joined back into the name. A row that
cannot be used (too few fields, an id or year that is not a number, a repeated id, no articleType,
no image) is skipped; `rejected` lists each one as 'styles.csv, line n: why' for the build report.
"""
from __future__ import annotations

import csv
import hashlib
import logging
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from embedder.catalogs.base import Catalog, CatalogError, CatalogItem, ItemAttributes, read_text_lines
from embedder.catalogs.deepfashion import load_rgb

log = logging.getLogger(__name__)

STYLES = "styles.csv"
IMAGES = "images"
COLUMNS = ("id", "gender", "masterCategory", "subCategory", "articleType", "baseColour", "season", "year", "usage",
           "productDisplayName")
# Columns offered as attributes: (column, the attribute kind written before each value).
ATTRIBUTE_COLUMNS = (("gender", "gender"), ("baseColour", "colour"), ("season", "season"), ("usage", "usage"))
SPLIT_MODES = ("hash", "year")
ARTICLE_TYPE_SUBSETS = ("all", "top20")
TOP_ARTICLE_TYPES = 20
# "hash" split: the share of products (by a hash of the id) in train and val; the rest is test.
HASH_TRAIN, HASH_VAL = 80, 10
LOGGED_REJECTIONS = 10


@dataclass(frozen=True)
class Style:
    """One usable row of styles.csv."""

    product_id: int
    fields: dict[str, str]  # column -> text, the name with its commas restored
    year: int | None
    line: int


class FashionProductImagesCatalog(Catalog):
    """Products labelled by articleType (0..C-1 in name order), split by product id hash or by year."""

    kind = "fashion-product-images"
    default_image_size = 224
    has_titles = True

    def __init__(self, root: Path, split: str = "hash", article_types: str = "all") -> None:
        root = Path(root)
        if not root.is_dir():
            raise CatalogError(f"Fashion Product Images root {root} is not a directory; set catalog.root to the "
                               f"folder that holds {STYLES} and {IMAGES}/")
        if split not in SPLIT_MODES:
            raise CatalogError(f"catalog.split {split!r} is not one of {', '.join(SPLIT_MODES)}")
        if article_types not in ARTICLE_TYPE_SUBSETS:
            raise CatalogError(f"catalog.article_types {article_types!r} is not one of {', '.join(ARTICLE_TYPE_SUBSETS)}")
        self.split_mode, self.article_types = split, article_types
        styles, self._rejected = read_styles(root / STYLES, root / IMAGES, needs_year=split == "year")
        kept_types = _article_types(styles, article_types)
        self.styles = [style for style in styles if style.fields["articleType"] in kept_types]
        class_names = sorted(kept_types)
        labels = {name: label for label, name in enumerate(class_names)}
        items = [
            CatalogItem(str(style.product_id), f"{IMAGES}/{style.product_id}.jpg", labels[style.fields["articleType"]],
                        _split(style, split), style.fields["productDisplayName"])
            for style in self.styles
        ]
        super().__init__(root, items, class_names)
        for message in self._rejected[:LOGGED_REJECTIONS]:
            log.warning("Skipped %s", message)
        if len(self._rejected) > LOGGED_REJECTIONS:
            log.warning("... and %d more rows of %s skipped", len(self._rejected) - LOGGED_REJECTIONS, root / STYLES)
        log.info("Fashion Product Images at %s: %d products in %d articleTypes (%s split), %d rows skipped",
                 root, len(items), len(class_names), split, len(self._rejected))

    @property
    def options(self) -> dict[str, Any]:
        """The split mode and articleType subset: they change the items and their splits."""
        return {"split": self.split_mode, "article_types": self.article_types}

    @property
    def rejected(self) -> list[str]:
        """The rows of styles.csv that were skipped, each 'file, line n: why'."""
        return list(self._rejected)

    def open_image(self, index: int) -> Image.Image:
        """The product photo as RGB; CatalogImageError if unreadable."""
        return load_rgb(self.root / self.items[index].path)

    def item_attributes(self) -> ItemAttributes:
        """gender, baseColour, season and usage as one attribute per value ('colour: Navy Blue'), 1 / -1 / 0 (blank)."""
        names, kinds, columns = [], [], []
        for column, kind in ATTRIBUTE_COLUMNS:
            texts = [style.fields[column] for style in self.styles]
            for value in sorted({text for text in texts if text}):
                names.append(f"{kind}: {value}")
                kinds.append(kind)
                columns.append(np.array([0 if not text else (1 if text == value else -1) for text in texts], np.int8))
        values = np.stack(columns, axis=1) if columns else np.zeros((len(self.styles), 0), np.int8)
        return ItemAttributes(names, kinds, values)


def read_styles(path: Path, image_dir: Path, needs_year: bool = False) -> tuple[list[Style], list[str]]:
    """The usable rows of styles.csv (those with an image in ``image_dir``) and, for each skipped row,
    'file, line n: why'; CatalogError if the file or the folder cannot be read."""
    lines = read_text_lines(path, " is missing; is catalog.root the folder of the Fashion Product Images download?")
    header = next(csv.reader([lines[0]])) if lines else []
    if tuple(name.strip() for name in header) != COLUMNS:
        raise CatalogError(f"{path}, line 1: expected the header {','.join(COLUMNS)}, found {lines[0][:200]!r}"
                           if lines else f"{path}: the file is empty; expected the header {','.join(COLUMNS)}")
    images = _image_names(image_dir)
    styles, rejected, seen = [], [], {}
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        style = _parse_row(line, number)
        problem = style if isinstance(style, str) else _check_row(style, images, seen, needs_year)
        if problem:
            rejected.append(f"{path}, line {number}: {problem}")
            continue
        seen[style.product_id] = number
        styles.append(style)
    return styles, rejected


def _parse_row(line: str, number: int) -> Style | str:
    """The row as a Style, or why it cannot be one."""
    fields = next(csv.reader([line]))
    if len(fields) < len(COLUMNS):
        return f"expected {len(COLUMNS)} comma-separated fields ({','.join(COLUMNS)}), found {len(fields)}"
    named = dict(zip(COLUMNS, (field.strip() for field in fields)))
    # The unquoted name is the only column that can hold commas: whatever is left over belongs to it.
    named["productDisplayName"] = " ".join(",".join(fields[len(COLUMNS) - 1:]).split())
    try:
        product_id = int(named["id"])
    except ValueError:
        return f"id should be a whole number, found {named['id'][:40]!r}"
    year_text = named["year"]
    try:
        year = int(float(year_text)) if year_text else None  # some exports write 2012.0
    except (ValueError, OverflowError):  # OverflowError: "inf" and "1e999" are floats but no whole number
        return f"year should be a number, found {year_text[:40]!r}"
    return Style(product_id, named, year, number)


def _check_row(style: Style, images: set[str], seen: dict[int, int], needs_year: bool) -> str:
    """Why a parsed row cannot be used, or ''."""
    if style.product_id < 0:
        return f"id should not be negative, found {style.product_id}"
    if style.product_id in seen:
        return f"id {style.product_id} was listed before, at line {seen[style.product_id]}"
    if not style.fields["articleType"]:
        return "articleType is empty"
    if needs_year and style.year is None:
        return "year is empty; catalog.split = year needs it"
    if f"{style.product_id}.jpg" not in images:
        return f"the image {IMAGES}/{style.product_id}.jpg is missing"
    return ""


def _image_names(directory: Path) -> set[str]:
    """The file names in images/ (one directory listing: the real catalog has 44,000 files)."""
    try:
        with os.scandir(directory) as entries:
            return {entry.name for entry in entries}
    except FileNotFoundError:
        raise CatalogError(f"{directory} is missing; a Fashion Product Images catalog keeps its photos in "
                           f"{IMAGES}/<id>.jpg") from None


def _article_types(styles: list[Style], subset: str) -> set[str]:
    counts = Counter(style.fields["articleType"] for style in styles)
    if subset == "all":
        return set(counts)
    # Most frequent first; ties by name, so that the subset does not depend on file order.
    ranked = sorted(counts, key=lambda name: (-counts[name], name))
    return set(ranked[:TOP_ARTICLE_TYPES])


def _split(style: Style, mode: str) -> str:
    if mode == "year":
        return "train" if style.year % 2 == 0 else "test"
    bucket = int(hashlib.sha1(str(style.product_id).encode()).hexdigest()[:8], 16) % 100
    return "train" if bucket < HASH_TRAIN else ("val" if bucket < HASH_TRAIN + HASH_VAL else "test")
