"""A torch Dataset over catalog rows that turns unreadable images into reported skips, not crashes."""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from PIL import Image
from torch.utils.data import Dataset

from embedder.catalogs.base import Catalog


class CatalogImages(Dataset):
    """Yields (image tensor, catalog row, error text); the error is "" when the image was read."""

    def __init__(
        self, catalog: Catalog, rows: Sequence[int], transform: Callable[[Image.Image], torch.Tensor], image_size: int,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.catalog = catalog
        self.rows = list(rows)
        self.transform = transform
        # What a skipped image leaves in its batch: the transform's dtype, or the batch could not be stacked.
        self.blank = torch.zeros(3, image_size, image_size, dtype=dtype)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, position: int) -> tuple[torch.Tensor, int, str]:
        row = self.rows[position]
        try:
            return self.transform(self.catalog.open_image(row)), row, ""
        # Any failure to read or transform one image skips that image; the build report names it.
        except Exception as error:  # noqa: BLE001
            return self.blank, row, f"{type(error).__name__}: {error}" or type(error).__name__
