"""POST /api/search: JSON results, the k parameter, bad uploads as JSON errors, and what the model is given."""
from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image

from search_app import create_app
from tests.search_app.conftest import (
    CLASS_NAMES,
    MAX_UPLOAD_BYTES,
    PER_CLASS,
    RESULTS,
    embed_pixels,
    encode,
    post_image,
)
from tests.search_app.test_uploads import png_header_only, rotated_jpeg


def assert_api_works(client, image: Image.Image) -> None:
    """The API still answers a good search (after a bad request)."""
    response = post_image(client, "/api/search", encode(image), "again.png")
    assert response.status_code == 200 and response.get_json()["results"]


def test_the_exact_catalog_image_comes_first_with_similarity_one(client, catalog_images, item_table):
    response = post_image(client, "/api/search", encode(catalog_images[22]), "query.png")
    assert response.status_code == 200 and response.mimetype == "application/json"
    answer = response.get_json()
    first = answer["results"][0]
    assert first["item_id"] == item_table.item_id[22] == "purple-02"
    assert first["similarity"] == pytest.approx(1.0, abs=1e-5)
    assert first["title"] == "Purple jumper no. 2" and first["category"] == "purple"
    assert first["image_url"] == "/api/items/purple-02/image" and first["rank"] == 1
    assert answer["predictions"][0]["category"] == "purple"
    assert 0 < answer["predictions"][0]["score"] <= 1
    assert answer["caption"]["method"] == "neighbour-consensus" and answer["caption"]["attributes"] == []
    assert re.fullmatch(r"Purple jumper no\. \d", answer["caption"]["text"])
    assert "captions" not in answer
    assert len(answer["results"]) == RESULTS
    assert set(answer["timing_ms"]) == {"embed", "search", "total"}
    assert all(value >= 0 for value in answer["timing_ms"].values())


def test_image_urls_in_the_answer_serve_the_images(client, catalog_images):
    answer = post_image(client, "/api/search", encode(catalog_images[3])).get_json()
    for result in answer["results"][:3]:
        response = client.get(result["image_url"])
        assert response.status_code == 200 and response.mimetype == "image/jpeg"


def test_a_catalog_without_titles_answers_caption_null(config, make_engine, catalog_images):
    client = create_app(config, engine=make_engine(has_titles=False)).test_client()
    answer = post_image(client, "/api/search", encode(catalog_images[0])).get_json()
    assert answer["caption"] is None and answer["captions"] == "this catalog has no captions"


@pytest.mark.parametrize("k, expected", [("1", 1), ("3", 3), (" 20 ", 20), ("100", 30), (None, RESULTS)])
def test_k_sets_the_number_of_results(client, catalog_images, k, expected):
    settings = {} if k is None else {"k": k}
    answer = post_image(client, "/api/search", encode(catalog_images[0]), **settings).get_json()
    assert len(answer["results"]) == expected


@pytest.mark.parametrize("name", ["k", "offset", "preview", "crop_x"])
def test_a_setting_given_without_a_value_is_a_400_naming_it(client, catalog_images, name):
    response = post_image(client, "/api/search", encode(catalog_images[0]), **{name: " "})
    assert response.status_code == 400
    assert response.get_json()["error"].startswith(f"{name} given without a value")


def test_the_page_takes_blank_settings_as_their_defaults(client, catalog_images):
    response = post_image(client, "/search", encode(catalog_images[0]), k="", offset="", category="")
    assert response.status_code == 200 and response.mimetype == "text/html"


@pytest.mark.parametrize("k", ["0", "101", "-3", "abc", "2.5", "1e3"])
def test_a_bad_k_is_a_400_json_error(client, catalog_images, k):
    response = post_image(client, "/api/search", encode(catalog_images[0]), k=k)
    assert response.status_code == 400 and response.mimetype == "application/json"
    assert response.get_json() == {"error": f"k must be a whole number from 1 to 100, got {k!r}"}
    assert_api_works(client, catalog_images[0])


def _truncated_jpeg() -> bytes:
    noise = np.random.default_rng(1).integers(0, 255, size=(160, 160, 3), dtype=np.uint8)
    data = encode(Image.fromarray(noise), "JPEG", quality=90)
    return data[: len(data) // 2]


@pytest.mark.parametrize(
    "make, filename, status, message",
    [
        (None, None, 400, "no image was uploaded"),
        (lambda: b"", "empty.png", 400, "'empty.png' is empty"),
        (lambda: b"%PDF-1.4 not an image", "cv.pdf", 400, "'cv.pdf' (application/pdf, 21 bytes) is not an image"),
        (_truncated_jpeg, "cut.jpg", 400, "could not be decoded"),
        (lambda: encode(Image.new("L", (1001, 1000))), "wide.png", 413, "the limit is 1,000,000 pixels"),
        (lambda: png_header_only(15_000, 15_000), "bomb.png", 413, "the limit is 1,000,000 pixels"),
        (lambda: b"\xff" * (MAX_UPLOAD_BYTES + 10), "huge.jpg", 413, "larger than the limit of 262,144 bytes"),
    ],
    ids=["no file", "empty", "pdf", "truncated", "too many pixels", "bomb", "too big a body"],
)
def test_bad_uploads_are_json_errors_and_the_server_keeps_serving(client, catalog_images, make, filename, status,
                                                                   message):
    if make is None:
        response = client.post("/api/search", query_string={"k": "3"}, data={}, content_type="multipart/form-data")
    else:
        content_type = "application/pdf" if filename.endswith(".pdf") else None
        response = post_image(client, "/api/search", make(), filename, content_type)
    assert response.status_code == status
    assert response.mimetype == "application/json"
    assert message in response.get_json()["error"]
    assert_api_works(client, catalog_images[0])


def test_api_404_and_405_are_json(client):
    missing = client.get("/api/nothing")
    assert missing.status_code == 404 and "error" in missing.get_json()
    wrong_method = client.get("/api/search")
    assert wrong_method.status_code == 405 and "POST" in wrong_method.headers["Allow"]
    assert wrong_method.get_json() == {"error": "GET is not allowed on /api/search; allowed: OPTIONS, POST"}


def test_an_engine_failure_is_a_json_500(config, make_engine, catalog_images):
    def broken(image):
        raise RuntimeError("secret internals")

    client = create_app(config, engine=make_engine(embed_image=broken)).test_client()
    response = post_image(client, "/api/search", encode(catalog_images[0]))
    assert response.status_code == 500 and "secret internals" not in response.get_json()["error"]


def test_the_model_receives_the_photo_upright(client, embedder, catalog_images):
    assert post_image(client, "/api/search", rotated_jpeg(), "phone.jpg").status_code == 200
    received = embedder.received[-1]
    assert received.mode == "RGB" and received.size == (40, 60)
    assert received.getpixel((20, 10))[0] > 180 and received.getpixel((20, 50))[2] > 180


def _rgba() -> Image.Image:
    image = Image.new("RGBA", (40, 40), (0, 0, 0, 0))
    image.paste((40, 70, 200, 255), (8, 8, 32, 32))
    return image


def _palette(image: Image.Image) -> Image.Image:
    return image.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)


@pytest.mark.parametrize(
    "make, fmt, corner",
    [
        (lambda images: _rgba(), "PNG", (255, 255, 255)),
        (lambda images: _palette(images[2 * PER_CLASS]), "GIF", None),
        (lambda images: images[2 * PER_CLASS].convert("CMYK"), "JPEG", None),
        (lambda images: Image.fromarray(np.full((40, 40), 65535, dtype=np.uint16)), "PNG", (255, 255, 255)),
        (lambda images: images[2 * PER_CLASS].convert("L"), "PNG", None),
    ],
    ids=["RGBA PNG", "palette GIF", "CMYK JPEG", "16-bit PNG", "gray PNG"],
)
def test_unusual_image_kinds_are_accepted_as_rgb(client, embedder, catalog_images, make, fmt, corner):
    source = make(catalog_images)
    response = post_image(client, "/api/search", encode(source, fmt), f"query.{fmt.lower()}")
    assert response.status_code == 200
    received = embedder.received[-1]
    assert received.mode == "RGB" and received.size == source.size
    if corner is not None:
        assert received.getpixel((0, 0)) == corner
    if source.mode in ("P", "CMYK"):
        # Colour survives the conversion: the query is still nearest to the blue item it came from.
        assert response.get_json()["results"][0]["item_id"] == "blue-00"
        assert response.get_json()["predictions"][0]["category"] == "blue"
        assert float(embed_pixels(received) @ embed_pixels(catalog_images[2 * PER_CLASS])) > 0.98


def test_categories_in_predictions_are_catalog_classes(client, catalog_images):
    query = Image.blend(catalog_images[0], catalog_images[-1], 0.5)
    answer = post_image(client, "/api/search", encode(query)).get_json()
    categories = [p["category"] for p in answer["predictions"]]
    assert set(categories) <= set(CLASS_NAMES) and len(set(categories)) == len(categories)
    scores = [p["score"] for p in answer["predictions"]]
    assert scores == sorted(scores, reverse=True) and sum(scores) <= 1 + 1e-5


@pytest.mark.parametrize("script_root", ["", "/shop"])
def test_result_image_urls_are_what_url_for_builds(app, script_root):
    from flask import url_for

    from search_app.api import item_image_urls

    ids = ["img_00001", "a b", "caf\u00e9", "x%2Fy", "50%", "it's+(1)", "item-id-slot"]
    with app.test_request_context("/", base_url=f"http://localhost{script_root}"):
        assert item_image_urls(ids) == [url_for("api.item_image", item_id=item_id) for item_id in ids]
        assert item_image_urls(ids)[0] == f"{script_root}/api/items/img_00001/image"
