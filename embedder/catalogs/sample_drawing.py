"""Drawing the sample catalogs' garments: a photo of a silhouette in a colour and pattern on a studio backdrop.

Each category has its own outline (a tee's short sleeves, a tank's straps, a long coat...); a few
have another sleeve length as a variant, so that sleeve length is something to be seen, not implied.
Both sample generators (DeepFashion layout, Fashion Product Images layout) draw with this module.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SUPERSAMPLE = 2  # drawn at twice the size and reduced, for smooth edges
BACKGROUNDS = ((236, 233, 226), (226, 232, 238), (240, 228, 228), (226, 234, 226), (232, 232, 232))

Point = tuple[float, float]
Polygon = tuple[Point, ...]
SLEEVE_WORDS = {"long": "Long-Sleeve", "short": "Short-Sleeve", "sleeveless": "Sleeveless", "": ""}


@dataclass(frozen=True)
class SleeveVariant:
    """Another sleeve length of a garment: its outline and seams replace the garment's own."""

    sleeves: str
    outline: Polygon
    lines: tuple[Polygon, ...]


@dataclass(frozen=True)
class Garment:
    """A category's look: its outline and details in a unit box of the given height/width ratio."""

    name: str  # the DeepFashion category name
    category_type: int  # 1 upper-body, 2 lower-body, 3 full-body
    aspect: float
    outline: Polygon
    colours: tuple[str, ...]
    patterns: tuple[str, ...]
    attributes: tuple[str, ...]
    extra: tuple[Polygon, ...] = ()  # more cloth: a collar, a hood
    inner: tuple[Polygon, ...] = ()  # seen inside: the hood's opening
    lines: tuple[Polygon, ...] = ()  # seams and hems
    buttons: Polygon = ()
    sleeves: str = ""  # "long", "short", "sleeveless"; "" for garments worn below the waist
    variants: tuple[SleeveVariant, ...] = ()

    @property
    def sleeve_lengths(self) -> tuple[str, ...]:
        """The sleeve lengths this garment is drawn with, its own first."""
        return (self.sleeves, *(variant.sleeves for variant in self.variants))

    def look(self, sleeves: str) -> tuple[Polygon, tuple[Polygon, ...]]:
        """The outline and seams of the garment with the given sleeve length."""
        for variant in self.variants:
            if variant.sleeves == sleeves:
                return variant.outline, variant.lines
        if sleeves != self.sleeves:
            raise ValueError(f"{self.name} is not drawn with {sleeves!r} sleeves")
        return self.outline, self.lines


COLOURS = {
    "Red": (196, 38, 46), "Navy": (32, 46, 96), "Black": (38, 38, 42), "White": (238, 236, 230),
    "Olive": (108, 118, 52), "Mustard": (214, 164, 42), "Pink": (234, 142, 170), "Teal": (28, 128, 134),
    "Grey": (132, 134, 140), "Burgundy": (118, 26, 46), "Camel": (190, 146, 94), "Indigo": (44, 60, 112),
    "Light Wash": (120, 152, 192),
}
TOPS = ("Red", "Navy", "Black", "White", "Olive", "Mustard", "Pink", "Teal", "Grey", "Burgundy")
PATTERNS = ("", "Striped", "Polka_Dot", "Plaid")  # "" is a solid colour

# In list_category_cloth.txt order; the types are interleaved so that a subset's labels are remapped.
GARMENTS = (
    Garment("Blouse", 1, 1.05, ((.39, .02), (.5, .2), (.61, .02), (.76, .06), (.9, .3), (1, .84), (.88, .87),
            (.8, .42), (.77, .4), (.84, 1), (.16, 1), (.23, .4), (.2, .42), (.12, .87), (0, .84), (.1, .3),
            (.24, .06)), TOPS, PATTERNS, (), sleeves="long",
            lines=(((.985, .78), (.875, .81)), ((.015, .78), (.125, .81))), buttons=((.5, .3), (.5, .42))),
    Garment("Button-Down", 1, 1.1, ((.4, .03), (.5, .08), (.6, .03), (.78, .07), (.94, .28), (1, .86),
            (.88, .88), (.8, .4), (.78, .38), (.78, .94), (.64, 1), (.5, .97), (.36, 1), (.22, .94), (.22, .38),
            (.2, .4), (.12, .88), (0, .86), (.06, .28), (.22, .07)), TOPS, PATTERNS, ("collar",), sleeves="long",
            extra=(((.4, .03), (.5, .1), (.44, .18), (.35, .06)), ((.6, .03), (.5, .1), (.56, .18), (.65, .06))),
            lines=(((.5, .1), (.5, .97)), ((.28, .3), (.4, .3), (.4, .43), (.28, .43), (.28, .3)),
                   ((.99, .8), (.885, .82)), ((.01, .8), (.115, .82))),
            buttons=((.525, .24), (.525, .4), (.525, .56), (.525, .72), (.525, .88))),
    Garment("Hoodie", 1, 1.05, ((.32, .14), (.34, .03), (.42, 0), (.58, 0), (.66, .03), (.68, .14), (.8, .14),
            (.95, .34), (1, .88), (.87, .9), (.8, .46), (.8, 1), (.2, 1), (.2, .46), (.13, .9), (0, .88),
            (.05, .34), (.2, .14)), TOPS, ("", "Striped"), ("hooded", "cotton", "casual"), sleeves="long",
            inner=(((.4, .15), (.42, .07), (.5, .05), (.58, .07), (.6, .15), (.5, .22)),),
            lines=(((.46, .21), (.45, .36)), ((.54, .21), (.55, .36)), ((.2, .93), (.8, .93)),
                   ((.32, .66), (.68, .66), (.74, .88), (.26, .88), (.32, .66)))),
    Garment("Jeans", 2, 1.55, ((.14, 0), (.86, 0), (.9, .45), (.93, 1), (.57, 1), (.5, .3), (.43, 1), (.07, 1),
            (.1, .45)), ("Indigo", "Light Wash", "Black", "Grey"), ("",), ("denim", "casual"),
            lines=(((.14, .06), (.86, .06)), ((.56, .06), (.56, .22), (.5, .28)), ((.18, .06), (.3, .17)),
                   ((.82, .06), (.7, .17)), ((.08, .96), (.43, .96)), ((.57, .96), (.92, .96))),
            buttons=((.5, .03),)),
    Garment("Tank", 1, 1.15, ((.3, 0), (.38, 0), (.42, .14), (.5, .2), (.58, .14), (.62, 0), (.7, 0), (.72, .12),
            (.8, .26), (.84, .32), (.84, 1), (.16, 1), (.16, .32), (.2, .26), (.28, .12)), TOPS, PATTERNS,
            ("casual",), sleeves="sleeveless", lines=(((.16, .95), (.84, .95)),)),
    Garment("Tee", 1, 1.0, ((.37, .02), (.41, .07), (.5, .1), (.59, .07), (.63, .02), (.8, .08), (1, .3),
            (.87, .42), (.78, .34), (.79, 1), (.21, 1), (.22, .34), (.13, .42), (0, .3), (.2, .08)), TOPS, PATTERNS,
            ("cotton", "casual"), lines=(((.95, .35), (.84, .45)), ((.05, .35), (.16, .45)), ((.21, .95), (.79, .95))),
            sleeves="short", variants=(SleeveVariant("long", ((.37, .02), (.41, .07), (.5, .1), (.59, .07), (.63, .02),
            (.8, .08), (.94, .3), (1, .86), (.88, .88), (.8, .42), (.79, 1), (.21, 1), (.2, .42), (.12, .88), (0, .86),
            (.06, .3), (.2, .08)), (((.985, .8), (.88, .82)), ((.015, .8), (.12, .82)), ((.21, .95), (.79, .95)))),)),
    Garment("Skirt", 2, 0.9, ((.3, 0), (.7, 0), (.71, .1), (.96, 1), (.04, 1), (.29, .1)), TOPS, PATTERNS,
            ("a-line",), lines=(((.29, .1), (.71, .1)), ((.4, .12), (.3, 1)), ((.5, .12), (.5, 1)), ((.6, .12), (.7, 1)))),
    Garment("Coat", 3, 1.75, ((.38, .02), (.5, .06), (.62, .02), (.8, .06), (.92, .22), (1, .62), (.89, .64),
            (.8, .3), (.8, .5), (.84, 1), (.16, 1), (.2, .5), (.2, .3), (.11, .64), (0, .62), (.08, .22), (.2, .06)),
            ("Camel", "Black", "Navy", "Grey", "Burgundy", "Olive"), ("", "Plaid"), ("collar",), sleeves="long",
            lines=(((.38, .02), (.47, .3), (.5, .34)), ((.62, .02), (.53, .3), (.5, .34)), ((.5, .34), (.5, 1)),
                   ((.2, .48), (.8, .48)), ((.26, .66), (.38, .66)), ((.62, .66), (.74, .66)),
                   ((.995, .58), (.895, .6)), ((.005, .58), (.105, .6))),
            buttons=((.44, .4), (.56, .4), (.44, .6), (.56, .6), (.44, .8), (.56, .8))),
    Garment("Dress", 3, 1.7, ((.34, 0), (.4, 0), (.42, .09), (.5, .13), (.58, .09), (.6, 0), (.66, 0), (.7, .14),
            (.66, .28), (.64, .36), (.8, .7), (.98, 1), (.02, 1), (.2, .7), (.36, .36), (.34, .28), (.3, .14)),
            TOPS, PATTERNS, ("a-line",), sleeves="sleeveless",
            lines=(((.36, .36), (.64, .36)), ((.45, .4), (.35, 1)), ((.55, .4), (.65, 1)))),
)




def draw_garment(
    garment: Garment,
    colour: str,
    pattern: str,
    size: tuple[int, int],
    rng: np.random.Generator,
    sleeves: str | None = None,
) -> tuple[Image.Image, tuple[int, int, int, int]]:
    """A photo of the garment (with its own sleeves unless told) on a plain backdrop, and its box (x1, y1, x2, y2)."""
    outline, lines = garment.look(garment.sleeves if sleeves is None else sleeves)
    width, height = size
    big = (width * SUPERSAMPLE, height * SUPERSAMPLE)
    x0, y0, w, h = _place(garment.aspect, big, rng)

    def points(polygon: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
        return [(x0 + u * w, y0 + v * h) for u, v in polygon]

    mask = Image.new("L", big, 0)
    for polygon in (outline, *garment.extra):
        ImageDraw.Draw(mask).polygon(points(polygon), fill=255)
    small_mask = mask.reduce(SUPERSAMPLE)
    shade = np.array(COLOURS[colour], dtype=np.float32) * rng.uniform(0.9, 1.08)
    photo = _backdrop(big, small_mask, rng)
    region = (int(x0), int(y0), min(big[0], int(x0 + w) + 2), min(big[1], int(y0 + h) + 2))
    cloth = _fabric((region[2] - region[0], region[3] - region[1]), w, shade, pattern, rng)
    photo.paste(cloth, region[:2], mask.crop(region))
    _draw_details(ImageDraw.Draw(photo), garment, (outline, lines), points, shade, w)
    x1, y1, x2, y2 = small_mask.point(lambda p: 255 if p > 32 else 0).getbbox()
    pad = int(rng.integers(1, 5))
    box = (max(0, x1 - pad), max(0, y1 - pad), min(width, x2 + pad), min(height, y2 + pad))
    return photo.reduce(SUPERSAMPLE), box


def _place(aspect: float, size: tuple[int, int], rng: np.random.Generator) -> tuple[float, float, float, float]:
    """x, y, width, height of the garment's box: most of the photo, off centre a little."""
    width, height = size
    scale = rng.uniform(0.72, 0.9)
    h = min(height * 0.9, width * 0.9 * aspect) * scale
    w = h / aspect
    x = rng.uniform(0.05 * width, 0.95 * width - w)
    y = rng.uniform(0.05 * height, 0.95 * height - h)
    return x, y, w, h


def _backdrop(size: tuple[int, int], mask: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A studio backdrop, lighter at the top, with the garment's soft shadow down and to the right."""
    width, height = size
    top = np.array(BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))], dtype=np.float32)
    fall = np.linspace(1.0, rng.uniform(0.8, 0.92), height, dtype=np.float32)[:, None]
    column = (top * fall).clip(0, 255).astype(np.uint8)
    backdrop = Image.fromarray(np.ascontiguousarray(np.broadcast_to(column[:, None, :], (height, width, 3))))
    # Blurred at the small size, where it is cheap; the shadow is soft anyway.
    shadow = Image.new("L", mask.size, 0)
    shadow.paste(mask.filter(ImageFilter.GaussianBlur(5)).point(lambda p: p * 0.35), (2, 3))
    return Image.composite(Image.new("RGB", size, (90, 90, 95)), backdrop, shadow.resize(size, Image.Resampling.BILINEAR))


def _fabric(size: tuple[int, int], width: float, shade: np.ndarray, pattern: str, rng: np.random.Generator) -> Image.Image:
    """The garment's cloth for its box: colour, pattern, and light falling off at the sides."""
    ys = np.arange(size[1], dtype=np.float32)[:, None]
    xs = np.arange(size[0], dtype=np.float32)[None, :]
    pixels = np.empty((size[1], size[0], 3), dtype=np.float32)
    pixels[:] = shade
    luminance = float(shade @ np.array([0.3, 0.59, 0.11], dtype=np.float32))
    contrast = np.array((245, 245, 240) if luminance < 150 else (40, 40, 55), dtype=np.float32)
    step = max(6.0, width / rng.uniform(7, 12))
    if pattern == "Striped":
        pixels[np.broadcast_to((ys // (step / 2)) % 2 == 1, pixels.shape[:2])] = contrast
    elif pattern == "Polka_Dot":
        dx = (xs + ((ys // step) % 2) * step / 2) % step - step / 2
        dy = ys % step - step / 2
        pixels[dx * dx + dy * dy < (step * 0.22) ** 2] = contrast
    elif pattern == "Plaid":
        pixels *= (1.0 - 0.18 * (((xs // step) % 2 == 0) + ((ys // step) % 2 == 0).astype(np.float32)))[..., None]
        lines = (xs % (2 * step) < 1.5 * SUPERSAMPLE) | (ys % (2 * step) < 1.5 * SUPERSAMPLE)
        pixels[lines] = pixels[lines] * 0.4 + contrast * 0.6
    pixels *= (0.8 + 0.2 * np.sin(np.pi * np.clip(xs / max(width, 1.0), 0.0, 1.0)))[..., None]
    return Image.fromarray(pixels.clip(0, 255).astype(np.uint8))


def _draw_details(
    draw: ImageDraw.ImageDraw, garment: Garment, look: tuple, points, shade: np.ndarray, width: float
) -> None:
    """Outline, seams, hems and buttons in a darker shade of the cloth."""
    outline, lines = look
    dark = tuple(int(c) for c in shade * 0.55)
    stroke = max(1, round(width / 70))
    for polygon in garment.extra:
        draw.line(points([*polygon, polygon[0]]), fill=dark, width=stroke, joint="curve")
    for polygon in garment.inner:
        draw.polygon(points(polygon), fill=tuple(int(c) for c in shade * 0.45))
    draw.line(points([*outline, outline[0]]), fill=dark, width=stroke, joint="curve")
    for line in lines:
        draw.line(points(line), fill=dark, width=stroke, joint="curve")
    radius = max(1.5, width / 45)
    for x, y in points(garment.buttons):
        draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=(225, 220, 205), outline=dark)


def save_jpeg(photo: Image.Image, path: Path, cut: bool = False) -> None:
    """Save a JPEG, creating its folder; ``cut`` keeps only the first 3/5 of the bytes (a damaged download)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = BytesIO()
    photo.save(buffer, "JPEG", quality=90)
    data = buffer.getvalue()
    # A download cut short: the header and part of the scan survive, the rest is gone.
    path.write_bytes(data[: len(data) * 3 // 5] if cut else data)


