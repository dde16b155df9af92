"""Hostile uploads: each accepted format in its colour modes, cut short at many points, its header kept over
a garbage body, random bytes, extreme sizes and aspect ratios. The server answers each with 200 or a JSON
4xx and stays healthy; decoding and preprocessing each one under an address-space limit raises nothing but
the upload's own refusal."""
from __future__ import annotations

import io
import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.search_app.test_uploads import png_header_only
from tests.search_app.test_serving import post

MAX_PIXELS = 40_000_000  # app.max_image_pixels's default, which the served app uses
# The largest image below within the limit: 100 × 390,000, which once padded to a square would need 456 GB.
LARGEST = 100 * 390_000
# Address space the decoding step may add: a small multiple of the largest image decoded as RGB.
BUDGET = 256 * 2**20 + 6 * 3 * LARGEST
CONTENT_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png", "GIF": "image/gif", "WEBP": "image/webp", "BMP": "image/bmp"}


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def photo(rng: np.random.Generator, size: tuple[int, int] = (61, 47)) -> Image.Image:
    """A noisy gradient with an alpha ramp: every mode converted from it has real content to encode."""
    width, height = size
    ramp = np.linspace(0, 255, width, dtype=np.float32)[None, :, None]
    noise = rng.integers(0, 60, (height, width, 4))
    return Image.fromarray(np.clip(ramp + noise, 0, 255).astype(np.uint8), "RGBA")


def valid_files(rng: np.random.Generator) -> dict[str, bytes]:
    """Each accepted format in each colour mode it stores (as Pillow writes them)."""
    image = photo(rng)
    rotated = image.convert("RGB")
    exif = rotated.getexif()
    exif[0x0112] = 6  # EXIF orientation: rotate 90° on display
    files = {
        "jpeg-L": encode(image.convert("L"), "JPEG"),
        "jpeg-RGB": encode(image.convert("RGB"), "JPEG", quality=90),
        "jpeg-RGB-progressive": encode(image.convert("RGB"), "JPEG", progressive=True),
        "jpeg-RGB-exif-rotated": encode(rotated, "JPEG", exif=exif),
        "jpeg-CMYK": encode(image.convert("CMYK"), "JPEG"),
        "png-1": encode(image.convert("1"), "PNG"),
        "png-L": encode(image.convert("L"), "PNG"),
        "png-LA": encode(image.convert("LA"), "PNG"),
        "png-P": encode(image.convert("RGB").quantize(16), "PNG"),
        "png-P-transparent": encode(image.convert("RGB").quantize(16), "PNG", transparency=0),
        "png-RGB": encode(image.convert("RGB"), "PNG"),
        "png-RGBA": encode(image, "PNG"),
        "png-I;16": encode(Image.fromarray(np.asarray(image.convert("L"), "<u2") * 257), "PNG"),
        "png-interlaced": encode(image.convert("RGB"), "PNG", interlace=1),
        "gif-P": encode(image.convert("RGB").quantize(32), "GIF"),
        "gif-P-transparent": encode(image.convert("RGB").quantize(32), "GIF", transparency=0),
        "gif-L": encode(image.convert("L"), "GIF"),
        "gif-animated": encode(image.convert("P"), "GIF", save_all=True,
                               append_images=[image.rotate(90).convert("P")], duration=100, loop=0),
        "webp-RGB": encode(image.convert("RGB"), "WEBP"),
        "webp-RGBA": encode(image, "WEBP"),
        "webp-lossless": encode(image, "WEBP", lossless=True),
        "webp-animated": encode(image, "WEBP", save_all=True, append_images=[image.rotate(90)], duration=100),
        "bmp-1": encode(image.convert("1"), "BMP"),
        "bmp-L": encode(image.convert("L"), "BMP"),
        "bmp-P": encode(image.convert("RGB").quantize(16), "BMP"),
        "bmp-RGB": encode(image.convert("RGB"), "BMP"),
        "bmp-RGBA": encode(image, "BMP"),
    }
    return files


def damaged_files(valid: dict[str, bytes], rng: np.random.Generator) -> dict[str, bytes]:
    """Each valid file cut short at many points, and with its header kept over a garbage (or zeroed) body."""
    files = {}
    for name, data in valid.items():
        cuts = {1, 2, 8, 16, 33, 64, len(data) // 4, len(data) // 2, 3 * len(data) // 4, len(data) - 1}
        for cut in sorted(cut for cut in cuts if 0 < cut < len(data)):
            files[f"{name}-cut-{cut}"] = data[:cut]
        for kept in (min(64, len(data) // 2), len(data) // 4):
            garbage = rng.integers(0, 256, len(data) - kept, dtype=np.uint8).tobytes()
            files[f"{name}-header-{kept}-then-garbage"] = data[:kept] + garbage
        files[f"{name}-header-then-zeros"] = data[:64] + bytes(len(data) - 64)
    return files


def extreme_files(rng: np.random.Generator) -> dict[str, bytes]:
    """Random bytes, tiny images, absurd aspect ratios within the pixel limit, and a header over it."""
    files = {f"random-{size}": rng.integers(0, 256, size, dtype=np.uint8).tobytes() for size in (1, 7, 100, 10_000, 100_000)}
    for fmt in CONTENT_TYPES:
        files[f"{fmt.lower()}-1x1"] = encode(Image.new("RGB", (1, 1), (200, 30, 60)), fmt)
    files.update({
        "png-100x390000": encode(Image.new("L", (100, 390_000), 200), "PNG"),
        "png-1x1000000": encode(Image.new("L", (1, 1_000_000), 90), "PNG"),
        "png-1000000x1": encode(Image.new("L", (1_000_000, 1), 90), "PNG"),
        "jpeg-65500x16": encode(Image.new("RGB", (65_500, 16), (20, 90, 200)), "JPEG"),
        "gif-65535x1": encode(Image.new("P", (65_535, 1)), "GIF"),
        "webp-16383x2": encode(Image.new("RGB", (16_383, 2), (5, 5, 5)), "WEBP"),
        "bmp-2x40000": encode(photo(rng, (2, 40_000)).convert("RGB"), "BMP"),
        "png-header-15000x15000": png_header_only(15_000, 15_000),
    })
    return files


@pytest.fixture(scope="module")
def uploads() -> dict[str, bytes]:
    rng = np.random.default_rng(2026)
    valid = valid_files(rng)
    return {**valid, **damaged_files(valid, rng), **extreme_files(rng)}


def content_type(name: str) -> str:
    return CONTENT_TYPES.get(name.split("-")[0].upper(), "application/octet-stream")


DECODE_UNDER_A_LIMIT = """
import re, resource, sys
from pathlib import Path
import torch
torch.set_num_threads(1)
from PIL import Image
from embedder.transforms import Preprocessing, build_pixel_transform
from search_app.uploads import UploadError, decode_image
max_pixels, budget = int(sys.argv[2]), int(sys.argv[3])
transform = build_pixel_transform(Preprocessing(224))
transform(Image.new("RGB", (300, 200)))  # torch's first call allocates what it keeps
size = int(re.search(r"VmSize:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1)) * 1024
resource.setrlimit(resource.RLIMIT_AS, (size + budget, resource.RLIM_INFINITY))
for path in sorted(Path(sys.argv[1]).iterdir()):
    try:
        pixels = transform(decode_image(path.read_bytes(), path.name, max_pixels))
        outcome = "ok" if tuple(pixels.shape) == (3, 224, 224) else f"FAILED shape {tuple(pixels.shape)}"
    except UploadError as error:
        outcome = f"refused {error.status}"
    except BaseException as error:
        outcome = f"FAILED {type(error).__name__}: {error}"
    print(path.name, outcome, flush=True)
"""


def test_decoding_any_upload_stays_within_bounded_memory(uploads, tmp_path):
    for name, data in uploads.items():
        (tmp_path / name).write_bytes(data)
    child = subprocess.run([sys.executable, "-c", DECODE_UNDER_A_LIMIT, str(tmp_path), str(MAX_PIXELS), str(BUDGET)],
                           capture_output=True, text=True, timeout=600, cwd=Path(__file__).parents[2])
    assert child.returncode == 0, child.stderr[-3000:]
    outcomes = dict(line.split(" ", 1) for line in child.stdout.splitlines())
    assert set(outcomes) == set(uploads)
    assert not {name: outcome for name, outcome in outcomes.items() if outcome.startswith("FAILED")}
    # Every intact image is read, the huge thin ones too; only the header over the pixel limit is refused.
    intact = [name for name in uploads if "-cut-" not in name and "garbage" not in name and "zeros" not in name
              and not name.startswith("random-") and name != "png-header-15000x15000"]
    assert {name: outcomes[name] for name in intact} == {name: "ok" for name in intact}
    assert outcomes["png-header-15000x15000"] == "refused 413"


@pytest.mark.slow
def test_the_server_answers_every_hostile_upload_and_stays_healthy(uploads, prod_server):
    answers = {}
    for name, data in uploads.items():
        # A closed connection or a body that is not JSON raises here.
        status, answer = post(f"{prod_server}/api/search?k=3&filename={name}", data, content_type(name))
        answers[name] = status
        assert status == 200 or (400 <= status < 500 and answer["error"]), (name, status, answer)
    refused = {name for name, status in answers.items() if status != 200}
    assert len(refused) > len(uploads) // 2  # most of the damaged files are refused, not guessed at
    assert answers["png-100x390000"] == answers["jpeg-65500x16"] == answers["png-RGBA"] == 200
    with urllib.request.urlopen(prod_server + "/healthz", timeout=10) as response:
        assert json.load(response)["model_loaded"]
