"""The pages: search form, results, catalog images by id, health, and error pages with the right status."""
from __future__ import annotations

import io
import re

import pytest
from PIL import Image

from config import Config
from search_app import create_app
from search_app.items import MIN_IMAGE_SIDE
from tests.search_app.conftest import CLASS_NAMES, MAX_UPLOAD_BYTES, RESULTS, encode, post_image


def assert_search_works(client, image: Image.Image) -> None:
    """The server still answers a good search (after a bad request)."""
    response = post_image(client, "/search", encode(image), "again.png")
    assert response.status_code == 200
    assert "most similar items" in response.get_data(as_text=True)


def test_the_search_page_has_a_labelled_image_form_and_names_the_catalog(client):
    response = client.get("/")
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert re.search(r'<form[^>]+action="/search"[^>]+method="post"[^>]+enctype="multipart/form-data"', page)
    assert re.search(r'<input id="image" name="image" type="file" accept="image/\*"', page)
    assert '<label for="image"' in page and 'type="submit"' in page
    assert "test-colours" in page and "30 items in 6 categories" in page
    assert all(name in page for name in CLASS_NAMES)


def test_static_files_ship_with_the_app(client):
    page = client.get("/").get_data(as_text=True)
    assert "http://" not in page.replace('xmlns="http://www.w3.org', "") and "https://" not in page
    for path in ("/static/style.css", "/static/search.js", "/static/favicon.svg"):
        with client.get(path) as response:
            assert response.status_code == 200 and response.data, path


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_searching_shows_the_query_predictions_caption_and_neighbours(client, catalog_images, fmt):
    options = {"quality": 95} if fmt == "JPEG" else {}
    response = post_image(client, "/search", encode(catalog_images[13], fmt, **options), f"query.{fmt.lower()}")
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert '<img src="data:image/jpeg;base64,' in page and 'alt="Your uploaded photo"' in page
    # blue-03 is catalog row 13; the first card; the caption is the blue jumpers' consensus.
    assert re.search(r"“Blue jumper no\. \d”", page)
    cards = re.findall(r'<p class="card-title">([^<]*)</p>', page)
    assert cards[0] == "Blue jumper no. 3" and len(cards) == RESULTS
    assert page.count('src="/items/') == RESULTS
    predictions = re.findall(r'<span class="prediction-name">([^<]*)</span>', page)
    assert predictions[0] == "blue"
    assert re.search(r'class="bar-fill" style="width: 100\.0%"', page)


def test_a_catalog_without_titles_says_it_has_no_captions(config, make_engine, catalog_images):
    client = create_app(config, engine=make_engine(has_titles=False)).test_client()
    page = post_image(client, "/search", encode(catalog_images[0])).get_data(as_text=True)
    assert "This catalog has no captions." in page and "“" not in page


def test_item_images_are_jpegs_by_id_with_cache_headers(client):
    response = client.get("/items/teal-04/image")
    assert response.status_code == 200 and response.mimetype == "image/jpeg"
    assert "max-age=86400" in response.headers["Cache-Control"]
    image = Image.open(io.BytesIO(response.data))
    assert image.format == "JPEG" and min(image.size) >= MIN_IMAGE_SIDE
    again = client.get("/items/teal-04/image", headers={"If-None-Match": response.headers["ETag"]})
    assert again.status_code == 304


@pytest.mark.parametrize(
    "path",
    [
        "/items/nope/image",
        "/items/../config.py/image",
        "/items/%2e%2e%2fconfig.py/image",
        "/items/..%2F..%2Fconfig.py/image",
        "/items/%2e%2e/image",
        "/items/..%5cconfig.py/image",
        "/items/blue-03%00/image",
        "/items//etc/passwd/image",
    ],
)
def test_unknown_ids_and_path_tricks_are_404(client, path, catalog_images):
    response = client.get(path)
    assert response.status_code == 404
    assert response.mimetype == "text/html"
    assert b"ConfigError" not in response.data and b"root:" not in response.data
    assert_search_works(client, catalog_images[0])


def test_an_unknown_id_is_named_in_the_404_page(client):
    page = client.get("/items/red-99/image").get_data(as_text=True)
    assert "No catalog item has the id &#39;red-99&#39;" in page


def test_healthz(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    health = response.get_json()
    assert health["status"] == "ok" and health["model_loaded"] and health["index_loaded"]
    assert health["items"] == 30 and health["embedding_size"] == 192 and health["catalog_kind"] == "test-colours"


@pytest.mark.parametrize(
    "data, filename, status, message",
    [
        (None, None, 400, "No image was uploaded"),
        (b"", "empty.jpg", 400, "the file &#39;empty.jpg&#39; is empty"),
        (b"just some text\n", "notes.txt", 400, "is not an image Lookbook can read"),
        (b"\0" * (MAX_UPLOAD_BYTES + 1), "big.jpg", 413, "larger than the limit of 262,144 bytes"),
    ],
    ids=["no file", "empty", "text", "too big a body"],
)
def test_bad_uploads_get_an_error_page_and_the_server_keeps_serving(client, catalog_images, data, filename,
                                                                     status, message):
    if data is None:
        response = client.post("/search", data={}, content_type="multipart/form-data")
    else:
        response = post_image(client, "/search", data, filename)
    assert response.status_code == status
    page = response.get_data(as_text=True)
    assert response.mimetype == "text/html" and message in page
    assert 'role="alert"' in page and 'action="/search"' in page
    assert_search_works(client, catalog_images[0])


def test_get_on_the_search_form_is_405_with_allow(client):
    response = client.get("/search")
    assert response.status_code == 405
    assert "POST" in response.headers["Allow"]
    assert "GET is not allowed on /search" in response.get_data(as_text=True)


def test_an_unknown_page_is_a_404_page(client):
    response = client.get("/no/such/page")
    assert response.status_code == 404 and response.mimetype == "text/html"
    assert "Back to the search page" in response.get_data(as_text=True)


def test_an_engine_failure_is_a_500_that_hides_the_details(config, make_engine, catalog_images):
    def broken(image):
        raise RuntimeError("secret internals")

    app = create_app(config, engine=make_engine(embed_image=broken))
    client = app.test_client()
    response = post_image(client, "/search", encode(catalog_images[0]))
    assert response.status_code == 500
    page = response.get_data(as_text=True)
    assert "the operator will find the details in its log" in page and "secret internals" not in page


def test_the_upload_limit_comes_from_the_config(config, engine):
    assert create_app(config, engine=engine).config["MAX_CONTENT_LENGTH"] == MAX_UPLOAD_BYTES


def test_without_artifacts_the_app_says_to_build_the_index(tmp_path):
    expected = r"embeddings\.h5 and .*index\.faiss not found; run `python manage.py build-index` first"
    with pytest.raises(FileNotFoundError, match=expected):
        create_app(Config(artifacts_dir=tmp_path / "empty"))
