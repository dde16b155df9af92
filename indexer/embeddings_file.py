"""Reading ``embeddings.h5``, the file between the embedder and the index (see docs/artifacts.md)."""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from config import LookbookError

log = logging.getLogger(__name__)

EMBEDDINGS_FORMAT = "lookbook-embeddings"
EMBEDDINGS_VERSION = 1
STRING_DATASETS = ("item_id", "path", "split", "title")
DATASETS = ("embeddings", "label") + STRING_DATASETS
REQUIRED_ATTRS = (
    "format",
    "format_version",
    "model_name",
    "checkpoint_sha256",
    "checkpoint_path",
    "embedding_size",
    "preprocessing",
    "catalog_kind",
    "catalog_root",
    "catalog_subset",
    "has_titles",
    "class_names",
    "created_at",
)
KNOWN_SPLITS = ("train", "val", "test")
FIX_HINT = "re-run `python manage.py build-index` to write it again"


class EmbeddingsFileError(LookbookError, RuntimeError):
    """An embeddings file that is missing, unreadable or not what docs/artifacts.md describes."""


@dataclass(frozen=True, eq=False)
class EmbeddingsFile:
    """The contents of one ``embeddings.h5``: N catalog items, their vectors and what made them."""

    source: Path  # the HDF5 file these came from
    embeddings: np.ndarray  # N x D float32, L2-normalised rows
    item_id: np.ndarray  # N str
    path: np.ndarray  # N str, relative to the catalog root
    label: np.ndarray  # N int, index into class_names
    split: np.ndarray  # N str: train / val / test
    title: np.ndarray  # N str, "" when the catalog has none
    model_name: str
    checkpoint_sha256: str
    checkpoint_path: str
    embedding_size: int
    preprocessing: dict[str, Any]
    catalog_kind: str
    catalog_root: str
    catalog_subset: str
    has_titles: bool
    class_names: list[str]
    created_at: str
    # Optional: the catalog's labelled attributes (DeepFashion's list_attr_img.txt), 1 / -1 / 0 per item.
    attributes: np.ndarray | None = None  # N x A int8
    attribute_names: list[str] = field(default_factory=list)
    attribute_kinds: list[str] = field(default_factory=list)
    # Whether each vector is the mean of the image's and its mirror image's (embedder.mirror_average), as the
    # queries' must then be; files from before the option were made without.
    mirror_average: bool = False

    @property
    def count(self) -> int:
        """How many items (rows) the file holds."""
        return int(self.embeddings.shape[0])

    @property
    def dimension(self) -> int:
        """The length D of each vector."""
        return int(self.embeddings.shape[1])

    def split_counts(self) -> dict[str, int]:
        """Rows per split, in train / val / test order."""
        names, counts = np.unique(self.split, return_counts=True)
        found = dict(zip(names.tolist(), counts.tolist()))
        return {name: found[name] for name in KNOWN_SPLITS if name in found}

    def rows_in(self, splits: tuple[str, ...] | list[str]) -> np.ndarray:
        """Row numbers (int64, ascending) of the items whose split is one of ``splits``."""
        return np.flatnonzero(np.isin(self.split, list(splits))).astype(np.int64)


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def embeddings_shape(path: str | Path) -> tuple[int, int]:
    """(N, D) of an embeddings file, checking only its format and the embeddings dataset; cheap."""
    path = Path(path)
    with _open(path) as handle:
        _check_format(path, handle)
        count, dimension = _embeddings_dataset(path, handle).shape
    return int(count), int(dimension)


def read_embeddings(path: str | Path) -> EmbeddingsFile:
    """Read and check an ``embeddings.h5``; EmbeddingsFileError says what is wrong with it."""
    path = Path(path)
    with _open(path) as handle:
        _check_format(path, handle)
        missing = [name for name in REQUIRED_ATTRS if name not in handle.attrs]
        if missing:
            raise _error(path, f"attribute(s) {', '.join(missing)} missing")
        vectors = _read_vectors(path, handle)
        count = vectors.shape[0]
        columns = {name: _read_strings(path, handle, name, count) for name in STRING_DATASETS}
        label = _read_labels(path, handle, count)
        attrs = _read_attrs(path, handle)
        attrs.update(_read_item_attributes(path, handle, count))
    if vectors.shape[1] != attrs["embedding_size"]:
        raise _error(
            path,
            f"embeddings have {vectors.shape[1]} columns but the embedding_size attribute says "
            f"{attrs['embedding_size']}",
        )
    _check_columns(path, columns, label, len(attrs["class_names"]))
    _check_unit_rows(path, vectors, columns["item_id"])
    log.info("read %d embeddings of dimension %d from %s", count, vectors.shape[1], path)
    return EmbeddingsFile(source=path, embeddings=vectors, label=label, **columns, **attrs)


# How far a stored vector's length may be from 1: float32 rounding of a normalised vector is far below it.
UNIT_TOLERANCE = 1e-3


def _check_unit_rows(path: Path, vectors: np.ndarray, item_ids: np.ndarray) -> None:
    """Every row a unit vector, as the embedder writes them: a row of zeros (vectors that never reached the
    disk before a crash) or of NaNs would otherwise be indexed and found, silently."""
    for start in range(0, len(vectors), 65536):  # bounded temporary memory for large catalogs
        norms = np.linalg.norm(vectors[start:start + 65536], axis=1)
        bad = np.flatnonzero(~(np.abs(norms - 1) <= UNIT_TOLERANCE))
        if len(bad):
            row = start + int(bad[0])
            raise _error(path, f"row {row} ({item_ids[row]}) is not a unit vector (length {norms[bad[0]]:.4g}); "
                               f"{len(bad)} such row(s) in rows {start}-{start + len(norms) - 1}")


def _error(path: Path, problem: str) -> EmbeddingsFileError:
    return EmbeddingsFileError(f"{path}: {problem}; {FIX_HINT}")


def _open(path: Path) -> h5py.File:
    if not path.is_file():
        raise EmbeddingsFileError(
            f"{path}: embeddings file does not exist; run `python manage.py build-index` to create it"
        )
    try:
        return h5py.File(path, "r")
    except OSError as error:
        raise _error(path, f"not a readable HDF5 file ({error})") from None


def _decode(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.generic):
        return value.item()
    return value


def _check_format(path: Path, handle: h5py.File) -> None:
    found = _decode(handle.attrs.get("format"))
    if found != EMBEDDINGS_FORMAT:
        raise _error(path, f"format attribute is {found!r}, expected {EMBEDDINGS_FORMAT!r}")
    version = _decode(handle.attrs.get("format_version"))
    if version != EMBEDDINGS_VERSION:
        raise _error(
            path, f"format_version is {version!r}; this Lookbook reads version {EMBEDDINGS_VERSION}"
        )


def _embeddings_dataset(path: Path, handle: h5py.File) -> h5py.Dataset:
    dataset = handle.get("embeddings")
    if not isinstance(dataset, h5py.Dataset):
        raise _error(path, "dataset 'embeddings' missing")
    if dataset.ndim != 2 or dataset.shape[1] == 0:
        raise _error(path, f"dataset 'embeddings' has shape {dataset.shape}, expected N x D")
    if not np.issubdtype(dataset.dtype, np.floating):
        raise _error(path, f"dataset 'embeddings' has dtype {dataset.dtype}, expected float32")
    return dataset


def _read_vectors(path: Path, handle: h5py.File) -> np.ndarray:
    vectors = np.ascontiguousarray(_embeddings_dataset(path, handle)[()], dtype=np.float32)
    if not np.isfinite(vectors).all():
        bad = int(np.flatnonzero(~np.isfinite(vectors).all(axis=1))[0])
        raise _error(path, f"embeddings row {bad} holds NaN or infinite values")
    return vectors


def _dataset(path: Path, handle: h5py.File, name: str, count: int) -> h5py.Dataset:
    dataset = handle.get(name)
    if not isinstance(dataset, h5py.Dataset):
        raise _error(path, f"dataset {name!r} missing")
    if dataset.ndim != 1 or dataset.shape[0] != count:
        raise _error(path, f"dataset {name!r} has shape {dataset.shape}, expected ({count},) like 'embeddings'")
    return dataset


def _read_strings(path: Path, handle: h5py.File, name: str, count: int) -> np.ndarray:
    dataset = _dataset(path, handle, name, count)
    if h5py.check_string_dtype(dataset.dtype) is None:
        raise _error(path, f"dataset {name!r} has dtype {dataset.dtype}, expected UTF-8 strings")
    try:
        values = dataset.asstr()[()]
    except UnicodeDecodeError as error:
        raise _error(path, f"dataset {name!r} is not valid UTF-8 ({error})") from None
    return np.asarray(values, dtype=str)


def _read_labels(path: Path, handle: h5py.File, count: int) -> np.ndarray:
    dataset = _dataset(path, handle, "label", count)
    if not np.issubdtype(dataset.dtype, np.integer):
        raise _error(path, f"dataset 'label' has dtype {dataset.dtype}, expected int32")
    return dataset[()].astype(np.int64)


def _read_json_attr(path: Path, handle: h5py.File, name: str) -> Any:
    text = _decode(handle.attrs[name])
    try:
        return json.loads(text)
    except (TypeError, json.JSONDecodeError) as error:
        raise _error(path, f"attribute {name!r} is not JSON text ({error})") from None


def _read_attrs(path: Path, handle: h5py.File) -> dict[str, Any]:
    attrs = {name: _decode(handle.attrs[name]) for name in REQUIRED_ATTRS if name not in ("format", "format_version")}
    preprocessing = _read_json_attr(path, handle, "preprocessing")
    class_names = _read_json_attr(path, handle, "class_names")
    if not isinstance(preprocessing, dict):
        raise _error(path, "attribute 'preprocessing' must be a JSON object")
    if not isinstance(class_names, list) or not class_names or not all(isinstance(c, str) for c in class_names):
        raise _error(path, "attribute 'class_names' must be a non-empty JSON list of strings")
    size = attrs["embedding_size"]
    if isinstance(size, bool) or not isinstance(size, int):
        raise _error(path, f"attribute 'embedding_size' is {size!r}, expected an integer")
    text_attrs = ("model_name", "checkpoint_sha256", "checkpoint_path", "catalog_kind", "catalog_root",
                  "catalog_subset", "created_at")
    attrs.update({name: str(attrs[name]) for name in text_attrs})
    attrs.update(preprocessing=preprocessing, class_names=class_names, has_titles=bool(attrs["has_titles"]),
                 mirror_average=bool(handle.attrs.get("mirror_average", False)))
    return attrs


def _read_item_attributes(path: Path, handle: h5py.File, count: int) -> dict[str, Any]:
    """The optional `attributes` dataset with its names and kinds; {} when the file has none."""
    if "attributes" not in handle:
        return {}
    dataset = handle["attributes"]
    if not isinstance(dataset, h5py.Dataset) or dataset.ndim != 2 or dataset.shape[0] != count:
        raise _error(path, f"dataset 'attributes' has shape {getattr(dataset, 'shape', None)}, expected ({count}, A)")
    if not np.issubdtype(dataset.dtype, np.integer):
        raise _error(path, f"dataset 'attributes' has dtype {dataset.dtype}, expected int8")
    for name in ("attribute_names", "attribute_kinds"):
        if name not in handle.attrs:
            raise _error(path, f"dataset 'attributes' is there but the attribute {name!r} is missing")
    names, kinds = _read_json_attr(path, handle, "attribute_names"), _read_json_attr(path, handle, "attribute_kinds")
    for name, value in (("attribute_names", names), ("attribute_kinds", kinds)):
        if not isinstance(value, list) or len(value) != dataset.shape[1] or not all(isinstance(v, str) for v in value):
            raise _error(path, f"attribute {name!r} must be a JSON list of {dataset.shape[1]} strings")
    values = dataset[()].astype(np.int8)
    if values.size and not np.isin(values, (-1, 0, 1)).all():
        raise _error(path, "dataset 'attributes' holds values other than 1, -1 and 0")
    return {"attributes": values, "attribute_names": names, "attribute_kinds": kinds}


def _check_columns(path: Path, columns: dict[str, np.ndarray], label: np.ndarray, num_classes: int) -> None:
    if label.size and (label.min() < 0 or label.max() >= num_classes):
        bad = int(np.flatnonzero((label < 0) | (label >= num_classes))[0])
        raise _error(path, f"label of row {bad} is {label[bad]}, outside the {num_classes} class_names")
    unknown = sorted(set(np.unique(columns["split"]).tolist()) - set(KNOWN_SPLITS))
    if unknown:
        raise _error(path, f"split holds {', '.join(map(repr, unknown))}; expected {', '.join(KNOWN_SPLITS)}")
    ids = columns["item_id"]
    unique, counts = np.unique(ids, return_counts=True)
    if unique.size != ids.size:
        raise _error(path, f"item_id {str(unique[counts > 1][0])!r} appears more than once")
