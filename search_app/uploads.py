"""Turning an uploaded file into a clean RGB image, or a clear error saying what was wrong with it."""
from __future__ import annotations

import base64
import io
import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from werkzeug.datastructures import FileStorage

log = logging.getLogger(__name__)

ACCEPTED = "JPEG, PNG, GIF, WebP or BMP"
# The only decoders an upload reaches (JPEG's covers the MPO files of phones that store several pictures):
# every other format Pillow reads is more code facing the internet, and EPS would run Ghostscript.
DECODED_FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "BMP")
# Big JPEGs are decoded at 1/2, 1/4 or 1/8 scale, keeping at least this many pixels a side:
# faster and lighter, and the embedder looks at a few hundred pixels anyway.
DECODE_SIDE = 1024
PREVIEW_SIDE = 320
MAX_NAME = 80
CROP_FIELDS = ("crop_x", "crop_y", "crop_w", "crop_h")
# What a few common non-images are, to say more than "not an image".
SIGNATURES = ((b"%PDF", "a PDF document"), (b"<svg", "an SVG drawing"), (b"<?xml", "an XML file (SVG?)"),
              (b"PK\x03\x04", "a ZIP archive (or Office document)"), (b"<!doctype html", "a web page"),
              (b"<html", "a web page"))


class UploadError(ValueError):
    """An upload that is not a usable image; the message is for the person who sent it."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def oversized_body_allowance(max_upload_bytes: int) -> int:
    """How much of a too-large request body the server still reads (and drops) before answering 413.

    A client is still sending when the 413 is ready; a server that closes the connection on an unread
    body gives it a broken pipe or a reset instead of the message (gunicorn does, and browsers then show
    a network error). Up to this size the body is read through; beyond it the connection is cut off
    rather than let anyone stream without end.
    """
    return 2 * max_upload_bytes + (1 << 20)


def drain_refused_body(stream: Any, most: int) -> int:
    """Read and drop what is left of a refused request's body, at most `most` bytes; returns the bytes read."""
    read = 0
    while read < most:
        chunk = stream.read(min(1 << 16, most - read))
        if not chunk:
            break
        read += len(chunk)
    return read


@dataclass(frozen=True)
class Crop:
    """A rectangle on the upright image, in fractions of its width and height (so any decoded scale fits)."""

    x: float
    y: float
    w: float
    h: float

    def box(self, size: tuple[int, int]) -> tuple[int, int, int, int]:
        """The rectangle in pixels of an image of this size: left, top, right, bottom, at least 1×1."""
        width, height = size
        left, top = min(round(self.x * width), width - 1), min(round(self.y * height), height - 1)
        right = min(max(round((self.x + self.w) * width), left + 1), width)
        bottom = min(max(round((self.y + self.h) * height), top + 1), height)
        return left, top, right, bottom


def first_file(files: Iterable[FileStorage]) -> FileStorage | None:
    """The first file input that holds a file (the page has a file picker and a camera input of the same name)."""
    return next((file for file in files if file.filename), None)


def parse_crop(fields: Mapping[str, Any]) -> Crop | None:
    """The crop rectangle from the fields crop_x, crop_y, crop_w, crop_h (fractions 0..1); None when all are absent.

    A missing edge is the image's (x and y 0, the width and height to the far edge), and a rectangle that
    reaches past the image is cut at its edge, as a crop tool would; the answer reports the crop used.
    """
    given = {key: str(fields.get(key, "")).strip() for key in CROP_FIELDS}
    if not any(given.values()):
        return None
    values = {}
    for key, text in given.items():
        if not text:
            continue
        try:
            values[key] = float(text)
        except ValueError:
            values[key] = math.nan
        if not math.isfinite(values[key]) or not 0 <= values[key] <= 1:
            raise UploadError(f"{key} must be a fraction of the image from 0 to 1, got {text[:40]!r}")
    if values.get("crop_w") == 0 or values.get("crop_h") == 0:
        raise UploadError("crop_w and crop_h must be above 0: a crop needs a width and a height")
    x, y = values.get("crop_x", 0.0), values.get("crop_y", 0.0)
    return Crop(x, y, min(values.get("crop_w", 1.0), 1 - x), min(values.get("crop_h", 1.0), 1 - y))


def read_upload(file_storage: FileStorage | None, max_pixels: int, crop: Crop | None = None) -> Image.Image:
    """The uploaded image as RGB, upright by its EXIF orientation, then cropped; UploadError if missing or unusable."""
    if file_storage is None or not file_storage.filename:
        raise UploadError(f"no image was uploaded; choose a photo ({ACCEPTED}) and try again")
    return read_image_body(file_storage.read(), file_storage.filename, file_storage.mimetype, max_pixels, crop)


def read_image_body(data: bytes, filename: str, mimetype: str, max_pixels: int, crop: Crop | None = None) -> Image.Image:
    """An upload's bytes (a multipart file's, or a whole request body) as read_upload returns them."""
    name = _shorten(filename)
    if not data:
        raise UploadError(f"no image was uploaded: the file {name!r} is empty (0 bytes)")
    return decode_image(data, name, max_pixels, mimetype, crop)


def decode_image(data: bytes, name: str, max_pixels: int, mimetype: str = "", crop: Crop | None = None) -> Image.Image:
    """Decode image bytes into an upright RGB image, cropped if asked, refusing images of more than max_pixels."""
    try:
        Image.init()  # registers every decoder, WebP's too, for formats= to choose among (once; then a no-op)
        image = Image.open(io.BytesIO(data), formats=DECODED_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        # Raised by Pillow's own, looser limit (the warning only where warnings are errors).
        raise _too_many_pixels(name, None, max_pixels) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        received = f"{mimetype or 'unknown type'}, {len(data):,} bytes"
        looks = _what_it_looks_like(data)
        raise UploadError(
            f"{name!r} ({received}) is not an image Lookbook can read{looks}; upload a {ACCEPTED} file"
        ) from None
    width, height = image.size
    # Checked from the header before decoding: a small file can hold a huge, memory-filling image.
    if width * height > max_pixels:
        raise _too_many_pixels(name, (width, height), max_pixels)
    if image.format == "JPEG":
        image.draft(None, (DECODE_SIDE, DECODE_SIDE))
    try:
        image.load()
    except (OSError, SyntaxError, ValueError) as error:
        raise UploadError(
            f"{name!r} ({image.format} {width}×{height}) could not be decoded: it may be truncated or damaged "
            f"({error}); upload the complete file"
        ) from None
    image = upright(image)
    if crop is not None:
        image = image.crop(crop.box(image.size))
    return to_rgb(image, name)


def upright(image: Image.Image) -> Image.Image:
    """The image turned as its EXIF orientation tag says (phone photos are often stored sideways)."""
    try:
        return ImageOps.exif_transpose(image)
    except (OSError, SyntaxError, ValueError, KeyError, TypeError) as error:
        # A damaged EXIF block should not cost the shopper the search; the pixels are fine.
        log.warning("ignoring unreadable EXIF orientation: %s", error)
        return image


def to_rgb(image: Image.Image, name: str = "the image") -> Image.Image:
    """Any Pillow mode as RGB: transparency onto white, 16- and 32-bit gray scaled to 8 bits."""
    if image.mode == "RGB":
        return image
    if image.mode.startswith("I") or image.mode == "F":
        return Image.fromarray(_gray_to_8bit(image)).convert("RGB")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    try:
        return image.convert("RGB")
    except ValueError as error:
        raise UploadError(f"{name!r} uses the colour mode {image.mode}, which cannot be shown as RGB ({error}); "
                          "save it as an ordinary RGB JPEG or PNG") from None


def _gray_to_8bit(image: Image.Image) -> np.ndarray:
    values = np.asarray(image, dtype=np.float64)
    # 16-bit files use the full 0..65535 range; 32-bit ones rarely do, so those scale by their own maximum.
    top = 65535.0 if image.mode.startswith("I;16") else max(float(values.max(initial=0.0)), 255.0)
    return np.clip(np.rint(values * (255.0 / top)), 0, 255).astype(np.uint8)


def _too_many_pixels(name: str, size: tuple[int, int] | None, max_pixels: int) -> UploadError:
    found = (f"is {size[0]:,}×{size[1]:,} = {size[0] * size[1]:,} pixels" if size
             else "has far too many pixels (more than the image library will decode)")
    return UploadError(
        f"{name!r} {found}; the limit is {max_pixels:,} pixels; upload a smaller image", status=413
    )


def _what_it_looks_like(data: bytes) -> str:
    start = data[:256].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    for signature, kind in SIGNATURES:
        if start.startswith(signature.lower()):
            return f" (it looks like {kind})"
    return ""


def _shorten(filename: str) -> str:
    return filename if len(filename) <= MAX_NAME else filename[: MAX_NAME - 3] + "..."


def preview_data_url(image: Image.Image, side: int = PREVIEW_SIDE) -> str:
    """A small JPEG of the image as a data: URL, to show the query back without storing it."""
    preview = image.convert("RGB")
    preview.thumbnail((side, side), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    preview.save(buffer, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
