"""Lookbook's web app: a search page, a JSON API and catalog images, over one loaded SearchEngine."""
from __future__ import annotations

import logging

from flask import Flask
from werkzeug.exceptions import HTTPException

from config import Config, load_config
from search_app import api, views
from search_app.batching import BatchTimeout
from search_app.engine import SearchEngine
from search_app.reloading import ServedEngine, build_of
from search_app.uploads import UploadError

log = logging.getLogger(__name__)


def create_app(config: Config | None = None, engine: SearchEngine | ServedEngine | None = None) -> Flask:
    """Build the app; without an engine, load the embedder, index and catalog from config's artifacts, and
    swap in each new build that appears there (app.reload_check_s)."""
    config = config if config is not None else load_config()
    app = Flask(__name__)
    app.config.from_mapping(
        MAX_CONTENT_LENGTH=config.app.max_upload_bytes,
        LOOKBOOK=config,
    )
    if engine is None:
        build = build_of(config)
        engine = ServedEngine(SearchEngine.from_artifacts(config), build,
                              load=lambda: SearchEngine.from_artifacts(config), check=lambda: build_of(config),
                              interval_s=config.app.reload_check_s, retire_after_s=config.app.search_deadline_s + 30)
    elif not isinstance(engine, ServedEngine):
        engine = ServedEngine(engine)
    app.extensions["lookbook"] = engine
    app.register_blueprint(views.bp)
    app.register_blueprint(api.bp)
    app.register_error_handler(UploadError, views.upload_error)
    app.register_error_handler(BatchTimeout, views.search_timed_out)
    app.register_error_handler(HTTPException, views.http_error)
    log.info("search app ready: %d %s items, %d classes", engine.current.count,
             engine.current.catalog_kind or "catalog", len(engine.current.class_names))
    return app
