"""Fixtures for the catalog readers: sample DeepFashion-layout catalogs and tiny Fashion-MNIST idx files."""
from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest

from embedder.catalogs.sample_deepfashion import write_sample_catalog

SAMPLE_PER_CATEGORY = 6


def write_idx(path: Path, array: np.ndarray) -> Path:
    """An idx file of unsigned bytes (gzipped when the name ends in .gz), as the real ones are made."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(size).to_bytes(4, "big") for size in array.shape)
    data = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


def write_fashion_mnist(directory: Path, train: int = 12, test: int = 5, gz: bool = True, seed: int = 0) -> Path:
    """The four Fashion-MNIST files with random 28x28 images and labels 0..9 in turn."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    for prefix, count in (("train", train), ("t10k", test)):
        write_idx(directory / f"{prefix}-images-idx3-ubyte{suffix}", rng.integers(0, 256, (count, 28, 28)))
        write_idx(directory / f"{prefix}-labels-idx1-ubyte{suffix}", np.arange(count) % 10)
    return directory


def rewrite_rows(path: Path, change) -> None:
    """Rewrite an annotation file's rows (a list of lines) with ``change``, keeping the count line right."""
    lines = path.read_text().splitlines()
    rows = change(lines[2:])
    path.write_text(f"{len(rows)}\n{lines[1]}\n" + "".join(row + "\n" for row in rows))


@pytest.fixture(scope="session")
def sample_catalog_root(tmp_path_factory) -> Path:
    """A sample catalog shared by the tests that only read it."""
    return write_sample_catalog(tmp_path_factory.mktemp("sample") / "catalog", SAMPLE_PER_CATEGORY, seed=0)


@pytest.fixture
def sample_catalog_copy(sample_catalog_root, tmp_path) -> Path:
    """A private copy of the sample catalog, for tests that damage it."""
    return Path(shutil.copytree(sample_catalog_root, tmp_path / "catalog"))


@pytest.fixture
def fashion_mnist_dir(tmp_path) -> Path:
    """Tiny gzipped Fashion-MNIST files: 12 training and 5 test images."""
    return write_fashion_mnist(tmp_path / "fashion-mnist")
