"""benchmarks/accuracy_baselines.py: the autoencoder and classifier baselines embed every row, in catalog order."""
from __future__ import annotations

import numpy as np

from benchmarks.accuracy_baselines import autoencoder_embeddings, classifier_embeddings
from config import load_config
from embedder.catalogs import open_catalog
from tests.embedder.conftest import write_idx


def stripes(labels: np.ndarray, seed: int) -> np.ndarray:
    """28×28 images whose class is the stripes' direction (0 rows, 1 columns, 2 a checkerboard), noisy."""
    rng = np.random.default_rng(seed)
    lines = (np.arange(28) // 4) % 2
    patterns = np.stack([np.repeat(lines[:, None], 28, 1), np.repeat(lines[None, :], 28, 0),
                         lines[:, None] ^ lines[None, :]]) * 200
    noisy = patterns[labels] + rng.integers(0, 56, (len(labels), 28, 28))
    return np.roll(noisy, rng.integers(0, 4), axis=(1, 2)).astype(np.uint8)


def nearest_label_agreement(vectors: np.ndarray, labels: np.ndarray, queries: np.ndarray, index: np.ndarray) -> float:
    nearest = index[np.argmax(vectors[queries] @ vectors[index].T, axis=1)]
    return float(np.mean(labels[nearest] == labels[queries]))


def test_the_autoencoder_bottleneck_groups_what_looks_alike():
    labels = np.arange(150) % 3
    pixels = stripes(labels, seed=0)
    vectors = autoencoder_embeddings(pixels, np.arange(120), steps=60, batch_size=30, seed=0)
    assert vectors.shape == (150, 128)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    assert nearest_label_agreement(vectors, labels, np.arange(120, 150), np.arange(120)) >= 0.9


def test_the_classifier_embeds_every_catalog_row_in_order(tmp_path):
    root = tmp_path / "fashion-mnist"
    root.mkdir()
    for prefix, count, seed in (("train", 36, 1), ("t10k", 12, 2)):
        labels = np.arange(count) % 3
        write_idx(root / f"{prefix}-images-idx3-ubyte", stripes(labels, seed))
        write_idx(root / f"{prefix}-labels-idx1-ubyte", labels)
    config = load_config(None, env={}, overrides={
        "catalog.kind": "fashion-mnist", "catalog.root": str(root), "embedder.weights": "none",
        "embedder.batch_size": 16, "train.classes_per_batch": 3, "train.images_per_class": 4,
        "train.warmup_epochs": 0})
    catalog = open_catalog(config.catalog, tmp_path / "downloads")
    train_rows = np.flatnonzero([item.split == "train" for item in catalog.items])
    vectors = classifier_embeddings(config, catalog, train_rows, steps=30)
    assert vectors.shape == (48, 2048)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-4)
    labels = np.array([item.label for item in catalog.items])
    test_rows = np.setdiff1d(np.arange(48), train_rows)
    # Untrained, these features put a test item's nearest neighbour in its class for 1 in 12; rows out of
    # catalog order would pair items with others' labels.
    assert nearest_label_agreement(vectors, labels, test_rows, train_rows) >= 0.9
