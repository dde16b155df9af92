"""The pages people see: the search form, the results, catalog images, health, and the error pages."""
from __future__ import annotations

import logging

from flask import Blueprint, Response, abort, current_app, g, jsonify, render_template, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from config import Config
from search_app.engine import SearchEngine
from search_app.items import ItemImageUnavailable
from search_app.match_strength import match_label
from search_app.query import parse_item_search, parse_photo_search, receive_body
from search_app.uploads import UploadError, drain_refused_body, oversized_body_allowance, preview_data_url

log = logging.getLogger(__name__)

bp = Blueprint("pages", __name__)
# Item images change only when the index is rebuilt, which restarts the app.
IMAGE_MAX_AGE = 24 * 3600


def current_engine() -> SearchEngine:
    """The engine this request is served by: the one being served when it started, to its end, even if a
    new build is swapped in meanwhile."""
    if "lookbook_engine" not in g:
        g.lookbook_engine = current_app.extensions["lookbook"].current
    return g.lookbook_engine


def current_config() -> Config:
    """The configuration create_app was given."""
    return current_app.config["LOOKBOOK"]


@bp.app_context_processor
def page_context() -> dict:
    """What every page shows: the catalog being searched and the upload limit."""
    return {"engine": current_engine(), "max_upload_bytes": current_app.config["MAX_CONTENT_LENGTH"],
            "match_label": match_label}


@bp.get("/")
def index() -> str:
    """The search form."""
    return render_template("index.html")


@bp.post("/search")
def search() -> str:
    """Search with the uploaded photo (cropped, in one category, if asked) and show the results page."""
    app = current_config().app
    receive_body(request)
    with current_engine().incoming_query(True):
        query = parse_photo_search(request, request.form, current_engine(), app.results, app.max_image_pixels)
        result = query.run(current_engine())
    return render_template("results.html", result=result, query_image=preview_data_url(query.image),
                           query_size=query.image.size)


@bp.get("/items/<item_id>")
def similar(item_id: str) -> str:
    """"More like this" without JavaScript: the items most like a catalog item, on a page."""
    query = parse_item_search(item_id, request.args, current_engine(), current_config().app.results)
    return render_template("results.html", result=query.run(current_engine()),
                           query_item=current_engine().describe_item(item_id))


@bp.get("/items/<item_id>/image")
def item_image(item_id: str) -> Response:
    """A catalog item's image as JPEG, found by its id (never by a path from the request)."""
    return item_image_response(item_id)


def item_image_response(item_id: str) -> Response:
    """The JPEG response for a catalog item, cacheable; 404 for unknown ids."""
    try:
        data = current_engine().item_image_jpeg(item_id)
    except ItemImageUnavailable as error:
        abort(404, str(error))
    except KeyError:
        abort(404, f"no catalog item has the id {item_id!r}")
    response = Response(data, mimetype="image/jpeg")
    response.cache_control.public = True
    response.cache_control.max_age = IMAGE_MAX_AGE
    response.add_etag()
    return response.make_conditional(request)


@bp.get("/healthz")
def healthz() -> Response:
    """Whether the model and index are loaded, and what is served, as JSON."""
    return jsonify(current_app.extensions["lookbook"].health())


def wants_json() -> bool:
    """Whether the failed request came from a program (the API) rather than a person with a browser."""
    return request.path.startswith("/api/")


def error_response(message: str, status: int, headers: dict[str, str] | None = None) -> tuple:
    """The error as JSON {"error": ...} for the API, else as a page that offers the search form again."""
    if wants_json():
        body = jsonify(error=message)
    else:
        body = render_template("error.html", message=message, status=status)
    return body, status, headers or {}


def upload_error(error: UploadError) -> tuple:
    """A refused upload: say what was wrong with it."""
    log.info("refused upload to %s: %s", request.path, error.message)
    return error_response(error.message, error.status)


def search_timed_out(error: Exception) -> tuple:
    """The model did not answer within app.search_deadline_s: a 503 the caller may retry, never a hang."""
    log.warning("search refused: %s", error)
    return error_response("the search model is not answering right now; try again in a few seconds", 503,
                          {"Retry-After": "5"})


def http_error(error: HTTPException) -> tuple:
    """404, 405, 413, 500 and friends, as clear messages in the caller's format."""
    status = error.code or 500
    if isinstance(error, RequestEntityTooLarge):
        limit = current_app.config["MAX_CONTENT_LENGTH"]
        allowance = oversized_body_allowance(limit)
        if (request.content_length or 0) <= allowance:
            drain_refused_body(request.environ["wsgi.input"], allowance)
        message = (f"the upload is larger than the limit of {limit:,} bytes ({limit / 2**20:.1f} MiB); "
                   "send a smaller image")
    elif status == 405:
        allowed = ", ".join(sorted(getattr(error, "valid_methods", None) or []))
        message = f"{request.method} is not allowed on {request.path}; allowed: {allowed}"
    elif status >= 500:
        message = "the server failed to answer this request; the operator will find the details in its log"
    else:
        message = error.description or error.name
    headers = {"Allow": ", ".join(error.valid_methods)} if getattr(error, "valid_methods", None) else None
    return error_response(message, status, headers)
