"""Lookbook's web app: a search page, a JSON API and catalog images, over one loaded SearchEngine."""
from __future__ import annotations

import logging

from flask import Flask
from werkzeug.exceptions import HTTPException

from config import Config, load_config
from search_app import api, views
from search_app.batching import BatchTimeout
from search_app.engine import SearchEngine
from search_app.uploads import UploadError

log = logging.getLogger(__name__)


def create_app(config: Config | None = None, engine: SearchEngine | None = None) -> Flask:
    """Build the app; without an engine, load the embedder, index and catalog from config's artifacts."""
    config = config if config is not None else load_config()
    app = Flask(__name__)
    app.config.from_mapping(
        MAX_CONTENT_LENGTH=config.app.max_upload_bytes,
        LOOKBOOK=config,
    )
    if engine is None:
        engine = SearchEngine.from_artifacts(config)
    app.extensions["lookbook"] = engine
    app.register_blueprint(views.bp)
    app.register_blueprint(api.bp)
    app.register_error_handler(UploadError, views.upload_error)
    app.register_error_handler(BatchTimeout, views.search_timed_out)
    app.register_error_handler(HTTPException, views.http_error)
    log.info("search app ready: %d %s items, %d classes", engine.count, engine.catalog_kind or "catalog",
             len(engine.class_names))
    return app
