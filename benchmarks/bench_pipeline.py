"""build-index end to end against the model alone, on the same Fashion-MNIST images; decoding measured apart.

1. Decoding and preprocessing alone, one process: Fashion-MNIST (PIL, as build-index does) and a
   generated DeepFashion-layout sample at 224 px, PIL against torchvision.io.
2. The model alone: the same images already preprocessed, in batches, as build-index runs it.
3. build-index end to end (catalog read, embedder made, images decoded, embedded, written to HDF5,
   index built) through the library, for each number of DataLoader workers; the model alone is
   measured before and after, and the ratio uses their mean, so a shared CPU's drift shows.

    python -m benchmarks.bench_pipeline [--items 4096] [--workers 0,1]
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import FASHION_MNIST
from benchmarks.deepfashion_layout import write_catalog
from config import Config, load_config
from embedder.catalogs import open_catalog
from embedder.catalogs.deepfashion import DeepFashionCatalog, clamp_box
from embedder.checkpoint import catalog_preprocessing, create_embedder
from embedder.inference.build import build_embeddings
from embedder.inference.extract import embed_batch, resolve_device
from embedder.inference.network import onnx_runtime_installed, prepare_model, resolve_precision
from embedder.transforms import Preprocessing, build_pixel_transform, normalize_batch
from indexer.index import build_index_file


def images_per_second(count: int, work) -> float:
    started = time.perf_counter()
    work()
    return count / (time.perf_counter() - started)


def decode_rates(directory: Path, count: int = 256) -> list[tuple[str, float, str]]:
    """(pipeline, images/s, note) for one process decoding and preprocessing images to uint8 tensors."""
    rows = []
    config = load_config(env={})
    fashion = open_catalog(config.catalog, directory / "downloads")
    pixels = build_pixel_transform(catalog_preprocessing(config.embedder, fashion))
    rows.append(("Fashion-MNIST 28 px -> 32 px, PIL", images_per_second(
        8 * count, lambda: [pixels(fashion.open_image(row)) for row in range(8 * count)]), "as build-index"))
    catalog = DeepFashionCatalog(write_catalog(directory / "deepfashion", count, processes=1), "all")
    preprocessing = Preprocessing(image_size=224)
    pixels = build_pixel_transform(preprocessing)
    pil = [pixels(catalog.open_image(row)) for row in range(count)]
    rows.append(("DeepFashion-size JPEG -> 224 px, PIL", images_per_second(
        count, lambda: [pixels(catalog.open_image(row)) for row in range(count)]), "as build-index"))
    tensors = [_torchvision_io(catalog, row, preprocessing) for row in range(count)]
    difference = np.mean([float((a.float() - b.float()).abs().mean()) for a, b in zip(pil, tensors)])
    rows.append(("DeepFashion-size JPEG -> 224 px, torchvision.io", images_per_second(
        count, lambda: [_torchvision_io(catalog, row, preprocessing) for row in range(count)]),
        f"differs from PIL by {difference:.2f} grey levels on average"))
    return rows


def _torchvision_io(catalog: DeepFashionCatalog, row: int, preprocessing: Preprocessing) -> torch.Tensor:
    """decode_jpeg, crop, letterbox and resize on uint8 tensors: the tensor counterpart of build_pixel_transform."""
    from torchvision.io import ImageReadMode, decode_jpeg, read_file
    from torchvision.transforms.v2 import functional as F

    item = catalog.items[row]
    image = decode_jpeg(read_file(str(catalog.root / item.path)), mode=ImageReadMode.RGB)
    box = clamp_box(item.bbox, image.shape[2], image.shape[1])
    if box is not None:
        image = image[:, box[1]:box[3], box[0]:box[2]]
    height, width = image.shape[1:]
    side = max(height, width)
    left, top = (side - width) // 2, (side - height) // 2
    fill = [round(255 * m) for m in preprocessing.mean]
    image = F.pad(image, [left, top, side - width - left, side - height - top], fill=fill)
    return F.resize(image, [preprocessing.image_size] * 2, antialias=True)


def model_only_rate(config: Config, batches: list[torch.Tensor], device: str, runtime: str) -> float:
    """The network alone on preprocessed batches, as embed_catalog runs it (export or compile not counted)."""
    precision = resolve_precision(config.embedder.precision, device, runtime)
    model, _ = create_embedder(config.embedder)
    model = prepare_model(model, device, config.embedder.compile, runtime, batches[0].shape[-1])
    embed_batch(model, batches[0], device, precision)  # warm-up
    return images_per_second(sum(len(b) for b in batches),
                             lambda: [embed_batch(model, batch, device, precision) for batch in batches])


def end_to_end(config: Config) -> tuple[float, float]:
    """build-index's two stages through the library: (images/s over everything, embedding loop's own images/s)."""
    started = time.perf_counter()
    extraction = build_embeddings(config, force=True)
    build_index_file(config.paths.embeddings, config.paths.index, config.index)
    return extraction.embedded / (time.perf_counter() - started), extraction.images_per_second


def compare(config: Config, directory: Path, batches: list[torch.Tensor], runtime: str, workers: list[int]) -> list:
    """Rows (runtime, workers, model alone, build-index, embedding loop) with the model timed before and after."""
    device = resolve_device(config.embedder.device)
    before = model_only_rate(config, batches, device, runtime)
    runs = []
    for count in workers:
        # A fresh artifacts directory each time: every run makes and saves its embedder, as a first build does.
        run = dataclasses.replace(config, artifacts_dir=directory / f"artifacts-{runtime}-{count}-{len(runs)}",
                                  embedder=dataclasses.replace(config.embedder, workers=count, runtime=runtime))
        runs.append((count, *end_to_end(run)))
    after = model_only_rate(config, batches, device, runtime)
    return [(runtime, count, before, after, whole, loop) for count, whole, loop in runs]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=4096)
    parser.add_argument("--workers", default="0", help="DataLoader workers to try with torch, comma-separated")
    args = parser.parse_args(argv or [])
    if not any(FASHION_MNIST.glob("train-images-idx3-ubyte*")):
        print(f"\n## pipeline: skipped, Fashion-MNIST is not in {FASHION_MNIST} (run `make catalog`)")
        return
    with tempfile.TemporaryDirectory() as directory:
        directory = Path(directory)
        config = load_config(env={}, overrides={"embedder.weights": "none", "catalog.limit": args.items,
                                                "artifacts_dir": str(directory / "artifacts")})
        device = resolve_device(config.embedder.device)
        print(f"\n## pipeline: build-index end to end vs the model alone, {args.items} Fashion-MNIST images, "
              f"batch {config.embedder.batch_size}, {device}")
        print("\n| decoding + preprocessing, 1 process | images/s | note |\n|---|---|---|")
        for name, rate, note in decode_rates(directory):
            print(f"| {name} | {rate:.0f} | {note} |")
        catalog = open_catalog(config.catalog, directory / "downloads")
        preprocessing = catalog_preprocessing(config.embedder, catalog)
        pixels = build_pixel_transform(preprocessing)
        images = normalize_batch(torch.stack([pixels(catalog.open_image(row)) for row in range(len(catalog))]),
                                 preprocessing)
        batches = list(images.split(config.embedder.batch_size))
        rows = compare(config, directory, batches, "torch", [int(w) for w in args.workers.split(",")])
        if device == "cpu" and onnx_runtime_installed():
            rows += compare(config, directory, batches, "onnxruntime", [0])
        print("\nbuild-index: everything from reading the catalog to the saved index; embedding loop: embed_catalog "
              "alone (ONNX export included); model alone: timed before and after, the ratios use the mean.\n")
        print("| runtime | workers | model alone images/s (before, after) | build-index images/s | ÷ model "
              "| embedding loop images/s | ÷ model |")
        print("|---|---|---|---|---|---|---|")
        for runtime, workers, before, after, whole, loop in rows:
            model = (before + after) / 2
            print(f"| {runtime} | {workers} | {model:.0f} ({before:.0f}, {after:.0f}) | {whole:.0f} "
                  f"| {whole / model:.2f} "
                  f"| {loop:.0f} | {loop / model:.2f} |")


if __name__ == "__main__":
    main(sys.argv[1:])
