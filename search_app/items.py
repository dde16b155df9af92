"""The catalog items the app can show: their table, looked up by id or category, and their images for the page."""
from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from indexer.embeddings_file import EmbeddingsFile

# Fashion-MNIST items are 28×28: shown at that size they are unreadable smudges.
MIN_IMAGE_SIDE = 160
MAX_IMAGE_SIDE = 640
JPEG_QUALITY = 88
# Encoded item images kept per process: each is a few tens of KB, and the same results come back page after page.
ENCODED_IMAGES_KEPT = 2048


class ItemImageUnavailable(LookupError):
    """A catalog item whose image file is gone or unreadable since the index was built."""


@dataclass(frozen=True)
class ItemTable:
    """What the app knows of each indexed item; row i is row i of the index and of embeddings.h5."""

    item_id: np.ndarray  # N str
    label: np.ndarray  # N int, index into class_names
    title: np.ndarray  # N str, "" when the catalog has none
    split: np.ndarray  # N str
    _rows: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Ids are looked up on every image request and "more like this": a dict, built once.
        object.__setattr__(self, "_rows", {str(item_id): row for row, item_id in enumerate(self.item_id.tolist())})

    @classmethod
    def from_embeddings(cls, stored: EmbeddingsFile) -> ItemTable:
        """The item columns of a read embeddings.h5."""
        return cls(stored.item_id, stored.label, stored.title, stored.split)

    def __len__(self) -> int:
        return int(self.item_id.shape[0])

    def row_of(self, item_id: str) -> int:
        """The row of an item id; KeyError for ids not in the catalog."""
        return self._rows[item_id]

    def describe(self, row: int, class_names: list[str]) -> dict[str, Any]:
        """One item as plain data: id, title, category and split."""
        return {
            "item_id": str(self.item_id[row]),
            "title": str(self.title[row]),
            "category": class_names[int(self.label[row])],
            "split": str(self.split[row]),
        }


def display_image(image: Image.Image) -> Image.Image:
    """An RGB copy sized for a web page: tiny images enlarged, big ones reduced."""
    image = image.convert("RGB")
    shortest, longest = min(image.size), max(image.size)
    if shortest < MIN_IMAGE_SIDE:
        factor = math.ceil(MIN_IMAGE_SIDE / shortest)
        image = image.resize((image.width * factor, image.height * factor), Image.Resampling.BICUBIC)
    elif longest > MAX_IMAGE_SIDE:
        image = image.copy()
        image.thumbnail((MAX_IMAGE_SIDE, MAX_IMAGE_SIDE), Image.Resampling.LANCZOS)
    return image


def encode_jpeg(image: Image.Image, quality: int = JPEG_QUALITY) -> bytes:
    """JPEG bytes of an RGB image."""
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=quality, optimize=True)
    return buffer.getvalue()
