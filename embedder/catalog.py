"""What every catalog reader returns: items with labels, splits and titles, and their images."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image


class CatalogError(RuntimeError):
    """A catalog that cannot be read: a missing or malformed file, named in the message."""


class CatalogImageError(RuntimeError):
    """One catalog image that cannot be opened or decoded; the item is skipped and reported."""


@dataclass(frozen=True)
class CatalogItem:
    """One catalog image and what is known about it."""

    item_id: str  # stable and URL-safe: letters, digits, '-', '_', '.'
    path: str  # where the image lies, relative to the catalog root
    label: int  # index into Catalog.class_names
    split: str  # "train", "val" or "test"
    title: str  # product title; "" when the catalog has none
    bbox: tuple[int, int, int, int] | None = None  # x1, y1, x2, y2 in pixels


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

    def open_image(self, index: int) -> Image.Image:
        """The RGB image of item ``index``, cropped as the catalog says; CatalogImageError if unreadable."""
        raise NotImplementedError
