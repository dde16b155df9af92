"""Writing embeddings.h5: rows land in a partial file that survives interruption, then one atomic rename.

The layout is the contract in docs/artifacts.md; indexer/embeddings_file.py reads it.
"""
from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import h5py
import numpy as np

from embedder.catalogs.base import CatalogItem, ItemAttributes

log = logging.getLogger(__name__)

FORMAT = "lookbook-embeddings"
FORMAT_VERSION = 1
PENDING, EMBEDDED, SKIPPED = 0, 1, 2
STRING = h5py.string_dtype("utf-8")
CHUNK_ROWS = 1024


@dataclass(frozen=True)
class Skipped:
    """A catalog item that could not be embedded, and why."""

    item_id: str
    path: str
    reason: str


class PartialEmbeddings:
    """The in-progress file: one row per catalog item, a status per row, flushed after every batch.

    ``identity`` (checkpoint hash, catalog, item count) decides whether an existing partial file can be
    resumed: rows embedded by another model or for another catalog are never mixed in.
    """

    def __init__(self, path: Path, count: int, dimension: int, identity: dict) -> None:
        self.path = path
        self.identity = json.dumps(identity, sort_keys=True)
        self.file = self._open_or_create(count, dimension)
        self.status = self.file["status"][:]
        self._recheck_embedded_rows()

    def _recheck_embedded_rows(self) -> None:
        """Rows marked embedded whose vector is not a unit vector (zeros: it never reached the disk before
        a crash) go back to pending, to be embedded again rather than indexed as they are."""
        done = np.flatnonzero(self.status == EMBEDDED)
        for start in range(0, len(done), 65536):
            rows = done[start:start + 65536]
            norms = np.linalg.norm(self.file["embeddings"][rows], axis=1)
            lost = rows[~(np.abs(norms - 1) <= 1e-3)]
            if len(lost):
                log.warning("%s: %d row(s) marked embedded hold no vector (first: row %d); embedding them again",
                            self.path, len(lost), lost[0])
                self.status[lost] = PENDING
                self.file["status"][lost] = PENDING

    def _open_or_create(self, count: int, dimension: int) -> h5py.File:
        if self.path.exists():
            try:
                handle = h5py.File(self.path, "r+")
                if handle.attrs.get("identity") == self.identity:
                    log.info("Resuming %s", self.path)
                    return handle
                handle.close()
                log.info("Discarding %s: it was made for another model or catalog", self.path)
            except OSError as error:  # a file cut off mid-write cannot be trusted
                log.warning("Discarding unreadable partial file %s: %s", self.path, error)
            self.path.unlink()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = h5py.File(self.path, "w")
        handle.attrs["identity"] = self.identity
        rows = max(1, min(CHUNK_ROWS, count))
        handle.create_dataset("embeddings", (count, dimension), dtype="float32", chunks=(rows, dimension))
        handle.create_dataset("status", (count,), dtype="uint8", fillvalue=PENDING)
        handle.create_dataset("error", (count,), dtype=STRING)
        return handle

    @property
    def rows_done(self) -> int:
        """Rows finished, embedded or skipped."""
        return int(np.count_nonzero(self.status != PENDING))

    def pending_rows(self) -> np.ndarray:
        """Indices of rows still to embed, in catalog order."""
        return np.flatnonzero(self.status == PENDING)

    def write(self, rows: np.ndarray, vectors: np.ndarray, errors: Sequence[str]) -> None:
        """Store one batch: vectors for rows without an error, the reason for rows with one."""
        rows = np.asarray(rows)
        failed = np.array([bool(e) for e in errors], dtype=bool)
        order = np.argsort(rows)  # h5py fancy indexing wants increasing indices
        rows, vectors, failed = rows[order], vectors[order], failed[order]
        errors = [errors[i] for i in order]
        self.file["embeddings"][rows] = vectors.astype(np.float32, copy=False)
        if failed.any():
            for row, error in zip(rows[failed], (e for e, f in zip(errors, failed) if f)):
                self.file["error"][row] = error
        # The vectors reach the file before the status that says they are there.
        self.file.flush()
        status = np.where(failed, SKIPPED, EMBEDDED).astype(np.uint8)
        self.file["status"][rows] = status
        self.status[rows] = status
        self.file.flush()

    def reuse(self, stored: Path, rows: np.ndarray, stored_rows: np.ndarray, skipped_rows: np.ndarray,
              reasons: Sequence[str]) -> int:
        """Take the vectors of catalog ``rows`` from ``stored_rows`` of an earlier embeddings.h5, and mark
        ``skipped_rows`` skipped for ``reasons`` again, where they are still pending; returns the rows taken."""
        pending = self.status[rows] == PENDING
        rows, stored_rows = rows[pending], stored_rows[pending]
        with h5py.File(stored, "r") as handle:
            for start in range(0, len(rows), 65536):  # bounded memory for large catalogs
                chunk, sources = rows[start:start + 65536], stored_rows[start:start + 65536]
                order = np.argsort(sources)  # h5py reads increasing indices
                vectors = np.empty((len(chunk), handle["embeddings"].shape[1]), np.float32)
                vectors[order] = handle["embeddings"][sources[order]]
                self.write(chunk, vectors, [""] * len(chunk))
        pending = self.status[skipped_rows] == PENDING
        if pending.any():
            still = skipped_rows[pending]
            self.write(still, np.zeros((len(still), self.file["embeddings"].shape[1]), np.float32),
                       [reason or "unreadable" for reason, wanted in zip(reasons, pending) if wanted])
        return len(rows)

    def skipped(self, items: Sequence[CatalogItem]) -> list[Skipped]:
        """The items that could not be embedded, with their reasons."""
        rows = np.flatnonzero(self.status == SKIPPED)
        reasons = self.file["error"][rows] if len(rows) else []
        return [
            Skipped(items[row].item_id, items[row].path, _text(reason)) for row, reason in zip(rows, reasons)
        ]

    def finish(
        self,
        final_path: Path,
        items: Sequence[CatalogItem],
        attributes: dict,
        item_attributes: ItemAttributes | None = None,
        fingerprints: Sequence[str] | None = None,
    ) -> int:
        """Write the embedded rows to ``final_path`` atomically and remove the partial file; returns N.

        ``attributes`` become HDF5 attributes; ``item_attributes`` (the catalog's labelled attributes,
        one row per catalog item) the optional ``attributes`` dataset, for the embedded rows;
        ``fingerprints`` (one per catalog item) the ``fingerprint`` dataset and the ``skipped`` group,
        which the next build compares the catalog with.
        """
        if len(self.pending_rows()):
            raise RuntimeError(f"{self.path}: {len(self.pending_rows())} rows are not embedded yet")
        keep = np.flatnonzero(self.status == EMBEDDED)
        temporary = final_path.with_name(final_path.name + ".tmp")
        with h5py.File(temporary, "w") as out:
            dimension = self.file["embeddings"].shape[1]
            chunk_rows = max(1, min(CHUNK_ROWS, len(keep)))
            vectors = out.create_dataset(
                "embeddings", (len(keep), dimension), dtype="float32", chunks=(chunk_rows, dimension)
            )
            for start in range(0, len(keep), 65536):  # bounded memory for large catalogs
                vectors[start:start + 65536] = self.file["embeddings"][keep[start:start + 65536]]
            kept = [items[row] for row in keep]
            out.create_dataset("item_id", data=[it.item_id for it in kept], dtype=STRING)
            out.create_dataset("path", data=[it.path for it in kept], dtype=STRING)
            out.create_dataset("label", data=np.array([it.label for it in kept], dtype=np.int32))
            out.create_dataset("split", data=[it.split for it in kept], dtype=STRING)
            out.create_dataset("title", data=[it.title for it in kept], dtype=STRING)
            if item_attributes is not None:
                _write_item_attributes(out, item_attributes, keep, len(items))
            if fingerprints is not None:
                out.create_dataset("fingerprint", data=[fingerprints[row] for row in keep], dtype=STRING)
                skipped = np.flatnonzero(self.status == SKIPPED)
                group = out.create_group("skipped")
                group.create_dataset("item_id", data=[items[row].item_id for row in skipped], dtype=STRING)
                group.create_dataset("fingerprint", data=[fingerprints[row] for row in skipped], dtype=STRING)
                group.create_dataset("reason", data=[_text(reason) for reason in self.file["error"][skipped]]
                                     if len(skipped) else [], dtype=STRING)
            out.attrs.update(
                {
                    "format": FORMAT,
                    "format_version": FORMAT_VERSION,
                    "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    **attributes,
                }
            )
        os.replace(temporary, final_path)
        self.close()
        self.path.unlink()
        return len(keep)

    def close(self) -> None:
        """Close the partial file, keeping it for a later resume."""
        if self.file.id.valid:
            self.file.close()


def _write_item_attributes(out: h5py.File, item_attributes: ItemAttributes, keep: np.ndarray, count: int) -> None:
    names, kinds, values = item_attributes
    if values.shape != (count, len(names)) or len(kinds) != len(names):
        raise ValueError(f"item attributes of shape {values.shape} for {len(names)} names and {count} items")
    out.create_dataset("attributes", data=np.asarray(values, dtype=np.int8)[keep],
                       chunks=(max(1, min(CHUNK_ROWS, len(keep))), max(1, len(names))))
    out.attrs["attribute_names"] = json.dumps(list(names))
    out.attrs["attribute_kinds"] = json.dumps(list(kinds))


def _text(value: bytes | str) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)
