"""Turning an uploaded file into a clean RGB image, or a clear error saying what was wrong with it."""
from __future__ import annotations

import base64
import io
import logging

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from werkzeug.datastructures import FileStorage

log = logging.getLogger(__name__)

ACCEPTED = "JPEG, PNG, GIF, WebP or BMP"
# Big JPEGs are decoded at 1/2, 1/4 or 1/8 scale, keeping at least this many pixels a side:
# faster and lighter, and the embedder looks at a few hundred pixels anyway.
DECODE_SIDE = 1024
PREVIEW_SIDE = 320
MAX_NAME = 80


class UploadError(ValueError):
    """An upload that is not a usable image; the message is for the person who sent it."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def read_upload(file_storage: FileStorage | None, max_pixels: int) -> Image.Image:
    """The uploaded image as RGB, upright by its EXIF orientation; UploadError if it is missing or unusable."""
    if file_storage is None or not file_storage.filename:
        raise UploadError(f"no image was uploaded; choose a photo ({ACCEPTED}) and try again")
    name = _shorten(file_storage.filename)
    data = file_storage.read()
    if not data:
        raise UploadError(f"no image was uploaded: the file {name!r} is empty (0 bytes)")
    return decode_image(data, name, max_pixels, file_storage.mimetype)


def decode_image(data: bytes, name: str, max_pixels: int, mimetype: str = "") -> Image.Image:
    """Decode image bytes into an upright RGB image, refusing images of more than max_pixels pixels."""
    try:
        image = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        # Raised by Pillow's own, looser limit (the warning only where warnings are errors).
        raise _too_many_pixels(name, None, max_pixels) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        received = f"{mimetype or 'unknown type'}, {len(data):,} bytes"
        raise UploadError(
            f"{name!r} ({received}) is not an image Lookbook can read; upload a {ACCEPTED} file"
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
    return to_rgb(upright(image), name)


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


def _shorten(filename: str) -> str:
    return filename if len(filename) <= MAX_NAME else filename[: MAX_NAME - 3] + "..."


def preview_data_url(image: Image.Image, side: int = PREVIEW_SIDE) -> str:
    """A small JPEG of the image as a data: URL, to show the query back without storing it."""
    preview = image.convert("RGB")
    preview.thumbnail((side, side), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    preview.save(buffer, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
