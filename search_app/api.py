"""The JSON API for programs: POST /api/search."""
from __future__ import annotations

import time
from typing import Any

from flask import Blueprint, Response, abort, jsonify, request, url_for

from search_app.engine import SearchResult
from search_app.uploads import read_upload
from search_app.views import current_config, current_engine

bp = Blueprint("api", __name__, url_prefix="/api")
MAX_K = 100


def parse_k(text: str | None, default: int) -> int:
    """The number of results asked for: a whole number from 1 to MAX_K, default when absent; else 400."""
    if text is None or text.strip() == "":
        return min(default, MAX_K)
    try:
        k = int(text.strip())
    except ValueError:
        k = None
    if k is None or not 1 <= k <= MAX_K:
        abort(400, f"k must be a whole number from 1 to {MAX_K}, got {text[:40]!r}")
    return k


@bp.post("/search")
def search() -> Response:
    """Search with the multipart field "image"; optional form field "k" results (default app.results)."""
    started = time.perf_counter()
    k = parse_k(request.form.get("k"), current_config().app.results)
    image = read_upload(request.files.get("image"), current_config().app.max_image_pixels)
    result = current_engine().search(image, k)
    return jsonify(result_json(result, total_ms=1e3 * (time.perf_counter() - started)))


def result_json(result: SearchResult, total_ms: float) -> dict[str, Any]:
    """A SearchResult as the API's JSON answer."""
    answer: dict[str, Any] = {
        "predictions": [{"category": p.category, "score": round(p.score, 6)} for p in result.predictions],
        "caption": None if result.caption is None else {"text": result.caption.text, "method": result.caption.method},
        "results": [
            {
                "item_id": n.item_id,
                "title": n.title,
                "category": n.category,
                "similarity": round(n.similarity, 6),
                "image_url": url_for("pages.item_image", item_id=n.item_id),
            }
            for n in result.neighbours
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
