"""Fixtures shared by all test packages: a tiny in-memory catalog and a small embedder config."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from embedder.catalogs.base import Catalog, CatalogImageError, CatalogItem
from benchmarks.deepfashion_layout import list_only, read_listing
from embedder.catalogs.deepfashion import CATEGORY_IMG

torch.set_num_threads(2)


class ColourCatalog(Catalog):
    """Solid-ish coloured squares with noise; rows listed in ``broken`` fail to open."""

    kind = "test-colours"
    default_image_size = 32
    has_titles = True

    def __init__(self, count: int = 24, broken: tuple[int, ...] = (), seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        colours = [(220, 40, 40), (40, 200, 60), (40, 60, 220)]
        items, self.pixels = [], []
        for row in range(count):
            label = row % len(colours)
            noise = rng.integers(-30, 30, size=(40, 48, 3))
            self.pixels.append(np.clip(np.array(colours[label]) + noise, 0, 255).astype(np.uint8))
            split = ("train", "train", "val", "test")[row % 4]
            items.append(CatalogItem(f"item-{row:03d}", f"img/{row}.png", label, split, f"Colour {label} item {row}"))
        super().__init__(".", items, ["red", "green", "blue"])
        self.broken = set(broken)

    def open_image(self, index: int) -> Image.Image:
        if index in self.broken:
            raise CatalogImageError(f"{self.items[index].path}: truncated file")
        return Image.fromarray(self.pixels[index])


@pytest.fixture
def colour_catalog() -> ColourCatalog:
    return ColourCatalog()


def sample_build_arguments(catalog_root, artifacts, batch_size: int = 16) -> list[str]:
    """CLI arguments for a quick build over a generated DeepFashion-layout catalog: random weights, 32 px,
    16-d vectors, no decoding processes."""
    return ["--catalog", "deepfashion", "--root", str(catalog_root), "--weights", "none", "--artifacts",
            str(artifacts), "--set", "catalog.subset=all", "--set", "embedder.image_size=32",
            "--set", "embedder.embedding_size=16", "--set", f"embedder.batch_size={batch_size}",
            "--set", "embedder.workers=0"]


class Listing:
    """A generated catalog whose annotation files can list any subset of its images, as a shop's would."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.files = read_listing(root)
        self.names = [line.split()[0] for line in self.files[CATEGORY_IMG][2:]]
        self.readable = [name for name in self.names if self._loads(name)]

    def _loads(self, name: str) -> bool:
        try:
            Image.open(self.root / name).load()
        except OSError:
            return False
        return True

    def show_only(self, names: list[str]) -> None:
        list_only(self.root, self.files, names)

    def redraw(self, name: str) -> None:
        """A new photo under the same name (the product's image was replaced)."""
        path = self.root / name
        stat = path.stat()
        ImageOps.mirror(ImageOps.invert(Image.open(path).convert("RGB"))).save(path, "JPEG", quality=80)
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
