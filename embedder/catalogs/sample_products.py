"""A small catalog of drawn garments in the Fashion Product Images layout: styles.csv and images/<id>.jpg.

Every product's name says what is drawn (colour, pattern, sleeve length, garment), after a brand and
a gender as the real names have them. Damage on request: malformed rows, rows whose image is missing,
and names with commas left unquoted, as in the real file.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from embedder.catalogs.fashion_product_images import COLUMNS, IMAGES, STYLES
from embedder.catalogs.sample_drawing import GARMENTS, Garment, draw_garment, save_jpeg

log = logging.getLogger(__name__)

# Drawn garment -> (articleType, subCategory, the word the name uses).
ARTICLE_TYPES = {
    "Blouse": ("Tops", "Topwear", "Top"), "Button-Down": ("Shirts", "Topwear", "Shirt"),
    "Hoodie": ("Sweatshirts", "Topwear", "Sweatshirt"), "Jeans": ("Jeans", "Bottomwear", "Jeans"),
    "Tank": ("Camisoles", "Topwear", "Camisole"), "Tee": ("Tshirts", "Topwear", "Tshirt"),
    "Skirt": ("Skirts", "Bottomwear", "Skirt"), "Coat": ("Jackets", "Topwear", "Jacket"),
    "Dress": ("Dresses", "Dress", "Dress"),
}
# The catalog's colour names as the real baseColour column spells them.
BASE_COLOURS = {"Navy": "Navy Blue", "Light Wash": "Blue", "Indigo": "Blue", "Camel": "Beige"}
SLEEVE_NAMES = {"long": "Long Sleeve", "short": "Short Sleeve", "sleeveless": "Sleeveless", "": ""}
WOMENSWEAR = ("Blouse", "Skirt", "Dress", "Tank")
BRANDS = ("Roadster", "Kestrel", "Nimbus", "Alder & Co")
SEASONS = ("Summer", "Fall", "Winter", "Spring")
YEARS = range(2011, 2019)
IMAGE_SIZE = (90, 120)  # portrait, like the catalog's product shots


@dataclass(frozen=True)
class SampleProduct:
    """One product: its row of styles.csv and what its photo shows."""

    product_id: int
    garment: Garment
    colour: str
    pattern: str
    sleeves: str
    row: dict[str, str]


def write_sample_products(
    root: Path,
    products_per_type: int = 12,
    seed: int = 0,
    malformed: int = 0,
    missing: int = 0,
    comma_names: int = 0,
) -> Path:
    """Write a Fashion Product Images-layout catalog under ``root``; returns root.

    ``malformed`` extra rows are broken (too few fields, an id that is not a number); ``missing``
    products are listed without their image; ``comma_names`` products get a name with a comma.
    """
    if products_per_type < 1:
        raise ValueError(f"products_per_type must be at least 1, got {products_per_type}")
    root = Path(root)
    rng = np.random.default_rng(seed)
    products = plan_products(products_per_type, rng)
    if missing + comma_names > len(products):
        raise ValueError(f"cannot damage {missing + comma_names} of {len(products)} products")
    chosen = rng.permutation(len(products))[: missing + comma_names]
    absent, commas = set(chosen[:missing].tolist()), set(chosen[missing:].tolist())
    lines = [",".join(COLUMNS)]
    for number, product in enumerate(products):
        photo, _ = draw_garment(product.garment, product.colour, product.pattern, IMAGE_SIZE, rng, product.sleeves)
        if number not in absent:
            save_jpeg(photo, root / IMAGES / f"{product.product_id}.jpg")
        row = dict(product.row)
        if number in commas:
            row["productDisplayName"] += ", Regular Fit"
        lines.append(",".join(row[column] for column in COLUMNS))
    for number in range(malformed):
        at = int(rng.integers(1, len(lines) + 1))
        broken = f"{90000 + number},Men,Apparel" if number % 2 == 0 else f"x{number}," + ",".join(["Men"] * 9)
        lines.insert(at, broken)
    root.mkdir(parents=True, exist_ok=True)
    (root / STYLES).write_text("\n".join(lines) + "\n", encoding="utf-8")
    log.info("wrote a sample Fashion Product Images catalog of %d products to %s", len(products), root)
    return root


def plan_products(products_per_type: int, rng: np.random.Generator) -> list[SampleProduct]:
    """``products_per_type`` products of each drawn garment, in a shuffled order with unique 5-digit ids."""
    ids = rng.choice(np.arange(10000, 60000), size=products_per_type * len(GARMENTS), replace=False)
    products = []
    for garment in GARMENTS:
        for _ in range(products_per_type):
            colour = garment.colours[int(rng.integers(len(garment.colours)))]
            pattern = garment.patterns[int(rng.integers(len(garment.patterns)))]
            sleeves = garment.sleeve_lengths[int(rng.integers(len(garment.sleeve_lengths)))]
            product_id = int(ids[len(products)])
            products.append(SampleProduct(product_id, garment, colour, pattern, sleeves,
                                          _row(product_id, garment, colour, pattern, sleeves, rng)))
    return [products[i] for i in rng.permutation(len(products))]


def _row(product_id: int, garment: Garment, colour: str, pattern: str, sleeves: str,
         rng: np.random.Generator) -> dict[str, str]:
    article_type, sub_category, word = ARTICLE_TYPES[garment.name]
    gender = "Women" if garment.name in WOMENSWEAR else ("Men", "Women")[int(rng.integers(2))]
    base_colour = BASE_COLOURS.get(colour, colour)
    brand = BRANDS[int(rng.integers(len(BRANDS)))]
    words = (brand, gender, base_colour, pattern.replace("_", " "), SLEEVE_NAMES[sleeves], word)
    return {
        "id": str(product_id), "gender": gender, "masterCategory": "Apparel", "subCategory": sub_category,
        "articleType": article_type, "baseColour": base_colour, "season": SEASONS[int(rng.integers(len(SEASONS)))],
        "year": str(int(rng.choice(YEARS))), "usage": "Formal" if garment.name in ("Button-Down", "Coat") else "Casual",
        "productDisplayName": " ".join(word for word in words if word),
    }
