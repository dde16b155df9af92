"""The embedding half of build-index: catalog and embedder in, embeddings.h5 out (only new and changed items
embedded; the file reused as it is when current)."""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
from collections.abc import Iterator
from pathlib import Path


from config import Config, LookbookError

try:
    import fcntl
except ImportError:  # Windows: builds there go unlocked
    fcntl = None
from embedder.catalogs import open_catalog
from embedder.checkpoint import provide_embedder
from embedder.inference.catalog_diff import diff_catalog, same_item_attributes
from embedder.inference.extract import ExtractionReport, embed_catalog, embeddings_attributes, resolve_device
from embedder.inference.partial_embeddings import Skipped

log = logging.getLogger(__name__)

LOCK_NAME = ".build-index.lock"


class BuildLockedError(LookbookError):
    """Another build-index is writing the same artifacts."""


@contextlib.contextmanager
def build_lock(artifacts: Path) -> Iterator[None]:
    """Held for a whole build-index over ``artifacts``: a second one stops and names the process that holds it,
    rather than taking the first one's open partial file for a damaged one and deleting its work. An flock,
    which the kernel releases when its holder dies, so a killed build never leaves the artifacts locked."""
    artifacts.mkdir(parents=True, exist_ok=True)
    with open(artifacts / LOCK_NAME, "a+") as handle:
        if fcntl is not None:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "unknown"
                raise BuildLockedError(f"another build-index (process {holder}) is writing {artifacts}; wait for "
                                       "it to finish, or stop it and run build-index again (it resumes)") from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        yield


def build_embeddings(config: Config, force: bool = False, engine: str = "local",
                     address: str | None = None) -> ExtractionReport:
    """Make ``<artifacts>/embeddings.h5`` for the configured catalog, unless an up-to-date one exists;
    ``engine`` "ray" embeds on Ray (at ``address``, else a local cluster)."""
    artifacts = config.artifacts
    artifacts.mkdir(parents=True, exist_ok=True)
    device = resolve_device(config.embedder.device)
    catalog = open_catalog(config.catalog, config.paths.downloads)
    log.info("Catalog %s at %s: %d items, %d classes", catalog.kind, catalog.root, len(catalog), len(catalog.class_names))
    embedder = provide_embedder(config.embedder, catalog, artifacts, device)
    output = config.paths.embeddings
    attributes = embeddings_attributes(catalog, embedder, config.catalog.subset, config.embedder.mirror_average)
    fingerprints = catalog.fingerprints()
    if force:
        output.with_name(output.name + ".partial").unlink(missing_ok=True)
    diff = None if force else diff_catalog(output, attributes, catalog.items, fingerprints)
    if diff is not None and diff.current and not same_item_attributes(output, catalog.item_attributes(), diff.kept):
        log.info("%s: the catalog's labelled attributes changed; rewriting it with its stored vectors", output)
        diff = dataclasses.replace(diff, current=False)
    if diff is not None and diff.current:
        log.info("%s is up to date; reusing it (build-index --force rebuilds)", output)
        skipped = [Skipped(catalog.items[row].item_id, catalog.items[row].path, reason)
                   for row, reason in zip(diff.kept_skipped, diff.skipped_reasons)]
        return ExtractionReport(len(catalog), len(diff.kept), skipped, device=device, reused=True,
                                rejected=catalog.rejected, kept=len(catalog))
    if diff is not None:
        log.info("%s: %d items kept, %d added, %d changed, %d removed", catalog.kind, len(diff.kept) +
                 len(diff.kept_skipped), diff.added, diff.changed, diff.removed)
    return embed_catalog(
        catalog,
        embedder,
        output,
        attributes,
        batch_size=config.embedder.batch_size,
        workers=config.embedder.workers,
        device=device,
        precision=config.embedder.precision,
        compile_model=config.embedder.compile,
        runtime=config.embedder.runtime,
        fingerprints=fingerprints,
        diff=diff,
        engine=engine,
        address=address,
    )
