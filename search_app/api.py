"""The JSON API for programs (and the search page's script): photo search, items, the items most like one,
their images, the OpenAPI document."""
from __future__ import annotations

import functools
import json
import time
from collections.abc import Iterable
from importlib import resources
from typing import Any
from urllib.parse import quote

from flask import Blueprint, Response, abort, current_app, jsonify, request, url_for

from search_app.match_strength import match_label
from search_app.query import (ITEM_SETTINGS, PHOTO_SETTINGS, SearchQuery, parse_item_search, parse_photo_search,
                              receive_body, refuse_blank, refuse_unknown, require_item)
from search_app.results import Caption, SearchResult
from search_app.uploads import preview_data_url
from search_app.views import current_config, current_engine, item_image_response

bp = Blueprint("api", __name__, url_prefix="/api")
# item_image_urls: a stand-in id that quoting leaves as it is, and what werkzeug's path converter keeps unquoted.
URL_SLOT = "item-id-slot"
PATH_SEGMENT_SAFE = "!$&'()*+,/:;=@"


@bp.post("/search")
def search() -> Response:
    """Search with a photo: the body itself, or a multipart form's "image" file; settings in the query string."""
    started = time.perf_counter()
    app = current_config().app
    check_photo_request()
    receive_body(request)
    engine = current_engine()  # after a slow upload, the build being served now
    refuse_unknown(request.form, ("image",), "form field(s)", " (settings go in the query string)")
    with engine.incoming_query(True):
        query = parse_photo_search(request, request.args, engine, app.results, app.max_image_pixels)
        result = query.run(engine)
    return jsonify(result_json(result, query, total_ms=1e3 * (time.perf_counter() - started)))


def check_photo_request() -> None:
    """400 for what a photo search would not read: a JSON body, an unknown setting."""
    if request.is_json:
        abort(400, "a photo search takes the photo as the body (Content-Type image/...) or as the multipart "
                   "field \"image\"; for the items most like a catalog item, GET /api/items/<item_id>/similar")
    refuse_unknown(request.args, PHOTO_SETTINGS, "query parameter(s)")
    refuse_blank(request.args)


@bp.get("/items/<item_id>/similar")
def similar(item_id: str) -> Response:
    """"More like this": the catalog items most like one (the item itself left out); k, offset and category
    in the query string."""
    started = time.perf_counter()
    refuse_unknown(request.args, ITEM_SETTINGS, "query parameter(s)")
    refuse_blank(request.args)
    query = parse_item_search(item_id, request.args, current_engine(), current_config().app.results)
    result = query.run(current_engine())
    return jsonify(result_json(result, query, total_ms=1e3 * (time.perf_counter() - started)))


@bp.get("/items/<item_id>")
def item(item_id: str) -> Response:
    """A catalog item's id, title, category, split and image URL; 404 for unknown ids."""
    require_item(item_id, current_engine())
    return jsonify(item_json(item_id))


@bp.get("/items/<item_id>/image")
def item_image(item_id: str) -> Response:
    """A catalog item's image as JPEG; 404 for unknown ids."""
    return item_image_response(item_id)


@bp.get("/openapi.json")
def openapi() -> Response:
    """The OpenAPI 3.1 document describing this API, with this catalog's categories."""
    return jsonify(openapi_document(tuple(current_engine().class_names)))


@functools.cache
def openapi_document(categories: tuple[str, ...]) -> dict[str, Any]:
    """search_app/openapi.json with the categories a search accepts listed ("" is all of them)."""
    document = json.loads(resources.files("search_app").joinpath("openapi.json").read_bytes())
    for path, method in (("/api/search", "post"), ("/api/items/{item_id}/similar", "get")):
        for parameter in document["paths"][path][method]["parameters"]:
            if parameter["name"] == "category":
                parameter["schema"]["enum"] = ["", *categories]
    return document


def item_json(item_id: str) -> dict[str, Any]:
    """One catalog item as the API describes it."""
    return {**current_engine().describe_item(item_id), "image_url": url_for("api.item_image", item_id=item_id)}


def item_image_urls(item_ids: Iterable[str]) -> list[str]:
    """url_for("api.item_image", item_id=...) for each id, building the route once: a page's 12 to 24 url_for
    calls were a tenth of a search request's Python work. The ids are quoted as the route's converter does."""
    template = url_for("api.item_image", item_id=URL_SLOT)
    return [template.replace(URL_SLOT, quote(item_id, safe=PATH_SEGMENT_SAFE)) for item_id in item_ids]


def query_json(query: SearchQuery) -> dict[str, Any]:
    """What was searched for: the catalog item, or the uploaded image as the model saw it (upright, cropped)."""
    if query.item_id is not None:
        return {"kind": "item", "item": item_json(query.item_id)}
    crop = query.crop
    answer: dict[str, Any] = {
        "kind": "image",
        "width": query.image.width,
        "height": query.image.height,
        "crop": None if crop is None else {"x": crop.x, "y": crop.y, "w": crop.w, "h": crop.h},
    }
    if query.preview:
        answer["preview"] = preview_data_url(query.image)
    return answer


def caption_json(caption: Caption | None) -> dict[str, Any] | None:
    """The caption, how it was made, and the predicted attributes with their vote shares."""
    if caption is None:
        return None
    return {"text": caption.text, "method": caption.method,
            "attributes": [{"name": a.name, "score": round(a.score, 6)} for a in caption.attributes]}


def result_json(result: SearchResult, query: SearchQuery, total_ms: float) -> dict[str, Any]:
    """A SearchResult as the API's JSON answer."""
    urls = item_image_urls(n.item_id for n in result.neighbours)
    answer: dict[str, Any] = {
        "query": query_json(query),
        "predictions": [{"category": p.category, "score": round(p.score, 6)} for p in result.predictions],
        "caption": caption_json(result.caption),
        "category": result.category,
        "k": query.k,
        "offset": result.offset,
        "available": result.available,
        "next_offset": result.offset + len(result.neighbours) if result.has_more else None,
        "results": [
            {
                "rank": result.offset + number + 1,
                "item_id": n.item_id,
                "title": n.title,
                "category": n.category,
                "similarity": round(n.similarity, 6),
                "match": n.match,
                "match_label": match_label(n.match),
                "image_url": url,
            }
            for number, (n, url) in enumerate(zip(result.neighbours, urls))
        ],
        "timing_ms": {
            "embed": round(result.embed_ms, 2),
            "search": round(result.search_ms, 2),
            "total": round(total_ms, 2),
        },
    }
    if result.caption_note:
        answer["captions"] = result.caption_note
    return answer
