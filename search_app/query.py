"""Reading a search request (a photo, or a catalog item's id) and its settings into a checked SearchQuery."""
from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
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
# The settings each search reads from its query string (openapi.json lists the same).
ITEM_SETTINGS = ("k", "offset", "category")
PHOTO_SETTINGS = (*ITEM_SETTINGS, *CROP_FIELDS, "preview", "filename")
TEXT_SETTINGS = ("category", "filename")
TRUE, FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off", "")
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


def parse_photo_search(request: Request, fields: Mapping[str, Any], engine: SearchEngine, default_k: int,
                       max_pixels: int) -> SearchQuery:
    """A search with a photo (the body itself, or a form's "image" file) and its settings from ``fields``:
    400 (or 413 for too big an image) if it is unusable."""
    common = parse_settings(fields, engine, default_k)
    crop = parse_crop(fields)
    if request.mimetype in FORM_TYPES:
        image = read_upload(first_file(request.files.getlist("image")), max_pixels, crop)
    else:
        image = read_image_body(request.get_data(), fields.get("filename") or "the uploaded image", request.mimetype,
                                max_pixels, crop)
    return SearchQuery(image=image, crop=crop, preview=parse_flag(fields.get("preview"), "preview"), **common)


def parse_item_search(item_id: str, fields: Mapping[str, Any], engine: SearchEngine, default_k: int) -> SearchQuery:
    """A search for the items most like a catalog item: 404 for an unknown id, 400 for a bad setting."""
    if len(item_id) > MAX_ITEM_ID:
        abort(400, f"an item id has at most {MAX_ITEM_ID} characters; got {len(item_id)}")
    require_item(item_id, engine)
    return SearchQuery(item_id=item_id, **parse_settings(fields, engine, default_k))


def parse_settings(fields: Mapping[str, Any], engine: SearchEngine, default_k: int) -> dict[str, Any]:
    """k, offset and category, checked."""
    return {
        "k": parse_whole(fields.get("k"), "k", default_k, 1, MAX_K),
        "offset": parse_whole(fields.get("offset"), "offset", 0, 0, MAX_OFFSET),
        "category": parse_category(fields.get("category"), engine),
    }


def refuse_unknown(names: Iterable[str], known: Sequence[str], where: str, hint: str = "") -> None:
    """400 naming the settings nobody reads: nothing a caller sends is ignored silently."""
    unknown = sorted({str(name or "") for name in names} - set(known))  # a nameless form part is named ""
    if unknown:
        abort(400, f"unknown {where} {', '.join(map(repr, unknown))[:200]}; known: {', '.join(known)}{hint}")


def refuse_blank(fields: Mapping[str, Any]) -> None:
    """400 for number and yes/no settings given without a value (k=): the API takes a value or nothing (the
    page's forms send blanks); a blank category is all of them."""
    blank = [name for name, value in fields.items() if name not in TEXT_SETTINGS and not str(value).strip()]
    if blank:
        abort(400, f"{', '.join(blank)} given without a value; leave a setting out to get its default")


def receive_body(request: Request) -> None:
    """Read the whole body now (a form is parsed, anything else kept as bytes), so that a query is counted
    as incoming, and a micro-batch waits for it, only once the client has sent it."""
    if request.mimetype in FORM_TYPES:
        request.form  # noqa: B018 (parsing the form reads the body, files included)
    else:
        request.get_data()


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


def parse_flag(value: Any, name: str) -> bool:
    """A yes/no setting: true, 1, yes, on or their opposites (any case); absent is no; else 400 naming it."""
    text = "" if value is None else str(value).strip().lower()
    if text not in TRUE + FALSE:
        abort(400, f"{name} must be true or false, got {str(value)[:40]!r}")
    return text in TRUE


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


def require_item(item_id: str, engine: SearchEngine) -> None:
    """404 with the id named when the catalog has no such item."""
    try:
        engine.row_of(item_id)
    except KeyError:
        abort(404, f"no catalog item has the id {item_id[:MAX_ITEM_ID]!r}")
