"""Fashion-MNIST kNN accuracy of Lookbook's recipe and the usual baselines, side by side in one run.

Protocol (`manage.py evaluate`'s): index = the 60,000 training images, queries = the 10,000 test images,
k = index.k, similarity-weighted vote; top-1, top-5, mAP@R and each class's top-1. The rows:

- raw pixels (cosine), the untrained network (the recipe's starting weights);
- a convolutional autoencoder's bottleneck (no labels) and a plain cross-entropy classifier's pooled
  features (benchmarks/accuracy_baselines.py);
- triplet loss alone (`train.aux_loss_weight = 0`) and Lookbook's recipe (configs/demo.toml), both trained
  by `manage.py train`'s loop;

every trained one for the same --steps batches (default 800, the demo budget's count on a slow 2-core
machine). With --artifacts, the embeddings of a run trained there (e.g. the full recipe) join the table.
Writes <demo artifacts>/baselines.json, which `manage.py evaluate`'s report shows beside its own numbers.

    python -m benchmarks.bench_accuracy [--steps 800] [--artifacts var/fashion-mnist-full]
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.accuracy_baselines import autoencoder_embeddings, classifier_embeddings
from config import Config, load_config
from embedder.catalogs import open_catalog
from embedder.checkpoint import catalog_preprocessing, create_embedder, load_checkpoint, save_checkpoint
from embedder.inference.extract import embed_catalog, embeddings_attributes
from embedder.training.loop import start_stem_from_catalog, train as train_embedder
from embedder.training.state import split_validation
from indexer.embeddings_file import EmbeddingsFile, read_embeddings
from indexer.evaluation.protocol import evaluate_knn, knn_top1
from indexer.report.baselines import baseline_entry, write_baselines
from indexer.report.text import percent

CONFIG = Path("configs/demo.toml")


def embed_with(config: Config, catalog, checkpoint: Path, output: Path) -> EmbeddingsFile:
    """The catalog's embeddings under a checkpoint, as build-index writes them."""
    loaded = load_checkpoint(checkpoint)
    attributes = embeddings_attributes(catalog, loaded, config.catalog.subset, config.embedder.mirror_average)
    embed_catalog(catalog, loaded, output, attributes, batch_size=config.embedder.batch_size)
    return read_embeddings(output)


def untrained_embeddings(config: Config, catalog, train_rows: np.ndarray, directory: Path) -> EmbeddingsFile:
    """The catalog embedded by the recipe's network before training (same seed, same starting weights)."""
    model, origin = create_embedder(config.embedder)
    preprocessing = catalog_preprocessing(config.embedder, catalog)
    start_stem_from_catalog(model, origin, catalog, train_rows, preprocessing, config, "cpu")
    checkpoint = directory / "untrained.pt"
    save_checkpoint(checkpoint, model, preprocessing, origin)
    return embed_with(config, catalog, checkpoint, directory / "untrained.h5")


def trained_embeddings(config: Config, catalog, directory: Path) -> EmbeddingsFile:
    """Train with manage.py train's loop into ``directory`` and embed the catalog with the kept checkpoint."""
    config = dataclasses.replace(config, artifacts_dir=directory)
    train_embedder(config, knn_accuracy=knn_top1, catalog=catalog)
    return embed_with(config, catalog, config.paths.checkpoint, directory / "embeddings.h5")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=800, help="training steps of every trained baseline")
    parser.add_argument("--artifacts", help="also evaluate the embeddings.h5 of a run trained in this directory")
    options = parser.parse_args(argv if argv is not None else [])
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    # Steps decide, not the clock: each trained row sees the same batches on any machine.
    config = load_config(CONFIG, env={}, overrides={"train.steps": options.steps, "train.time_budget": 0,
                                                    "train.epochs": 1000})
    catalog = open_catalog(config.catalog, config.paths.downloads)
    train_rows, _ = split_validation(catalog, config.train.holdout_per_class, config.train.seed)
    batch_size = config.train.classes_per_batch * config.train.images_per_class
    pixels = catalog.pixels.reshape(len(catalog), -1).astype(np.float32)
    seconds: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        started = time.perf_counter()
        template = untrained_embeddings(config, catalog, train_rows, scratch)
        seconds["untrained network"] = time.perf_counter() - started

        def as_file(vectors: np.ndarray) -> EmbeddingsFile:
            return dataclasses.replace(template, embeddings=np.ascontiguousarray(vectors, dtype=np.float32))

        runs: dict[str, tuple[EmbeddingsFile, str]] = {
            "raw pixels": (as_file(pixels / np.linalg.norm(pixels, axis=1, keepdims=True)), "784-d, cosine"),
            "untrained network": (template, "random weights, residual blocks as the identity, stem from patches"),
        }
        for name, note, make in (
            ("autoencoder bottleneck", "128-d, reconstruction loss, no labels",
             lambda: as_file(autoencoder_embeddings(catalog.pixels, train_rows, options.steps, batch_size,
                                                    config.train.seed))),
            ("cross-entropy classifier", "2048-d pooled features, linear head",
             lambda: as_file(classifier_embeddings(config, catalog, train_rows, options.steps))),
            ("triplet loss alone", "batch-hard triplet, no normalised softmax",
             lambda: trained_embeddings(dataclasses.replace(
                 config, train=dataclasses.replace(config.train, aux_loss_weight=0.0)), catalog, scratch / "triplet")),
            ("Lookbook recipe", "triplet + normalised softmax (configs/demo.toml)",
             lambda: trained_embeddings(config, catalog, scratch / "recipe")),
        ):
            started = time.perf_counter()
            runs[name] = (make(), note)
            seconds[name] = time.perf_counter() - started
        if options.artifacts:
            extra = read_embeddings(Path(options.artifacts) / "embeddings.h5")
            runs[f"{options.artifacts} ({extra.checkpoint_sha256[:8]})"] = (extra, "trained there")
        k = config.index.k
        results = {name: evaluate_knn(vectors, config.evaluate.query_split, config.evaluate.index_splits, k,
                                      config.index.metric, use_gpu="off", map_at_r=True)
                   for name, (vectors, _) in runs.items()}
    entries = [baseline_entry(name, results[name], runs[name][1]) for name in results]
    protocol = next(iter(results.values())).protocol
    setup = (f"trained ones: {options.steps} steps of {batch_size} images each, the recipe's network, "
             "optimiser and schedule")
    config.paths.baselines.parent.mkdir(parents=True, exist_ok=True)
    write_baselines(config.paths.baselines, protocol, entries, setup)

    print(f"\n## accuracy: Fashion-MNIST kNN, {protocol['queries']:,} test queries against "
          f"{protocol['index_items']:,} training images, k={k}; {setup}")
    print("| embedding | top-1 | top-5 | mAP@R | macro top-1 | seconds to make |")
    print("|---|---|---|---|---|---|")
    for entry in entries:
        made = seconds.get(entry["name"])
        print(f"| {entry['name']} | {percent(entry['top1'])} | {percent(entry['top5'])} | "
              f"{percent(entry['map_at_r'])} | {percent(entry['macro_top1'])} | "
              f"{'' if made is None else f'{made:.0f}'} |")
    print("\nTop-1 per class:\n")
    print("| class | " + " | ".join(entry["name"] for entry in entries) + " |")
    print("|---|" + "---|" * len(entries))
    for name in catalog.class_names:
        print(f"| {name} | " + " | ".join(percent(entry["class_top1"].get(name)) for entry in entries) + " |")
    print(f"\n(written to {config.paths.baselines}; `manage.py --config {CONFIG} evaluate` shows them in its report)")


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
