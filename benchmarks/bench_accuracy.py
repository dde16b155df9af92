"""Fashion-MNIST kNN accuracy, side by side in one run: raw pixels, the untrained embedder, the trained one.

Protocol: index = the 60,000 training images, queries = the 10,000 test images, k = index.k,
similarity-weighted vote. Needs the trained artifacts of `make demo` (configs/demo.toml), or of the
run in --artifacts (a directory `manage.py --set artifacts_dir=DIR` trained and indexed).

    python -m benchmarks.bench_accuracy [--artifacts var/fashion-mnist]
"""
from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import numpy as np

from config import load_config
from embedder.catalogs import open_catalog
from embedder.checkpoint import catalog_preprocessing, create_embedder, load_checkpoint, save_checkpoint
from embedder.inference.extract import embed_catalog, embeddings_attributes
from indexer.embeddings_file import read_embeddings
from indexer.evaluation.protocol import evaluate_knn
from indexer.report.text import evaluation_table

CONFIG = Path("configs/demo.toml")


def untrained_embeddings(config, catalog, directory: Path, image_size: int) -> Path:
    """Embed the catalog with a randomly initialised network (the same seed as training starts from), at the
    trained embedder's image size."""
    settings = dataclasses.replace(config.embedder, weights="none", image_size=image_size)
    model, origin = create_embedder(settings)
    checkpoint = directory / "untrained.pt"
    save_checkpoint(checkpoint, model, catalog_preprocessing(settings, catalog), origin)
    loaded = load_checkpoint(checkpoint)
    output = directory / "untrained.h5"
    embed_catalog(catalog, loaded, output, embeddings_attributes(catalog, loaded, config.catalog.subset),
                  batch_size=config.embedder.batch_size)
    return output


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifacts", help="artifacts directory of the trained run (default: the demo's)")
    options = parser.parse_args(argv if argv is not None else [])
    overrides = {"artifacts_dir": options.artifacts} if options.artifacts else {}
    config = load_config(CONFIG, env={}, overrides=overrides)
    trained_path = config.artifacts / "embeddings.h5"
    if not trained_path.is_file():
        print(f"\n## accuracy: skipped, {trained_path} is missing (run `make demo` first)")
        return
    trained = read_embeddings(trained_path)
    catalog = open_catalog(config.catalog, config.artifacts / "downloads")
    assert trained.item_id.tolist() == [item.item_id for item in catalog.items], "catalog and embeddings differ"
    pixels = catalog.pixels.reshape(len(catalog), -1).astype(np.float32)
    pixels /= np.linalg.norm(pixels, axis=1, keepdims=True)
    runs = {"raw pixels (cosine)": dataclasses.replace(trained, embeddings=pixels)}
    with tempfile.TemporaryDirectory() as directory:
        started = time.perf_counter()
        image_size = int(trained.preprocessing["image_size"])
        runs[f"untrained ResNet-50 embedder ({image_size} px)"] = read_embeddings(
            untrained_embeddings(config, catalog, Path(directory), image_size))
        untrained_seconds = time.perf_counter() - started
    runs["trained embedder (" + trained.checkpoint_sha256[:8] + ")"] = trained
    k = config.index.k
    results = {name: evaluate_knn(vectors, "test", ("train",), k, "ip", use_gpu="off", map_at_r=False)
               for name, vectors in runs.items()}
    print(f"\n## accuracy: Fashion-MNIST kNN, 10,000 test queries against 60,000 training images, k={k}")
    print("| embedding | top-1 | top-5 | macro top-1 |")
    print("|---|---|---|---|")
    for name, evaluation in results.items():
        print(f"| {name} | {evaluation.top1:.4f} | {evaluation.top5:.4f} | {evaluation.macro_top1:.4f} |")
    print(f"\n(the untrained embedder took {untrained_seconds:.0f} s to embed 70,000 images)")
    print("\nPer class, trained embedder:\n")
    print(evaluation_table(list(results.values())[-1]))


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
