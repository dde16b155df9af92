"""POST /api/search with the photo as the body and its settings in the query string, as the search page sends it:
the same answers as a multipart upload, and every bad body a clear JSON error while the server keeps serving."""
from __future__ import annotations

import io

import pytest

from tests.search_app.conftest import CLASS_NAMES, MAX_UPLOAD_BYTES, encode, post_image
from tests.search_app.test_api import _truncated_jpeg
from tests.search_app.test_api_queries import assert_model_saw_the_lower_half_upright, assert_still_serving
from tests.search_app.test_uploads import rotated_jpeg


def post_body(client, data: bytes, content_type: str | None = "image/png", **params):
    headers = {} if content_type is None else {"Content-Type": content_type}
    return client.post("/api/search", query_string=params, data=data, headers=headers)


def without_timing(answer: dict) -> dict:
    return {key: value for key, value in answer.items() if key != "timing_ms"}


@pytest.mark.parametrize("content_type", ["image/png", "application/octet-stream", "image/x-anything"])
def test_a_body_upload_answers_as_the_multipart_one(client, catalog_images, content_type):
    data = encode(catalog_images[5])
    settings = {"k": "3", "offset": "1", "category": CLASS_NAMES[1]}
    multipart = post_image(client, "/api/search", data, "shirt.png", **settings)
    body = post_body(client, data, content_type, filename="shirt.png", **settings)
    assert multipart.status_code == body.status_code == 200
    assert without_timing(body.get_json()) == without_timing(multipart.get_json())
    assert len(body.get_json()["results"]) == 3
    assert {r["category"] for r in body.get_json()["results"]} == {CLASS_NAMES[1]}


def test_a_body_upload_is_turned_upright_cropped_and_previewed(client, embedder):
    settings = {"crop_x": "0", "crop_y": "0.5", "crop_w": "1", "crop_h": "0.5", "preview": "1"}
    body = post_body(client, rotated_jpeg(), "image/jpeg", **settings)
    assert body.status_code == 200
    assert_model_saw_the_lower_half_upright(embedder)
    query = body.get_json()["query"]
    assert query["crop"] == {"x": 0.0, "y": 0.5, "w": 1.0, "h": 0.5} and query["preview"].startswith("data:image/jpeg")


@pytest.mark.parametrize(
    "data, content_type, params, status, message",
    [
        (b"", "image/png", {"filename": "empty.png"}, 400, "'empty.png' is empty"),
        (b"", None, {}, 400, "'the uploaded image' is empty"),
        (b"%PDF-1.4 not an image", "application/pdf", {"filename": "cv.pdf"}, 400,
         "'cv.pdf' (application/pdf, 21 bytes) is not an image Lookbook can read (it looks like a PDF document)"),
        (b"hello", "text/plain", {}, 400, "'the uploaded image' (text/plain, 5 bytes) is not an image"),
        (_truncated_jpeg(), "image/jpeg", {"filename": "cut.jpg"}, 400, "could not be decoded"),
        (b"\xff" * (MAX_UPLOAD_BYTES + 10), "image/jpeg", {}, 413, "larger than the limit of 262,144 bytes"),
        (b"png", "image/png", {"k": "0"}, 400, "k must be a whole number from 1 to 100"),
        (b"png", "image/png", {"crop_x": "1.5"}, 400, "crop_x must be a fraction of the image from 0 to 1"),
        (b"png", "image/png", {"category": "Hats"}, 400, "Hats"),
    ],
    ids=["empty", "empty, no type", "pdf", "text", "truncated", "too big", "bad k", "crop off the image", "unknown category"],
)
def test_bad_bodies_are_json_errors_and_the_server_keeps_serving(client, catalog_images, data, content_type, params,
                                                                 status, message):
    response = post_body(client, data, content_type, **params)
    assert response.status_code == status
    assert response.mimetype == "application/json"
    assert message in response.get_json()["error"]
    assert_still_serving(client, catalog_images)


class CountingStream(io.BytesIO):
    """A request body that remembers whether it has been read to its end."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.size = len(data)

    @property
    def finished(self) -> bool:
        return self.tell() >= self.size


@pytest.mark.parametrize(("url", "as_form"), [("/api/search", False), ("/api/search", True), ("/search", True)])
def test_a_query_counts_as_incoming_only_once_its_body_is_in(app, engine, catalog_images, monkeypatch, as_form, url):
    # A micro-batch waits for queries counted as incoming: one whose upload is still arriving would hold it up.
    data = encode(catalog_images[2])
    if as_form:
        boundary = "lookbook-test-boundary"
        data = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"p.png\"\r\n"
                "Content-Type: image/png\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
        content_type = f"multipart/form-data; boundary={boundary}"
    else:
        content_type = "image/png"
    stream = CountingStream(data)
    body_in_when_counted = []
    counted = engine.incoming_query

    def incoming_query(with_image: bool):
        body_in_when_counted.append(stream.finished)
        return counted(with_image)

    monkeypatch.setattr(engine, "incoming_query", incoming_query)
    response = app.test_client().post(url, input_stream=stream, content_length=len(data),
                                      headers={"Content-Type": content_type})
    assert response.status_code == 200
    assert body_in_when_counted == [True]
