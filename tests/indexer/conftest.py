"""Seeded synthetic embeddings.h5 files written with h5py, following docs/artifacts.md to the letter."""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest

CLASS_NAMES = ["shirt", "trouser", "dress"]
STRING = h5py.string_dtype("utf-8")


def unit_rows(rng: np.random.Generator, count: int, dimension: int) -> np.ndarray:
    """Random float32 rows scaled to length 1."""
    x = rng.standard_normal((count, dimension)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def default_attrs(dimension: int, class_names: list[str]) -> dict:
    """The attributes the embedder writes, with plausible values."""
    return {
        "format": "lookbook-embeddings",
        "format_version": 1,
        "model_name": "resnet50",
        "checkpoint_sha256": "ab" * 32,
        "checkpoint_path": "var/test/embedder.pt",
        "embedding_size": dimension,
        "preprocessing": json.dumps(
            {"image_size": 32, "resize": 32, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "grayscale": True}
        ),
        "catalog_kind": "fashion-mnist",
        "catalog_root": "/data/fashion-mnist",
        "catalog_subset": "upper",
        "has_titles": False,
        "class_names": json.dumps(class_names),
        "created_at": "2024-05-01T12:00:00+00:00",
    }


def write_embeddings(
    path: Path,
    vectors: np.ndarray,
    labels: np.ndarray,
    splits: list[str],
    class_names: list[str] | None = None,
    *,
    titles: list[str] | None = None,
    drop: tuple[str, ...] = (),
    attrs: dict | None = None,
    datasets: dict | None = None,
) -> Path:
    """Write an embeddings.h5; ``drop`` leaves datasets/attributes out, ``attrs``/``datasets`` override."""
    class_names = CLASS_NAMES if class_names is None else class_names
    count = len(vectors)
    columns = {
        "embeddings": np.asarray(vectors, dtype=np.float32),
        "item_id": [f"item-{row:04d}" for row in range(count)],
        "path": [f"train#{row}" for row in range(count)],
        "label": np.asarray(labels, dtype=np.int32),
        "split": list(splits),
        "title": list(titles) if titles is not None else [""] * count,
    }
    columns.update(datasets or {})
    with h5py.File(path, "w") as handle:
        for name, data in columns.items():
            if name in drop:
                continue
            if name == "embeddings":
                handle.create_dataset(name, data=data, chunks=(max(1, min(16, len(data))), data.shape[1]))
            elif name == "label":
                handle.create_dataset(name, data=data)
            else:
                handle.create_dataset(name, data=data, dtype=STRING)
        merged = default_attrs(columns["embeddings"].shape[1], class_names) | (attrs or {})
        for name, value in merged.items():
            if name not in drop:
                handle.attrs[name] = value
    return path


@pytest.fixture
def make_embeddings(tmp_path: Path) -> Callable[..., Path]:
    """A factory writing seeded files: make_embeddings(name, count=60, dimension=8, seed=0, **overrides)."""

    def make(name: str = "embeddings.h5", count: int = 60, dimension: int = 8, seed: int = 0, **overrides) -> Path:
        rng = np.random.default_rng(seed)
        labels = np.arange(count) % len(CLASS_NAMES)
        splits = [("train", "train", "train", "val", "test")[row % 5] for row in range(count)]
        return write_embeddings(tmp_path / name, unit_rows(rng, count, dimension), labels, splits, **overrides)

    return make


@pytest.fixture
def embeddings_path(make_embeddings: Callable[..., Path]) -> Path:
    """A valid 60 x 8 file: three classes, train / val / test splits."""
    return make_embeddings()
