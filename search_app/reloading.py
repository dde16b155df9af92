"""A new build served without a restart: index.json (written last by build-index) is checked every few
seconds; a new build is loaded beside the one being served, then swapped in with one assignment. Requests
keep the engine they started with, so those in flight finish on the old build, which is closed later."""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from config import Config
from indexer.index import IndexFileError, read_sidecar
from search_app.engine import SearchEngine

log = logging.getLogger(__name__)


def build_of(config: Config) -> dict[str, str] | None:
    """Which build the artifacts hold now (the index's creation time and its embeddings' hash), or None while
    there is no complete one (build-index removes the sidecar before writing a new index)."""
    try:
        sidecar = read_sidecar(config.paths.index)
    except (IndexFileError, OSError):
        return None
    return {"index_created_at": str(sidecar.get("created_at", "")),
            "embeddings_sha256": str(sidecar.get("embeddings_sha256", ""))}


class ServedEngine:
    """The engine being served, and the thread that swaps in a new build when one appears."""

    def __init__(self, engine: SearchEngine, build: dict[str, str] | None = None,
                 load: Callable[[], SearchEngine] | None = None,
                 check: Callable[[], dict[str, str] | None] | None = None,
                 interval_s: float = 0.0, retire_after_s: float = 60.0, retry_after_s: float = 60.0) -> None:
        """``load`` makes an engine of the artifacts as they are and ``check`` says which build they hold;
        without them, or with ``interval_s`` 0, the engine is served as it is. An old engine is closed
        ``retire_after_s`` after the swap (longer than any request's deadline); a build that failed to load is
        tried again ``retry_after_s`` later (Milvus or Ray may have been briefly out of reach)."""
        self.current = engine
        self.build = build
        self._load, self._check = load, check
        self.retire_after_s, self.retry_after_s = retire_after_s, retry_after_s
        self.reloads = 0
        self.loaded_at = _now()
        self.last_error: str | None = None
        self._failed: dict[str, str] | None = None
        self._failed_at = 0.0
        self._stop = threading.Event()
        self._thread = None
        if load is not None and check is not None and interval_s > 0:
            self._thread = threading.Thread(target=self._watch, args=(interval_s,), name="lookbook-reload",
                                            daemon=True)
            self._thread.start()

    def check_now(self) -> bool:
        """Swap in the build the artifacts hold if it is new and loads; whether it was swapped in."""
        build = self._check() if self._check is not None else None
        failed_lately = build == self._failed and time.monotonic() - self._failed_at < self.retry_after_s
        if build is None or build == self.build or failed_lately or self._load is None:
            return False
        log.info("a new build is in the artifacts (index of %s); loading it beside the one being served",
                 build["index_created_at"])
        started = time.perf_counter()
        try:
            engine = self._load()
        except Exception as error:  # noqa: BLE001 (a broken build must not stop the one being served)
            log.exception("the new build could not be loaded; still serving the previous one")
            self._failed, self._failed_at = build, time.monotonic()
            self.last_error = f"{type(error).__name__}: {error}"
            return False
        if self._check() != build:  # a newer build landed while this one loaded: take that one next time
            log.info("the build changed again while loading; loading the newer one")
            engine.close()
            return False
        old, self.current = self.current, engine
        self.build, self.loaded_at, self.last_error = build, _now(), None
        self.reloads += 1
        log.info("now serving the build of %s (%d items), loaded in %.1f s", build["index_created_at"], engine.count,
                 time.perf_counter() - started)
        retire = threading.Timer(self.retire_after_s, old.close)
        retire.daemon = True
        retire.start()
        return True

    def health(self) -> dict[str, Any]:
        """The served engine's health, and which build it is."""
        return {**self.current.health(), "build": {**(self.build or {}), "loaded_at": self.loaded_at,
                                                   "reloads": self.reloads, "last_reload_error": self.last_error}}

    def close(self) -> None:
        """Stop watching and close the engine being served."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
        self.current.close()

    def _watch(self, interval_s: float) -> None:
        while not self._stop.wait(interval_s):
            try:
                self.check_now()
            except Exception:  # noqa: BLE001 (the watcher must outlive any one failed check)
                log.exception("checking for a new build failed")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
