"""`serve --prod`: the app in one process under a production WSGI server.

One process loads the embedder and the index once; its request threads hand photo searches to one
micro-batching model thread (search_app.batching), so concurrent searches share a forward pass and
an index scan, and only one pass at a time has the cores (or the GPU). Measured against a model
process shared by several workers in benchmarks/README.md (Serving).

waitress by default: its I/O thread reads each request whole (headers and body) before a request thread
sees it, so clients that send slowly, or stop, hold a connection but never a thread, and a connection
silent for IDLE_TIMEOUT_S is closed. gunicorn (one worker, app.server = "gunicorn") reads on the
request thread, so it belongs behind a buffering proxy (docs/security.md); its master restarts a worker
that dies.
"""
from __future__ import annotations

import logging
import os

from config import Config, ConfigError

log = logging.getLogger(__name__)


# Seconds a connection may send nothing before waitress closes it (a dead or stalling client).
IDLE_TIMEOUT_S = 30


def resolve_server(server: str, gunicorn_runs: bool = os.name == "posix") -> str:
    """app.server, checked against the platform: gunicorn needs POSIX."""
    if server == "gunicorn" and not gunicorn_runs:
        raise ConfigError('app.server: gunicorn does not run on this platform (it needs POSIX); set app.server = '
                          '"waitress"')
    return server


def serve_production(config: Config, host: str, port: int) -> None:
    """Serve the app with gunicorn or waitress on host:port until interrupted."""
    server = resolve_server(config.app.server)
    log.info("serving on http://%s:%d/ with %s: one process, %d request threads, micro-batches of up to %d "
             "(waiting at most %g ms)", host, port, server, config.app.threads, config.app.max_batch,
             config.app.batch_wait_ms)
    if server == "waitress":
        _serve_waitress(config, host, port)
    else:
        _serve_gunicorn(config, host, port)


def _serve_waitress(config: Config, host: str, port: int) -> None:
    import waitress

    from search_app import create_app
    from search_app.uploads import oversized_body_allowance

    waitress.serve(
        create_app(config), host=host, port=port, threads=config.app.threads, ident="lookbook",
        channel_timeout=IDLE_TIMEOUT_S,
        # Bodies a little over the app's limit reach Flask, which answers with a JSON 413; far bigger
        # ones are cut off by waitress itself before they fill the disk.
        max_request_body_size=oversized_body_allowance(config.app.max_upload_bytes),
    )


def _serve_gunicorn(config: Config, host: str, port: int) -> None:
    from gunicorn.app.base import BaseApplication

    from search_app import create_app

    class LookbookGunicorn(BaseApplication):
        """gunicorn with one worker and request threads; the app is built in the worker, after the fork."""

        def load_config(self) -> None:
            settings = {
                "bind": f"{host}:{port}",
                "workers": 1,
                "threads": config.app.threads,
                "worker_class": "gthread",
                # The model is loaded in the worker, never in the master: torch's thread pools do not survive fork.
                "preload_app": False,
                "timeout": 120,
                "accesslog": None,
            }
            for key, value in settings.items():
                self.cfg.set(key, value)

        def load(self):
            return create_app(config)

    LookbookGunicorn().run()
