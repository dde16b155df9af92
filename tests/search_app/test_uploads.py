"""read_upload: every usable image comes out upright RGB; every unusable one is a clear UploadError."""
from __future__ import annotations

import base64
import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image
from werkzeug.datastructures import FileStorage

from search_app.uploads import (
    UploadError,
    decode_image,
    drain_refused_body,
    oversized_body_allowance,
    preview_data_url,
    read_upload,
    to_rgb,
)
from tests.search_app.conftest import encode

LIMIT = 1_000_000


def storage(data: bytes, filename: str = "photo.png", content_type: str = "image/png") -> FileStorage:
    return FileStorage(stream=io.BytesIO(data), filename=filename, content_type=content_type)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares a size in its header and holds no real pixel data: a decompression bomb's calling card."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    pixels = zlib.compress(b"\0" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


def rotated_jpeg() -> bytes:
    """A 60×40 JPEG, red left half and blue right half, whose EXIF says: turn 90° clockwise to view."""
    image = Image.new("RGB", (60, 40), (220, 30, 30))
    image.paste((30, 30, 220), (30, 0, 60, 40))
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90° clockwise to display
    return encode(image, "JPEG", quality=95, exif=exif.tobytes())


def test_exif_orientation_is_applied():
    image = read_upload(storage(rotated_jpeg(), "phone.jpg", "image/jpeg"), LIMIT)
    assert image.size == (40, 60)
    # Turned clockwise, the left (red) half is now on top.
    assert image.getpixel((20, 10))[0] > 180 and image.getpixel((20, 50))[2] > 180


@pytest.mark.parametrize(
    "make, corner, centre",
    [
        # Transparent RGBA: the transparent part becomes white.
        (lambda: _with_centre(Image.new("RGBA", (40, 40), (0, 0, 0, 0)), (200, 20, 20, 255)),
         (255, 255, 255), (200, 20, 20)),
        (lambda: _with_centre(Image.new("LA", (40, 40), (0, 0)), (100, 255)), (255, 255, 255), (100, 100, 100)),
        (lambda: Image.new("L", (40, 40), 77), (77, 77, 77), (77, 77, 77)),
        (lambda: Image.new("1", (40, 40), 1), (255, 255, 255), (255, 255, 255)),
        (lambda: Image.new("CMYK", (40, 40), (0, 255, 255, 0)), (255, 0, 0), (255, 0, 0)),
        # 16- and 32-bit gray: scaled to 8 bits, not clipped to white.
        (lambda: Image.fromarray(np.full((40, 40), 32896, dtype=np.uint16)), (128, 128, 128), (128, 128, 128)),
        (lambda: Image.fromarray(np.full((40, 40), 200, dtype=np.int32)), (200, 200, 200), (200, 200, 200)),
    ],
    ids=["RGBA", "LA", "L", "1", "CMYK", "I;16", "I"],
)
def test_every_colour_mode_becomes_rgb(make, corner, centre):
    image = to_rgb(make())
    assert image.mode == "RGB"
    assert image.getpixel((0, 0)) == corner
    assert image.getpixel((20, 20)) == centre


def _with_centre(image: Image.Image, colour: tuple) -> Image.Image:
    image.paste(colour, (10, 10, 30, 30))
    return image


def test_transparent_palette_gif_becomes_rgb_on_white():
    image = Image.new("P", (40, 40), 0)
    image.putpalette([0, 0, 0, 30, 200, 30] + [0] * 762)
    image.paste(1, (10, 10, 30, 30))
    decoded = decode_image(encode(image, "GIF", transparency=0), "logo.gif", LIMIT)
    assert decoded.mode == "RGB"
    assert decoded.getpixel((0, 0)) == (255, 255, 255)
    assert decoded.getpixel((20, 20)) == (30, 200, 30)


@pytest.mark.parametrize(
    "fmt, mode", [("PNG", "I;16"), ("JPEG", "CMYK"), ("GIF", "P"), ("WEBP", "RGBA"), ("BMP", "RGB")]
)
def test_files_in_common_formats_decode(fmt, mode):
    source = {"I;16": Image.fromarray(np.full((30, 50), 65535, dtype=np.uint16))}.get(mode)
    if source is None:
        source = Image.new("RGB", (50, 30), (40, 90, 160)).convert(mode)
    image = decode_image(encode(source, fmt), f"photo.{fmt.lower()}", LIMIT)
    assert image.mode == "RGB" and image.size == (50, 30)


@pytest.mark.parametrize(
    "upload, message",
    [
        (None, "no image was uploaded"),
        (FileStorage(stream=io.BytesIO(b""), filename=""), "no image was uploaded"),
        (storage(b"", "empty.png"), "'empty.png' is empty"),
        (storage(b"hello, not an image\n", "notes.txt", "text/plain"),
         "'notes.txt' (text/plain, 20 bytes) is not an image"),
        (storage(b"\x89PNG\r\n\x1a\n" + b"\0" * 30, "broken.png"),
         "'broken.png' (image/png, 38 bytes) is not an image"),
    ],
    ids=["no file", "no filename", "zero bytes", "text", "broken header"],
)
def test_missing_and_non_image_uploads_are_400(upload, message):
    with pytest.raises(UploadError) as caught:
        read_upload(upload, LIMIT)
    assert caught.value.status == 400
    assert message in caught.value.message


@pytest.mark.parametrize("fmt", ["TIFF", "ICO", "PPM", "TGA", "PCX"])
def test_formats_the_page_does_not_accept_are_not_decoded(fmt):
    # Pillow reads these (and PSD, EPS through Ghostscript where installed); the page accepts only its list.
    with pytest.raises(UploadError) as caught:
        decode_image(encode(Image.new("RGB", (32, 32), (40, 90, 160)), fmt), f"photo.{fmt.lower()}", LIMIT)
    assert caught.value.status == 400 and "upload a JPEG, PNG, GIF, WebP or BMP file" in caught.value.message


def test_a_phone_jpeg_with_several_pictures_still_decodes():
    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), "red").save(buffer, "MPO", save_all=True,
                                           append_images=[Image.new("RGB", (40, 30), "blue")])
    assert decode_image(buffer.getvalue(), "phone.jpg", LIMIT).size == (40, 30)


def test_a_truncated_jpeg_is_400_and_says_so():
    rng = np.random.default_rng(0)
    noise = Image.fromarray(rng.integers(0, 255, size=(200, 200, 3), dtype=np.uint8))
    data = encode(noise, "JPEG", quality=90)
    with pytest.raises(UploadError) as caught:
        decode_image(data[: len(data) // 2], "cut.jpg", LIMIT)
    assert caught.value.status == 400
    assert "'cut.jpg' (JPEG 200×200) could not be decoded" in caught.value.message
    assert "truncated" in caught.value.message


@pytest.mark.parametrize(
    "data, found",
    [
        (None, "1,001×1,000 = 1,001,000 pixels"),
        # Past Pillow's warning threshold, and past its hard limit (DecompressionBombError).
        (png_header_only(10_000, 10_000), "10,000×10,000"),
        (png_header_only(15_000, 15_000), "far too many pixels"),
    ],
    ids=["over the limit", "pillow warns", "pillow refuses"],
)
@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_images_over_the_pixel_limit_are_refused_before_decoding(data, found):
    if data is None:
        data = encode(Image.new("L", (1001, 1000), 200))
    with pytest.raises(UploadError) as caught:
        decode_image(data, "huge.png", LIMIT)
    assert caught.value.status == 413
    assert found in caught.value.message and "the limit is 1,000,000 pixels" in caught.value.message


@pytest.mark.filterwarnings("error::PIL.Image.DecompressionBombWarning")
def test_pillows_bomb_warning_raised_as_an_error_is_a_413_too():
    with pytest.raises(UploadError) as caught:
        decode_image(png_header_only(10_000, 10_000), "huge.png", 200_000_000)
    assert caught.value.status == 413 and "far too many pixels" in caught.value.message


@pytest.mark.parametrize("size, decoded", [((4400, 2200), (2200, 1100)), ((4400, 900), (4400, 900))])
def test_big_jpegs_are_decoded_at_a_reduced_scale(size, decoded):
    image = decode_image(encode(Image.new("RGB", size, (10, 20, 30)), "JPEG"), "big.jpg", 10_000_000)
    assert image.size == decoded


def test_preview_is_a_small_jpeg_data_url():
    url = preview_data_url(Image.new("RGB", (1200, 600), (1, 2, 3)))
    assert url.startswith("data:image/jpeg;base64,")
    preview = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert preview.format == "JPEG" and preview.size == (320, 160)


@pytest.mark.parametrize(("size", "most", "expected_read", "expected_left"), [
    (300_000, 1_000_000, 300_000, 0),  # read through to the end of the body
    (300_000, 100_000, 100_000, 200_000),  # never more than the allowance
    (0, 100, 0, 0),
])
def test_a_refused_body_is_read_through_up_to_the_allowance(size, most, expected_read, expected_left):
    stream = io.BytesIO(b"x" * size)
    assert drain_refused_body(stream, most) == expected_read
    assert len(stream.read()) == expected_left


def test_the_allowance_for_refused_bodies_is_above_the_upload_limit():
    assert oversized_body_allowance(LIMIT) > 2 * LIMIT
