"""What every catalog reader returns: items with labels, splits and titles, and their images."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from PIL import Image

from config import LookbookError


class CatalogError(LookbookError, RuntimeError):
    """A catalog that cannot be read: a missing or malformed file, named in the message."""


class CatalogImageError(RuntimeError):
    """One catalog image that cannot be opened or decoded; the item is skipped and reported."""


def read_text_lines(path: Path, missing: str) -> list[str]:
    """The lines of a catalog's text file (UTF-8, a BOM and any line endings allowed).

    CatalogError naming the file when it is absent (with the hint ``missing``), unreadable or not
    UTF-8 (with the line of the first bad byte)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CatalogError(f"{path}{missing}") from None
    except OSError as error:
        raise CatalogError(f"{path}: cannot be read ({error})") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise CatalogError(f"{path}, line {line}: not UTF-8 text ({error.reason})") from None
    # Universal newlines: Windows line endings leave no '\r' behind.
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


@dataclass(frozen=True)
class CatalogItem:
    """One catalog image and what is known about it."""

    item_id: str  # stable and URL-safe: letters, digits, '-', '_', '.'
    path: str  # where the image lies, relative to the catalog root
    label: int  # index into Catalog.class_names
    split: str  # "train", "val" or "test"
    title: str  # product title; "" when the catalog has none
    bbox: tuple[int, int, int, int] | None = None  # x1, y1, x2, y2 in pixels


class ItemAttributes(NamedTuple):
    """Labelled attributes of a catalog's items, in item order (written to embeddings.h5 as `attributes`)."""

    names: list[str]  # "striped", "long sleeve", "colour: navy blue", ...
    kinds: list[str]  # per attribute: "texture", "fabric", "shape", "part", "style", "colour", ...
    values: np.ndarray  # int8 N x A: 1 the item has it, -1 it has not, 0 unknown


class Catalog:
    """A read catalog: its items, class names, and a way to open each item's image."""

    kind: str = ""
    # The image size the embedder uses for this catalog unless configured otherwise.
    default_image_size: int = 224
    # Whether the catalog carries product titles that can serve as captions.
    has_titles: bool = True

    def __init__(self, root: Path, items: Sequence[CatalogItem], class_names: Sequence[str]) -> None:
        self.root = Path(root)
        self.items = list(items)
        self.class_names = list(class_names)

    def __len__(self) -> int:
        return len(self.items)

    @property
    def options(self) -> dict[str, Any]:
        """Reading options that change the items or their splits beyond kind, root and subset (recorded in embeddings.h5)."""
        return {}

    @property
    def rejected(self) -> list[str]:
        """Rows of the catalog's files that were skipped while reading, each 'file, line n: why'."""
        return []

    def item_attributes(self) -> ItemAttributes | None:
        """The items' labelled attributes, or None when the catalog has none."""
        return None

    def open_image(self, index: int) -> Image.Image:
        """The RGB image of item ``index``, cropped as the catalog says; CatalogImageError if unreadable."""
        raise NotImplementedError

    def fingerprints(self) -> list[str]:
        """Per item, what its vector depends on besides the model: the image file's path, size and
        modification time, and the crop box; a changed fingerprint re-embeds the item (a stat per file)."""
        prints = []
        for item in self.items:
            try:
                stat = (self.root / item.path).stat()
                file = f"{stat.st_size}:{stat.st_mtime_ns}"
            except OSError:
                file = "unreadable"
            prints.append(f"{item.path}:{file}:{item.bbox}")
        return prints
