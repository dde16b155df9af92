"""What changed in a catalog since embeddings.h5 was written: items matched by id, compared by fingerprint,
so that build-index embeds only new and changed items and keeps the vectors of the rest."""
from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from embedder.catalogs.base import CatalogItem, ItemAttributes

log = logging.getLogger(__name__)

# Stored vectors are reused only when these attributes match: the same model, run the same way, on the same catalog.
SOURCE_KEYS = ("checkpoint_sha256", "preprocessing", "embedding_size", "catalog_kind", "catalog_root",
               "catalog_subset")
# Older files lack these; they were made with neither.
OPTIONAL_KEYS = {"catalog_options": "{}", "mirror_average": False}
# Columns that must also match for the file to be current as it is (a changed label or title is rewritten).
COLUMNS = ("item_id", "path", "label", "split", "title")


@dataclass(frozen=True)
class CatalogDiff:
    """The catalog against the stored file: which rows keep their stored vector, and the counts of the rest."""

    kept: np.ndarray  # catalog rows whose stored vector still holds
    kept_from: np.ndarray  # ... and their rows in embeddings.h5
    kept_skipped: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # unreadable then, unchanged since
    skipped_reasons: list[str] = field(default_factory=list)
    added: int = 0
    changed: int = 0
    removed: int = 0
    current: bool = False  # the stored file is exactly what this catalog would give: nothing to write


def diff_catalog(path: Path, attributes: dict, items: Sequence[CatalogItem], fingerprints: Sequence[str]
                 ) -> CatalogDiff | None:
    """The catalog's items against ``path`` (embeddings.h5); None when none of its vectors can be reused
    (no file, another model or catalog, or a file from before fingerprints)."""
    if not path.is_file():
        return None
    try:
        with h5py.File(path, "r") as handle:
            problem = _source_mismatch(dict(handle.attrs), attributes)
            if problem is None and "fingerprint" not in handle:
                problem = "it has no fingerprints (made by an older Lookbook)"
            if problem:
                log.info("Not reusing the vectors of %s: %s", path, problem)
                return None
            stored = {name: _strings(handle[name]) if name != "label" else handle[name][:] for name in COLUMNS}
            prints = _strings(handle["fingerprint"])
            skipped = handle.get("skipped")
            skipped_ids = _strings(skipped["item_id"]) if skipped is not None else []
            skipped_prints = _strings(skipped["fingerprint"]) if skipped is not None else []
            skipped_reasons = _strings(skipped["reason"]) if skipped is not None else []
            same_attributes = all(_plain(handle.attrs.get(key)) == _plain(attributes.get(key))
                                  for key in ("class_names", "has_titles"))
    except (OSError, KeyError, ValueError) as error:
        log.warning("Not reusing the vectors of %s: it cannot be read (%s)", path, error)
        return None
    kept, kept_from, kept_skipped, reasons, added, changed = [], [], [], [], 0, 0
    # Per stored id: its fingerprint, and where a kept item's row and its stored row (or skip reason) go.
    known = {item_id: (fingerprint, kept, kept_from, row)
             for row, (item_id, fingerprint) in enumerate(zip(stored["item_id"], prints))}
    known.update({item_id: (fingerprint, kept_skipped, reasons, reason)
                  for item_id, fingerprint, reason in zip(skipped_ids, skipped_prints, skipped_reasons)})
    for row, (item, fingerprint) in enumerate(zip(items, fingerprints)):
        if item.item_id not in known:
            added += 1
            continue
        stored_print, rows, values, value = known[item.item_id]
        if stored_print != fingerprint:
            changed += 1
        else:
            rows.append(row)
            values.append(value)
    present = {item.item_id for item in items}
    removed = sum(item_id not in present for item_id in known)
    kept_rows, kept_from_rows = np.array(kept, np.int64), np.array(kept_from, np.int64)
    current = (added == changed == removed == 0 and same_attributes
               and np.array_equal(kept_from_rows, np.arange(len(prints)))
               and _same_columns(stored, [items[row] for row in kept]))
    return CatalogDiff(kept_rows, kept_from_rows, np.array(kept_skipped, np.int64), reasons, added, changed, removed,
                       current)


def same_item_attributes(path: Path, item_attributes: ItemAttributes | None, rows: np.ndarray) -> bool:
    """Whether ``path`` holds the catalog's labelled attributes for ``rows`` (catalog rows, in the file's
    order): the attribute files are not part of the items' fingerprints, so an edit to them alone is found here."""
    try:
        with h5py.File(path, "r") as handle:
            if "attributes" not in handle or item_attributes is None:
                return "attributes" not in handle and item_attributes is None
            names, kinds, values = item_attributes
            return (json.loads(handle.attrs["attribute_names"]) == list(names)
                    and json.loads(handle.attrs["attribute_kinds"]) == list(kinds)
                    and np.array_equal(handle["attributes"][:], np.asarray(values, np.int8)[rows]))
    except (OSError, KeyError, ValueError) as error:
        log.warning("Rewriting %s: its attributes cannot be read (%s)", path, error)
        return False


def _source_mismatch(stored: dict, attributes: dict) -> str | None:
    for key in SOURCE_KEYS:
        if _plain(stored.get(key)) != _plain(attributes.get(key)):
            return f"its {key} differs"
    for key, default in OPTIONAL_KEYS.items():
        if _plain(stored.get(key, default)) != _plain(attributes.get(key, default)):
            return f"its {key} differs"
    return None


def _same_columns(stored: dict, items: Sequence[CatalogItem]) -> bool:
    return all(
        list(stored[name]) == [getattr(item, name) for item in items] for name in ("item_id", "path", "split", "title")
    ) and np.array_equal(stored["label"], [item.label for item in items])


def _strings(dataset: h5py.Dataset) -> list[str]:
    return list(dataset.asstr()[:]) if len(dataset) else []


def _plain(value):
    """HDF5 attributes come back as numpy scalars or bytes; compare them as Python values."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.generic):
        return value.item()
    return value
