"""Searches beyond a plain upload: "more like this" (GET /api/items/<id>/similar), category filter, paging, crop,
previews; GET /api/items/<id> and its image; and every bad request answered with a JSON error while the server keeps serving."""
from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from tests.search_app.conftest import CLASS_NAMES, PER_CLASS, RESULTS, embed_pixels, encode, post_image
from tests.search_app.test_uploads import rotated_jpeg


def search_item(client, item_id: str, **settings):
    return client.get(f"/api/items/{item_id}/similar", query_string=settings)


def assert_still_serving(client, catalog_images) -> None:
    response = post_image(client, "/api/search", encode(catalog_images[0]))
    assert response.status_code == 200 and response.get_json()["results"][0]["item_id"] == "red-00"


def brute_force_ranking(catalog_images, query_vector: np.ndarray, item_ids) -> list[str]:
    """Item ids by decreasing cosine similarity, computed by hand."""
    xb = np.stack([embed_pixels(image) for image in catalog_images])
    return [str(item_ids[row]) for row in np.argsort(-(xb @ query_vector), kind="stable")]


def test_more_like_this_searches_by_item_id_and_leaves_the_item_out(client, catalog_images, item_table):
    response = search_item(client, item_id="green-02", k=6)
    assert response.status_code == 200
    answer = response.get_json()
    assert answer["query"]["kind"] == "item"
    assert answer["query"]["item"] == {"item_id": "green-02", "title": "Green jumper no. 2", "category": "green",
                                       "split": "train", "image_url": "/api/items/green-02/image"}
    ids = [result["item_id"] for result in answer["results"]]
    expected = brute_force_ranking(catalog_images, embed_pixels(catalog_images[PER_CLASS + 2]), item_table.item_id)
    assert ids == [item for item in expected if item != "green-02"][:6]
    assert answer["available"] == len(catalog_images) - 1
    assert answer["predictions"][0]["category"] == "green"


def test_a_json_search_is_refused_with_the_way_to_search_by_item(client):
    response = client.post("/api/search", json={"item_id": "teal-01", "k": 3})
    assert response.status_code == 400 and "GET /api/items/<item_id>/similar" in response.get_json()["error"]


def test_a_category_filter_returns_that_category_in_exact_order(client, catalog_images, item_table):
    query = Image.blend(catalog_images[0], catalog_images[PER_CLASS * 3], 0.5)
    answer = post_image(client, "/api/search", encode(query), category="yellow", k="10").get_json()
    assert answer["category"] == "yellow" and answer["available"] == PER_CLASS
    ids = [result["item_id"] for result in answer["results"]]
    expected = [i for i in brute_force_ranking(catalog_images, embed_pixels(query), item_table.item_id)
                if i.startswith("yellow-")]
    assert ids == expected and answer["next_offset"] is None
    # The predicted categories still come from the whole catalog.
    unfiltered = post_image(client, "/api/search", encode(query)).get_json()
    assert answer["predictions"] == unfiltered["predictions"]


def test_pages_concatenate_to_the_unpaged_ranking(client, catalog_images):
    whole = [r["item_id"] for r in post_image(client, "/api/search", encode(catalog_images[7]), k="30").get_json()["results"]]
    pages, offset = [], 0
    while offset is not None:
        answer = post_image(client, "/api/search", encode(catalog_images[7]), k="7", offset=str(offset)).get_json()
        assert [r["rank"] for r in answer["results"]] == list(range(offset + 1, offset + len(answer["results"]) + 1))
        pages += [r["item_id"] for r in answer["results"]]
        offset = answer["next_offset"]
    assert pages == whole and len(pages) == len(catalog_images)
    beyond = post_image(client, "/api/search", encode(catalog_images[7]), offset="40").get_json()
    assert beyond["results"] == [] and beyond["next_offset"] is None


def test_paging_more_like_this_within_a_category(client):
    first = search_item(client, item_id="blue-00", category="blue", k=2).get_json()
    rest = search_item(client, item_id="blue-00", category="blue", k=2, offset=first["next_offset"]).get_json()
    ids = [r["item_id"] for r in first["results"] + rest["results"]]
    assert sorted(ids) == ["blue-01", "blue-02", "blue-03", "blue-04"] and rest["next_offset"] is None
    assert first["available"] == PER_CLASS - 1


def assert_model_saw_the_lower_half_upright(embedder) -> None:
    """Upright, rotated_jpeg() is red on top and blue below: its lower half is 40×30 and all blue."""
    received = embedder.received[-1]
    assert received.size == (40, 30)
    blue = np.asarray(received, dtype=int)[2:-2, 2:-2]
    assert (blue[..., 2] > 160).all() and (blue[..., 0] < 90).all()


def test_a_crop_is_applied_after_the_photo_is_turned_upright(client, embedder):
    response = post_image(client, "/api/search", rotated_jpeg(), "phone.jpg", crop_x="0", crop_y="0.5",
                          crop_w="1", crop_h="0.5", preview="1")
    assert response.status_code == 200
    assert_model_saw_the_lower_half_upright(embedder)
    query = response.get_json()["query"]
    assert query == {"kind": "image", "width": 40, "height": 30, "crop": {"x": 0.0, "y": 0.5, "w": 1.0, "h": 0.5},
                     "preview": query["preview"]}
    preview = Image.open(io.BytesIO(base64.b64decode(query["preview"].split(",", 1)[1])))
    assert preview.format == "JPEG" and preview.size == (40, 30)


@pytest.mark.parametrize(
    "fields",
    [{"crop_y": "0.5"}, {"crop_y": "0.5", "crop_h": "0.9"}, {"crop_x": "0", "crop_y": "0.5", "crop_w": "3e-1", "crop_h": "1"}],
    ids=["only the top edge", "past the bottom", "narrow, past the bottom"],
)
def test_a_crop_missing_edges_takes_the_images_and_is_cut_at_its_border(client, embedder, fields):
    response = post_image(client, "/api/search", rotated_jpeg(), "phone.jpg", **fields)
    assert response.status_code == 200
    width = float(fields.get("crop_w", 1))
    assert response.get_json()["query"]["crop"] == {"x": 0.0, "y": 0.5, "w": width, "h": 0.5}
    received = embedder.received[-1]
    assert received.size == (round(40 * width), 30)
    blue = np.asarray(received, dtype=int)[2:-2, 2:-2]
    assert (blue[..., 2] > 160).all() and (blue[..., 0] < 90).all()


def test_the_camera_input_is_used_when_the_file_picker_is_empty(client, catalog_images):
    data = {"image": [(io.BytesIO(b""), ""), (io.BytesIO(encode(catalog_images[9])), "camera.jpg")]}
    response = client.post("/api/search", data=data, content_type="multipart/form-data")
    assert response.status_code == 200 and response.get_json()["results"][0]["item_id"] == "green-04"


def test_items_are_described_and_their_images_served(client):
    item = client.get("/api/items/purple-03")
    assert item.status_code == 200
    assert item.get_json() == {"item_id": "purple-03", "title": "Purple jumper no. 3", "category": "purple",
                               "split": "val", "image_url": "/api/items/purple-03/image"}
    image = client.get("/api/items/purple-03/image")
    assert image.status_code == 200 and image.mimetype == "image/jpeg"
    assert Image.open(io.BytesIO(image.data)).format == "JPEG"


def test_item_images_are_encoded_once_and_a_vanished_image_is_a_404(client, engine):
    opened = []
    load = engine.load_item_image
    engine.load_item_image = lambda row: opened.append(row) or load(row)
    first, again = client.get("/api/items/purple-03/image"), client.get("/api/items/purple-03/image")
    assert first.status_code == again.status_code == 200 and first.data == again.data
    assert len(opened) == 1  # the second answer came from the cache of encoded images

    def vanished(row):
        raise OSError("No such file or directory: img/teal-02.jpg")

    engine.load_item_image = vanished
    response = client.get("/api/items/teal-02/image")
    assert response.status_code == 404 and response.mimetype == "application/json"
    assert "the image of catalog item 'teal-02' cannot be read" in response.get_json()["error"]
    assert client.get("/api/items/purple-03/image").status_code == 200  # cached, still served


@pytest.mark.parametrize("suffix", ["", "/image"])
@pytest.mark.parametrize("item_id", ["nope", "..%2F..%2Fconfig.py", "%2e%2e", "blue-03%00", "..%5cconfig.py",
                                     "red-00%20"])
def test_unknown_items_and_path_tricks_are_json_404s(client, catalog_images, item_id, suffix):
    response = client.get(f"/api/items/{item_id}{suffix}")
    assert response.status_code == 404 and response.mimetype == "application/json"
    error = response.get_json()["error"]
    # Ids are looked up in the item table, never used as paths; an id with a slash matches no route at all.
    assert error.startswith("no catalog item has the id") or error.startswith("The requested URL was not found")
    assert b"root:" not in response.data
    assert_still_serving(client, catalog_images)


@pytest.mark.parametrize(
    "send, status, message",
    [
        (lambda c: search_item(c, item_id="nope"), 404, "no catalog item has the id 'nope'"),
        (lambda c: search_item(c, item_id="x" * 300), 400, "an item id has at most 200 characters"),
        (lambda c: search_item(c, item_id="red-00", colour="red"), 400, "unknown query parameter(s) 'colour'"),
        (lambda c: search_item(c, item_id="red-00", crop_x="0.5"), 400, "unknown query parameter(s) 'crop_x'"),
        (lambda c: search_item(c, item_id="red-00", k=0), 400, "k must be a whole number from 1 to 100, got '0'"),
        (lambda c: search_item(c, item_id="red-00", k="true"), 400, "k must be a whole number"),
        (lambda c: search_item(c, item_id="red-00", offset=-1), 400, "offset must be a whole number from 0 to 1000"),
        (lambda c: search_item(c, item_id="red-00", offset="1001"), 400, "offset must be a whole number"),
        (lambda c: search_item(c, item_id="red-00", category="hats"), 400,
         "unknown category 'hats'; the categories are red, green, blue, yellow, purple, teal"),
        (lambda c: c.post("/api/search", data="[1, 2]", content_type="application/json"), 400,
         "for the items most like a catalog item, GET /api/items/<item_id>/similar"),
        # Never parsed, so never nested deeper than Python's parser recurses.
        (lambda c: c.post("/api/search", data="[" * 100_000, content_type="application/json"), 400,
         "a photo search takes the photo as the body"),
    ],
    ids=["unknown item", "long id", "unknown setting", "photo setting", "k 0", "k true", "negative offset",
         "offset too deep", "unknown category", "JSON", "deeply nested JSON"],
)
def test_bad_item_searches_are_clear_json_errors(client, catalog_images, send, status, message):
    response = send(client)
    assert response.status_code == status and response.mimetype == "application/json"
    assert message in response.get_json()["error"]
    assert_still_serving(client, catalog_images)


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"crop_x": "0", "crop_y": "0", "crop_w": "0", "crop_h": "1"}, "crop_w and crop_h must be above 0"),
        ({"crop_h": "0"}, "crop_w and crop_h must be above 0"),
        ({"crop_x": "-0.1", "crop_y": "0", "crop_w": "0.5", "crop_h": "1"}, "crop_x must be a fraction"),
        ({"crop_x": "0", "crop_y": "nan", "crop_w": "0.5", "crop_h": "1"}, "crop_y must be a fraction"),
        ({"crop_x": "0", "crop_y": "0", "crop_w": "half", "crop_h": "1"}, "crop_w must be a fraction"),
        ({"category": "hats"}, "unknown category 'hats'"),
        ({"offset": "two"}, "offset must be a whole number from 0 to 1000, got 'two'"),
    ],
    ids=["zero width", "zero height alone", "negative", "nan", "text", "bad category", "bad offset"],
)
def test_bad_upload_fields_are_400s(client, catalog_images, fields, message):
    response = post_image(client, "/api/search", encode(catalog_images[0]), **fields)
    assert response.status_code == 400 and message in response.get_json()["error"]
    assert_still_serving(client, catalog_images)


@pytest.mark.parametrize(
    "data, filename, looks_like",
    [
        (b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"/>', "logo.svg", "an XML file (SVG?)"),
        (b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>', "logo.svg", "an SVG drawing"),
        (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n", "catalogue.pdf", "a PDF document"),
        (b"<!DOCTYPE html><html></html>", "page.png", "a web page"),
    ],
)
def test_non_images_say_what_they_look_like(client, catalog_images, data, filename, looks_like):
    response = post_image(client, "/api/search", data, filename)
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert f"{filename!r}" in error and "is not an image Lookbook can read" in error and looks_like in error
    assert_still_serving(client, catalog_images)


def test_the_category_names_are_in_healthz(client):
    assert client.get("/healthz").get_json()["class_names"] == CLASS_NAMES


def test_the_default_number_of_results_comes_from_the_config(client, catalog_images):
    assert len(search_item(client, item_id="red-00").get_json()["results"]) == RESULTS


@pytest.mark.parametrize(
    "send, message",
    [
        (lambda c, images: c.post("/api/search?colour=red", data=encode(images[0]), content_type="image/png"),
         "unknown query parameter(s) 'colour'"),
        (lambda c, images: c.post("/api/search", data={"image": (io.BytesIO(encode(images[0])), "a.png"), "k": "3"},
                                  content_type="multipart/form-data"),
         "unknown form field(s) 'k'; known: image (settings go in the query string)"),
        (lambda c, images: c.post("/api/search?preview=null", data=encode(images[0]), content_type="image/png"),
         "preview must be true or false, got 'null'"),
    ],
    ids=["photo body with an unknown parameter", "a setting as a form field", "preview not a yes or no"],
)
def test_settings_the_server_would_not_read_are_refused_not_ignored(client, catalog_images, send, message):
    response = send(client, catalog_images)
    assert response.status_code == 400 and message in response.get_json()["error"]
    assert_still_serving(client, catalog_images)


def test_a_hung_model_gives_searches_a_503_with_retry_after_and_healthz_still_answers(config, make_engine,
                                                                                      catalog_images):
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    from search_app import create_app
    from search_app.batching import QueryEmbedder

    release = threading.Event()

    def hangs_on_blue(image):  # a model that stops answering when it sees a blue photo
        red, green, blue = np.asarray(image.convert("RGB"), dtype=float).reshape(-1, 3).mean(axis=0)
        if blue > red + 50 and blue > green + 50:
            release.wait(30)
        return embed_pixels(image)

    # The model's pass, not the request's preparing, hangs: as where a real network or GPU gets stuck.
    model = QueryEmbedder(prepare=lambda image: image, embed=lambda images: np.stack([hangs_on_blue(i) for i in images]))
    engine = make_engine(embed_image=model, max_batch=8, search_deadline_s=0.5)
    client = create_app(config, engine=engine).test_client()
    try:
        with ThreadPoolExecutor(1) as pool:
            stuck = pool.submit(post_image, create_app(config, engine=engine).test_client(), "/api/search",
                                encode(catalog_images[CLASS_NAMES.index("blue") * PER_CLASS]))
            time.sleep(0.3)
            response = post_image(client, "/api/search", encode(catalog_images[0]))
            assert response.status_code == 503 and response.headers["Retry-After"] == "5"
            assert "not answering right now" in response.get_json()["error"]
            health = client.get("/healthz")
            assert health.status_code == 200 and health.get_json()["batching"]["running_seconds"] > 0
            release.set()
            assert stuck.result(10).status_code == 200
        assert post_image(client, "/api/search", encode(catalog_images[0])).status_code == 200
    finally:
        release.set()
        engine.close()
