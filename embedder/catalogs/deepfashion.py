"""The DeepFashion Category & Attribute Prediction benchmark, read from its own annotation files.

Layout under the root (image names in the files are relative to the root, or to root/Img when
the images were unpacked there as in the official download)::

    Anno/list_category_cloth.txt   category_name category_type (1 upper-, 2 lower-, 3 full-body)
    Anno/list_category_img.txt     image_name category_label (1-based row of list_category_cloth)
    Anno/list_bbox.txt             image_name x_1 y_1 x_2 y_2
    Eval/list_eval_partition.txt   image_name evaluation_status (train, val, test)
    Anno/list_attr_cloth.txt       attribute_name attribute_type (optional)
    Anno/list_attr_img.txt         image_name then 1, -1 or 0 per attribute (optional)
    img/<Product_Title>/img_00000001.jpg
"""
from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import NamedTuple

import numpy as np
from PIL import Image, UnidentifiedImageError

from config import SPLITS
from embedder.catalogs.annotations import Annotation, paused_gc, read_annotation, read_sign_matrix
from embedder.catalogs.base import Catalog, CatalogError, CatalogImageError, CatalogItem, ItemAttributes

log = logging.getLogger(__name__)

CATEGORY_CLOTH = "Anno/list_category_cloth.txt"
CATEGORY_IMG = "Anno/list_category_img.txt"
BBOX = "Anno/list_bbox.txt"
PARTITION = "Eval/list_eval_partition.txt"
ATTR_CLOTH = "Anno/list_attr_cloth.txt"
ATTR_IMG = "Anno/list_attr_img.txt"

CATEGORY_TYPES = {1: "upper-body", 2: "lower-body", 3: "full-body"}
SUBSET_TYPES = {"upper": (1,), "lower": (2,), "full": (3,), "all": (1, 2, 3)}
ATTRIBUTE_TYPES = {1: "texture", 2: "fabric", 3: "shape", 4: "part", 5: "style"}

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


class Attributes(NamedTuple):
    """DeepFashion's attribute annotations for the items of a catalog, in item order."""

    names: list[str]  # "a-line", "abstract print", ...
    types: np.ndarray  # int8 per attribute: 1 texture, 2 fabric, 3 shape, 4 part, 5 style
    values: np.ndarray  # int8 N x A: 1 the item has it, -1 it has not, 0 unknown


class DeepFashionCatalog(Catalog):
    """The images of one DeepFashion subset, labelled 0..C-1 over the subset's categories in file order."""

    kind = "deepfashion"
    default_image_size = 224
    has_titles = True

    def __init__(self, root: Path, subset: str = "upper") -> None:
        root = Path(root)
        if not root.is_dir():
            raise CatalogError(f"DeepFashion root {root} is not a directory; set catalog.root to the benchmark's folder")
        if subset not in SUBSET_TYPES:
            raise CatalogError(f"DeepFashion subset {subset!r} is not one of {', '.join(SUBSET_TYPES)}")
        categories = read_categories(root)
        types = SUBSET_TYPES[subset]
        chosen = [row for row, (_, category_type) in enumerate(categories) if category_type in types]
        labels = {row: label for label, row in enumerate(chosen)}
        images = image_directory(root)
        self.subset = subset
        self.image_names: list[str] = []
        with paused_gc():
            items = self._read_items(root, images, labels, len(categories))
        super().__init__(root, items, [categories[row][0] for row in chosen])
        log.info("DeepFashion %s subset at %s: %d images in %d categories", subset, root, len(items), len(chosen))

    def _read_items(self, root: Path, images: Path, labels: dict[int, int], categories: int) -> list[CatalogItem]:
        listed = read_annotation(root / CATEGORY_IMG, 2, (1,))
        names, category_labels = listed.columns
        _check_listed(listed, categories)
        boxes = _aligned(read_annotation(root / BBOX, 5, (1, 2, 3, 4)), names)
        splits = _aligned(_check_splits(read_annotation(root / PARTITION, 2)), names)
        prefix = images.relative_to(root).as_posix()
        prefix = "" if prefix == "." else prefix + "/"
        describe = ItemNames().describe
        items = []
        for row, (name, category) in enumerate(zip(names, category_labels)):
            label = labels.get(category - 1)
            if label is None:
                continue
            box, split = boxes[row], splits[row]
            if box is None or split is None:
                raise CatalogError(
                    f"{root / (BBOX if box is None else PARTITION)} has no row for {name} (listed at "
                    f"{listed.where(row)}); the annotation files disagree: download them again"
                )
            item_id, title = describe(name)
            items.append(CatalogItem(item_id, prefix + name, label, split, title, box))
            self.image_names.append(name)
        return items

    def open_image(self, index: int) -> Image.Image:
        """The item's photo as RGB, cropped to its bounding box; CatalogImageError if unreadable."""
        item = self.items[index]
        return crop_to_box(load_rgb(self.root / item.path), item.bbox)

    def read_attributes(self) -> Attributes | None:
        """The attribute names, types and N x A values of the items; None without the attribute files.

        Not cached: the real list_attr_img.txt is about 600 MB and takes seconds to read.
        """
        cloth, img = self.root / ATTR_CLOTH, self.root / ATTR_IMG
        if not cloth.is_file() and not img.is_file():
            return None
        for present, absent in ((cloth, img), (img, cloth)):
            if present.is_file() and not absent.is_file():
                raise CatalogError(f"{absent} is missing while {present} is there; both are needed for attributes")
        table = read_annotation(cloth, 2, (1,), spaced_first=True)
        for row, (_, attribute_type) in enumerate(table.rows):
            if attribute_type not in ATTRIBUTE_TYPES:
                raise CatalogError(f"{table.where(row)}: attribute_type should be 1 to 5, found {attribute_type}")
        names = [" ".join(name.split()) for name, _ in table.rows]
        values = read_sign_matrix(img, len(names), self.image_names)
        return Attributes(names, np.array([t for _, t in table.rows], dtype=np.int8), values)

    def item_attributes(self) -> ItemAttributes | None:
        """read_attributes with each attribute's type named (texture, fabric, shape, part, style)."""
        attributes = self.read_attributes()
        if attributes is None:
            return None
        kinds = [ATTRIBUTE_TYPES[int(code)] for code in attributes.types]
        return ItemAttributes(attributes.names, kinds, attributes.values)


class ItemNames:
    """Item ids and titles from image names, ids made unique in the order they are asked for."""

    def __init__(self) -> None:
        self.ids: set[str] = set()
        self.folders: dict[str, tuple[str, str]] = {}

    def describe(self, image_name: str) -> tuple[str, str]:
        """'img/Sheer_Pleated-Front_Blouse/img_00000001.jpg' -> ('Sheer_Pleated-Front_Blouse--img_00000001', 'Sheer Pleated-Front Blouse')."""
        folder, _, file_name = image_name.rpartition("/")
        if folder not in self.folders:
            parts = PurePosixPath(folder).parts
            parts = parts[1:] if parts[:1] == ("img",) else parts
            title = " ".join(parts[-1].replace("_", " ").split()) if parts else ""
            self.folders[folder] = (_UNSAFE.sub("_", "--".join(parts)), title)
        prefix, title = self.folders[folder]
        stem = _UNSAFE.sub("_", file_name.rpartition(".")[0] or file_name)
        item_id = f"{prefix}--{stem}" if prefix else stem
        if item_id in self.ids:
            # Sanitising can make two names alike; a hash of the original keeps them apart, stably.
            item_id = f"{item_id}-{hashlib.sha1(image_name.encode()).hexdigest()[:10]}"
        self.ids.add(item_id)
        if not title:
            title = " ".join(stem.replace("_", " ").split())
        return item_id, title


def read_categories(root: Path) -> list[tuple[str, int]]:
    """(category_name, category_type) in file order from Anno/list_category_cloth.txt."""
    table = read_annotation(Path(root) / CATEGORY_CLOTH, 2, (1,), spaced_first=True)
    for row, (_, category_type) in enumerate(table.rows):
        if category_type not in CATEGORY_TYPES:
            raise CatalogError(
                f"{table.where(row)}: category_type should be 1 (upper-body), 2 (lower-body) or 3 (full-body), "
                f"found {category_type}"
            )
    return [(" ".join(name.split()), category_type) for name, category_type in table.rows]


def image_directory(root: Path) -> Path:
    """Where image names are relative to: the root, or root/Img as the official download unpacks."""
    if not (root / "img").is_dir() and (root / "Img" / "img").is_dir():
        return root / "Img"
    return root


def load_rgb(path: Path) -> Image.Image:
    """The fully decoded image at ``path`` as RGB; CatalogImageError saying why it cannot be read."""
    try:
        with Image.open(path) as image:
            # load() decodes every byte now, so a truncated JPEG fails here and not in a worker later.
            image.load()
            return image.convert("RGB")
    except FileNotFoundError:
        raise CatalogImageError(f"{path}: the image file is missing") from None
    except UnidentifiedImageError:
        raise CatalogImageError(f"{path}: not an image file that PIL can read") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise CatalogImageError(f"{path}: damaged or truncated image ({error})") from None


def clamp_box(box: tuple[int, int, int, int] | None, width: int, height: int) -> tuple[int, int, int, int] | None:
    """The box clamped to a width x height image; None when nothing of it is left (use the whole image)."""
    if box is None:
        return None
    x1, y1, x2, y2 = box
    x1, x2 = max(0, min(x1, width)), max(0, min(x2, width))
    y1, y2 = max(0, min(y1, height)), max(0, min(y2, height))
    if x2 <= x1 or y2 <= y1:
        return None
    return x1, y1, x2, y2


def crop_to_box(image: Image.Image, box: tuple[int, int, int, int] | None) -> Image.Image:
    """The part of the image inside the clamped box, or the whole image when the box is degenerate."""
    clamped = clamp_box(box, image.width, image.height)
    if clamped is None or clamped == (0, 0, image.width, image.height):
        return image
    return image.crop(clamped)


def _check_listed(listed: Annotation, categories: int) -> None:
    """Every category_label a row of list_category_cloth.txt, every image listed once."""
    names, labels = listed.columns
    if labels and (min(labels) < 1 or max(labels) > categories):
        row = next(row for row, label in enumerate(labels) if not 1 <= label <= categories)
        raise CatalogError(
            f"{listed.where(row)}: category_label {labels[row]} is not a row of {CATEGORY_CLOTH} (1..{categories})"
        )
    for row, name in enumerate(names):
        # Images are opened as root / name: a name must not lead out of the catalog's folder.
        parts = PurePosixPath(name).parts
        if name.startswith("/") or "\\" in name or ".." in parts:
            raise CatalogError(f"{listed.where(row)}: image name {name[:80]!r} must be a path inside the catalog "
                               "(relative, without '..' or backslashes)")
    _check_unique(listed)


def _check_splits(partition: Annotation) -> Annotation:
    statuses = partition.columns[1]
    if not set(statuses) <= set(SPLITS):
        row = next(row for row, status in enumerate(statuses) if status not in SPLITS)
        raise CatalogError(
            f"{partition.where(row)}: evaluation_status should be one of {', '.join(SPLITS)}, found {statuses[row]!r}"
        )
    return partition


def _check_unique(table: Annotation) -> None:
    names = table.columns[0]
    if len(set(names)) != len(names):
        first: dict[str, int] = {}
        for row, name in enumerate(names):
            if name in first:
                raise CatalogError(f"{table.where(row)}: {name} is listed a second time (first at line "
                                   f"{table.line_numbers[first[name]]})")
            first[name] = row


def _aligned(table: Annotation, names: Sequence[str]) -> Sequence:
    """The rest of the table's row for each image name (one value or a tuple of several), None where absent."""
    first, *rest = table.columns
    values = rest[0] if len(rest) == 1 else list(zip(*rest))
    # The real files list the same images in the same order: then no lookup is needed.
    if first == tuple(names):
        return values
    _check_unique(table)
    found = dict(zip(first, values))
    return [found.get(name) for name in names]
