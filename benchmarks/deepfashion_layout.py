"""A large generated catalog in DeepFashion's layout and at its image sizes, for timing builds (not for accuracy).

DeepFashion's Category & Attribute Prediction images (img/) are JPEGs whose longer side is 300 px, the
other 100-300 px. These are textured photos of that size with a garment-sized box, a few per product
folder, written in parallel: 140,000 of them take about a minute on 16 cores. The pixel content is
noise and shapes, so the JPEGs decode like photos of that size; nothing here is meant to be learned.

    python -m benchmarks.deepfashion_layout DIR [--items 140000] [--processes 16]
"""
from __future__ import annotations

import argparse
import io
import os
import sys
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from embedder.catalogs.deepfashion import ATTR_IMG, BBOX, CATEGORY_CLOTH, CATEGORY_IMG, PARTITION

# The real file's 50 categories have types 1 (upper), 2 (lower), 3 (full body); 20 upper-body ones.
CATEGORIES = [(f"Upper_{n:02d}", 1) for n in range(20)] + [(f"Lower_{n:02d}", 2) for n in range(16)] \
    + [(f"Full_{n:02d}", 3) for n in range(14)]
IMAGES_PER_PRODUCT = 5
POOL = 512  # distinct JPEGs, written round-robin: decoding cost depends on size and texture, not identity
LONG_SIDE = 300


def make_jpeg(rng: np.random.Generator) -> tuple[bytes, tuple[int, int, int, int]]:
    """One photo-like JPEG of DeepFashion's size, and a garment box inside it."""
    short = int(rng.integers(150, LONG_SIDE + 1))
    width, height = (LONG_SIDE, short) if rng.random() < 0.4 else (short, LONG_SIDE)
    base = rng.integers(0, 256, size=3)
    gradient = np.linspace(0, 1, width)[None, :, None] * rng.integers(-80, 80, size=3)
    noise = rng.normal(0, 25, size=(height, width, 3))
    pixels = np.clip(base + gradient + noise, 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels).filter(ImageFilter.GaussianBlur(1))
    x1, y1 = int(rng.integers(0, width // 4)), int(rng.integers(0, height // 4))
    x2, y2 = int(rng.integers(3 * width // 4, width)), int(rng.integers(3 * height // 4, height))
    ImageDraw.Draw(image).ellipse((x1, y1, x2, y2), fill=tuple(int(v) for v in rng.integers(0, 256, size=3)))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue(), (x1, y1, x2, y2)


def image_name(number: int) -> str:
    """img/<product folder>/img_NNNNNNNN.jpg, IMAGES_PER_PRODUCT images per product folder."""
    product, photo = divmod(number, IMAGES_PER_PRODUCT)
    return f"img/Generated_Product_{product:06d}/img_{photo + 1:08d}.jpg"


def _write_chunk(root: str, start: int, stop: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    pool = [make_jpeg(rng)[0] for _ in range(min(POOL, stop - start))]
    for number in range(start, stop):
        path = Path(root) / image_name(number)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(pool[number % len(pool)])


def write_catalog(root: Path, items: int, processes: int | None = None, seed: int = 0) -> Path:
    """Write ``items`` images and the four annotation files DeepFashionCatalog reads; returns root."""
    root = Path(root)
    processes = processes or os.cpu_count() or 1
    bounds = np.linspace(0, items, num=processes + 1).astype(int)
    with ProcessPoolExecutor(processes) as pool:
        jobs = [pool.submit(_write_chunk, str(root), int(a), int(b), seed + n)
                for n, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])) if b > a]
        for job in jobs:
            job.result()
    _write_annotations(root, items, np.random.default_rng(seed))
    return root


def _write_annotations(root: Path, items: int, rng: np.random.Generator) -> None:
    names = [image_name(number) for number in range(items)]
    width = max(64, max(len(name) for name in names) + 1)
    # Garment-sized boxes like the real ones (clamped to the image when read); their content is not the point.
    x1, y1 = rng.integers(0, 50, size=items), rng.integers(0, 50, size=items)
    x2, y2 = rng.integers(150, 300, size=items), rng.integers(150, 300, size=items)
    products = np.arange(items) // IMAGES_PER_PRODUCT
    categories = rng.integers(1, len(CATEGORIES) + 1, size=products.max() + 1)[products]
    splits = np.array(["train", "val", "test"])[rng.choice(3, size=items, p=[0.7, 0.15, 0.15])]
    files = {
        CATEGORY_CLOTH: ("category_name  category_type", [f"{name:<29}{kind}" for name, kind in CATEGORIES]),
        CATEGORY_IMG: ("image_name  category_label", [f"{n:<{width}}{c}" for n, c in zip(names, categories)]),
        BBOX: ("image_name  x_1  y_1  x_2  y_2",
               [f"{n:<{width}}{a:03d} {b:03d} {c:03d} {d:03d}" for n, a, b, c, d in zip(names, x1, y1, x2, y2)]),
        PARTITION: ("image_name  evaluation_status", [f"{n:<{width}}{s}" for n, s in zip(names, splits)]),
    }
    for relative, (header, lines) in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"{len(lines)}\n{header}\n" + "".join(line + "\n" for line in lines))


def read_listing(root: Path) -> dict[str, list[str]]:
    """The lines of the catalog's annotation files that list its images, one row per image after two lines."""
    return {name: (root / name).read_text().splitlines() for name in (CATEGORY_IMG, BBOX, PARTITION, ATTR_IMG)
            if (root / name).is_file()}


def list_only(root: Path, listing: dict[str, list[str]], names: Sequence[str]) -> None:
    """Rewrite the annotation files (as read_listing gave them) to list only the images ``names``, as a shop
    that adds and removes products would."""
    wanted = set(names)
    for name, lines in listing.items():
        rows = [line for line in lines[2:] if line.split()[0] in wanted]
        (root / name).write_text("\n".join([str(len(rows)), lines[1], *rows]) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--items", type=int, default=140_000)
    parser.add_argument("--processes", type=int, default=None)
    args = parser.parse_args(argv)
    write_catalog(args.root, args.items, args.processes)
    print(f"wrote {args.items} images in the DeepFashion layout to {args.root}")


if __name__ == "__main__":
    main(sys.argv[1:])
