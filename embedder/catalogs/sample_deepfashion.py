"""A small catalog of drawn garments in the real DeepFashion layout, to try Lookbook without the real data.

Each category has its own silhouette (see embedder/catalogs/sample_drawing.py), and products within a category
vary in colour, pattern and, for some, sleeve length; the product title and the attribute rows say
exactly what is drawn, so that captions and attributes can be measured on it.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from embedder.catalogs.deepfashion import ATTR_CLOTH, ATTR_IMG, BBOX, CATEGORY_CLOTH, CATEGORY_IMG, PARTITION
from embedder.catalogs.sample_drawing import COLOURS, GARMENTS, PATTERNS, SLEEVE_WORDS, Garment, draw_garment, save_jpeg

log = logging.getLogger(__name__)

__all__ = ["ATTRIBUTES", "COLOURS", "GARMENTS", "PATTERNS", "SampleImage", "plan_images", "write_sample_catalog"]

NAME_WIDTH = 64  # image names are padded like the real files'
PATTERN_ATTRIBUTES = {"Striped": "striped", "Polka_Dot": "polka dot", "Plaid": "plaid"}
SLEEVE_ATTRIBUTES = {"long": "long sleeve", "short": "short sleeve", "sleeveless": "sleeveless"}
# (attribute_name, attribute_type): 1 texture, 2 fabric, 3 shape, 4 part, 5 style. Names may hold spaces.
ATTRIBUTES = (
    ("striped", 1), ("polka dot", 1), ("plaid", 1), ("denim", 2), ("cotton", 2), ("a-line", 3),
    ("long sleeve", 4), ("short sleeve", 4), ("sleeveless", 4), ("collar", 4), ("hooded", 4), ("casual", 5),
)
# A drawing cannot show what the cloth is made of: these are 0 (unknown) where not 1.
UNKNOWN_UNLESS_SHOWN = ("cotton",)


@dataclass(frozen=True)
class SampleImage:
    """One drawn photo: where it goes and what it shows."""

    name: str  # image_name, e.g. img/Red_Striped_Tee/img_00000001.jpg
    category: int  # 1-based row in list_category_cloth.txt
    garment: Garment
    colour: str
    pattern: str
    split: str
    sleeves: str = ""


def write_sample_catalog(
    root: Path,
    images_per_category: int = 12,
    seed: int = 0,
    truncated: int = 0,
    missing: int = 0,
) -> Path:
    """Write a DeepFashion-layout catalog under ``root``; returns root.

    ``truncated`` images are cut short (a damaged JPEG) and ``missing`` images are listed but not
    written, to exercise skipping; they are picked at random (by ``seed``) among all images.
    """
    if images_per_category < 1:
        raise ValueError(f"images_per_category must be at least 1, got {images_per_category}")
    root = Path(root)
    rng = np.random.default_rng(seed)
    plan = plan_images(images_per_category, rng)
    if truncated + missing > len(plan):
        raise ValueError(f"cannot damage {truncated + missing} of {len(plan)} images")
    damaged = rng.permutation(len(plan))[: truncated + missing]
    cut, absent = set(damaged[:truncated].tolist()), set(damaged[truncated:].tolist())
    boxes = []
    for number, image in enumerate(plan):
        size = (int(rng.integers(120, 201)), int(rng.integers(120, 201)))
        photo, box = draw_garment(image.garment, image.colour, image.pattern, size, rng, image.sleeves)
        boxes.append(box)
        if number not in absent:
            save_jpeg(photo, root / image.name, cut=number in cut)
    _write_annotations(root, plan, boxes)
    log.info("wrote a sample catalog of %d images (%d truncated, %d missing) to %s", len(plan), truncated, missing, root)
    return root


def plan_images(images_per_category: int, rng: np.random.Generator) -> list[SampleImage]:
    """Every image of every category: a few products per category, about three photos of each."""
    plan = []
    for category, garment in enumerate(GARMENTS, start=1):
        products = max(1, math.ceil(images_per_category / 3))
        combos = [(colour, pattern, sleeves) for colour in garment.colours for pattern in garment.patterns
                  for sleeves in garment.sleeve_lengths]
        chosen = [combos[i] for i in rng.permutation(len(combos))[:products]]
        splits = _splits(images_per_category, rng)
        photos: dict[str, int] = {}
        for number in range(images_per_category):
            colour, pattern, sleeves = chosen[number % len(chosen)]
            folder = product_title(garment, colour, pattern, sleeves).replace(" ", "_")
            photos[folder] = photos.get(folder, 0) + 1
            name = f"img/{folder}/img_{photos[folder]:08d}.jpg"
            plan.append(SampleImage(name, category, garment, colour, pattern, splits[number], sleeves))
    return plan


def product_title(garment: Garment, colour: str, pattern: str, sleeves: str) -> str:
    """What is drawn, in words: 'Red Striped Short-Sleeve Tee', 'Light Wash Jeans'."""
    words = (colour, pattern.replace("_", " "), SLEEVE_WORDS[sleeves], garment.name)
    return " ".join(word for word in words if word)


def _splits(count: int, rng: np.random.Generator) -> list[str]:
    """About 70% train, 15% val and 15% test, in a random order; every split once there are 3 images."""
    held = max(1, round(0.15 * count)) if count >= 3 else 0
    splits = ["test"] * held + ["val"] * held
    splits += ["train"] * (count - len(splits))
    return [splits[i] for i in rng.permutation(count)]


def _write_annotations(root: Path, plan: Sequence[SampleImage], boxes: Sequence[tuple[int, int, int, int]]) -> None:
    """The six annotation files, each a count line, a header line and the rows."""
    name_width = max(NAME_WIDTH, *(len(image.name) + 1 for image in plan))

    def rows(make) -> list[str]:
        return [f"{image.name:<{name_width}}{make(number, image)}" for number, image in enumerate(plan)]

    def values(image: SampleImage) -> str:
        present = set(image.garment.attributes) | {PATTERN_ATTRIBUTES.get(image.pattern, ""),
                                                    SLEEVE_ATTRIBUTES.get(image.sleeves, "")}
        return " ".join(
            "1" if name in present else ("0" if name in UNKNOWN_UNLESS_SHOWN else "-1") for name, _ in ATTRIBUTES
        )

    files = {
        CATEGORY_CLOTH: ("category_name  category_type", [f"{g.name:<29}{g.category_type}" for g in GARMENTS]),
        CATEGORY_IMG: ("image_name  category_label", rows(lambda n, image: f"{image.category}")),
        BBOX: ("image_name  x_1  y_1  x_2  y_2", rows(lambda n, image: " ".join(f"{v:03d}" for v in boxes[n]))),
        PARTITION: ("image_name  evaluation_status", rows(lambda n, image: image.split)),
        ATTR_CLOTH: ("attribute_name  attribute_type", [f"{name:<29}{kind}" for name, kind in ATTRIBUTES]),
        ATTR_IMG: ("image_name  attribute_labels", rows(lambda n, image: values(image))),
    }
    for relative, (header, lines) in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"{len(lines)}\n{header}\n" + "".join(line + "\n" for line in lines))

