"""Reading a search request (a multipart upload, or JSON naming a catalog item) into a checked SearchQuery."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from flask import Request, abort
from PIL import Image

from search_app.engine import SearchEngine
from search_app.results import SearchResult
from search_app.uploads import CROP_FIELDS, Crop, first_file, parse_crop, read_image_body, read_upload

MAX_K = 100
# Paging deeper than this is not browsing any more; it would only make each request slower.
MAX_OFFSET = 1000
MAX_ITEM_ID = 200
JSON_KEYS = ("item_id", "k", "offset", "category")
# What a photo sent as the body reads from the query string (openapi.json lists the same).
QUERY_SETTINGS = ("k", "offset", "category", *CROP_FIELDS, "preview", "filename")
TRUE = ("1", "true", "yes", "on")
FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")


@dataclass(frozen=True)
class SearchQuery:
    """A validated search: an uploaded image or a catalog item id, and which results to show."""

    k: int
    offset: int = 0
    category: str | None = None
    image: Image.Image | None = None
    crop: Crop | None = None
    item_id: str | None = None
    preview: bool = False

    def run(self, engine: SearchEngine) -> SearchResult:
        """Search the engine with this query."""
        if self.item_id is not None:
            return engine.search_item(self.item_id, self.k, category=self.category, offset=self.offset)
        return engine.search(self.image, self.k, category=self.category, offset=self.offset)


def parse_search(request: Request, engine: SearchEngine, default_k: int, max_pixels: int) -> SearchQuery:
    """The search a request asks for: 400 (or 413 for too big an image, 404 for an unknown item) if it is unusable."""
    image_body = is_image_body(request)
    if request.is_json:
        try:
            fields = request.get_json(silent=True)
        except RecursionError:  # nested deeper than the parser recurses; silent covers only malformed JSON
            fields = None
        if not isinstance(fields, dict):
            abort(400, 'the JSON body must be an object such as {"item_id": "...", "k": 12}')
        unknown = sorted(set(fields) - set(JSON_KEYS))
        if unknown:
            abort(400, f"unknown field(s) {', '.join(map(repr, unknown))[:200]}; known: {', '.join(JSON_KEYS)}")
        if "item_id" not in fields:
            abort(400, 'the JSON body needs "item_id"; to search with a photo, send it as the body '
                       '(Content-Type image/...) or as the multipart field "image"')
    elif image_body:
        fields = request.args
    else:
        fields = request.form
    common = {
        "k": parse_whole(fields.get("k"), "k", default_k, 1, MAX_K),
        "offset": parse_whole(fields.get("offset"), "offset", 0, 0, MAX_OFFSET),
        "category": parse_category(fields.get("category"), engine),
    }
    upload = None if image_body or request.is_json else first_file(request.files.getlist("image"))
    if not image_body and upload is None and fields.get("item_id") is not None:
        return SearchQuery(item_id=parse_item_id(fields.get("item_id"), engine), **common)
    crop = parse_crop(fields)
    if image_body:
        image = read_image_body(request.get_data(cache=False), fields.get("filename") or "the uploaded image",
                                request.mimetype, max_pixels, crop)
    else:
        image = read_upload(upload, max_pixels, crop)
    return SearchQuery(image=image, crop=crop, preview=str(fields.get("preview", "")).lower() in TRUE, **common)


def is_image_body(request: Request) -> bool:
    """Whether the body is the photo itself (any Content-Type but a form's or JSON), its settings in the query
    string. The search page sends photos so: a multipart body costs the server more Python work a search
    (werkzeug compiles two regular expressions for each body's boundary). A body of another
    type (a PDF dropped on the page) is then refused as what it is, not as a missing field."""
    return not request.is_json and request.mimetype not in FORM_TYPES


def parse_whole(value: Any, name: str, default: int, low: int, high: int) -> int:
    """A whole number from low to high (JSON number or text), default when absent or blank; else 400 naming it."""
    if value is None or (isinstance(value, str) and value.strip() == ""):
        return min(max(default, low), high)
    number = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and re.fullmatch(r"[+-]?[0-9]{1,9}", value.strip()):
        number = int(value.strip())
    if number is None or not low <= number <= high:
        abort(400, f"{name} must be a whole number from {low} to {high}, got {str(value)[:40]!r}")
    return number


def parse_category(value: Any, engine: SearchEngine) -> str | None:
    """A category of the catalog to restrict results to; None for absent or empty; else 400 naming the categories."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        abort(400, f"category must be a category name (text), got {str(value)[:40]!r}")
    try:
        engine.label_of(value)
    except ValueError as error:
        abort(400, str(error))
    return value


def parse_item_id(value: Any, engine: SearchEngine) -> str:
    """A catalog item id: 400 when it is not a short non-empty text, 404 when no item has it."""
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_ITEM_ID:
        abort(400, f"item_id must be a catalog item's id (text of 1 to {MAX_ITEM_ID} characters), "
                   f"got {str(value)[:40]!r}")
    require_item(value, engine)
    return value


def require_item(item_id: str, engine: SearchEngine) -> None:
    """404 with the id named when the catalog has no such item."""
    try:
        engine.row_of(item_id)
    except KeyError:
        abort(404, f"no catalog item has the id {item_id[:MAX_ITEM_ID]!r}")
