"""build-index time and peak memory against catalog size, and the web server's memory over the largest catalog.

Each size is a fresh `manage.py build-index` in a child process over the first N Fashion-MNIST items
spread evenly (catalog.limit), with random weights (embedder.weights = none, so nothing is trained).
Its peak RSS comes from wait4; the server's from /proc/<pid>/status (VmHWM) once /healthz answers.
Time should grow linearly: the fit t = a + b·N and its worst residual say how straight the line is.
Images are streamed: a build's memory should barely grow with N (70,000 Fashion-MNIST images as
float32 network inputs would be 70,000 × 3 × 32 × 32 × 4 bytes = 860 MB).

    python -m benchmarks.bench_scaling [--sizes 1000,10000,70000] [--no-serve]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import FASHION_MNIST, manage, mib, run_child
from benchmarks.server_process import free_port, start_server, stop_server

BUILD_TIMEOUT = 3600
SERVE_TIMEOUT = 300


def build(directory: Path, size: int) -> dict:
    """One build-index in a child process: wall seconds, peak RSS and what its build report says."""
    artifacts = directory / f"artifacts-{size}"
    child = run_child(manage("--artifacts", str(artifacts), "--weights", "none", "--set", f"catalog.limit={size}",
                             "build-index"), BUILD_TIMEOUT)
    if child.returncode != 0:
        raise RuntimeError(f"build-index over {size} items failed:\n{child.output[-3000:]}")
    report = json.loads((artifacts / "build-report.json").read_text())
    return {"size": size, "seconds": child.seconds, "rss": child.peak_rss_bytes, "artifacts": artifacts,
            "embedding": report["embeddings"], "index": report["index"]}


def serve_memory(artifacts: Path, size: int) -> tuple[float, int, int]:
    """Start `manage.py serve` over a build; (seconds until /healthz answers, VmHWM bytes, VmRSS bytes)."""
    args = ["--artifacts", str(artifacts), "--weights", "none", "--set", f"catalog.limit={size}"]
    started = time.perf_counter()
    server = start_server(args, free_port(), artifacts / "serve.log", prod=False, startup_seconds=SERVE_TIMEOUT)
    try:
        ready = time.perf_counter() - started
        status = dict(line.split(":", 1) for line in Path(f"/proc/{server.pid}/status").read_text().splitlines())
        kib = {key: int(status[key].split()[0]) for key in ("VmHWM", "VmRSS")}
        return ready, kib["VmHWM"] * 1024, kib["VmRSS"] * 1024
    finally:
        stop_server(server)

def model_alone(images: int = 2048) -> float:
    """images/s of the network alone (as build-index runs it) on preprocessed Fashion-MNIST images, in this process."""
    from benchmarks.bench_pipeline import model_only_rate
    from config import load_config
    from embedder.catalogs import open_catalog
    from embedder.checkpoint import catalog_preprocessing
    from embedder.inference.extract import resolve_device
    from embedder.transforms import build_pixel_transform, normalize_batch

    config = load_config(env={}, overrides={"embedder.weights": "none", "catalog.limit": images})
    catalog = open_catalog(config.catalog, Path(tempfile.gettempdir()))
    preprocessing = catalog_preprocessing(config.embedder, catalog)
    pixels = build_pixel_transform(preprocessing)
    images = torch.stack([pixels(catalog.open_image(row)) for row in range(len(catalog))])
    batch = normalize_batch(images, preprocessing)
    device = resolve_device(config.embedder.device)
    return model_only_rate(config, list(batch.split(config.embedder.batch_size)), device, config.embedder.runtime)


def linear_fit(sizes: list[int], seconds: list[float]) -> str:
    """t = a + b·N by least squares, and the largest relative residual."""
    if len(sizes) < 2:
        return "one size: no line to fit"
    b, a = np.polyfit(sizes, seconds, 1)
    fitted = a + b * np.asarray(sizes)
    worst = float(np.max(np.abs(fitted - seconds) / seconds))
    return (f"fit: t = {a:.1f} s + {1000 * b:.2f} s per 1,000 images (worst residual {100 * worst:.0f}% of t); "
            f"{1 / b:.0f} images/s at the margin")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000", help="catalog sizes, comma-separated (70000: all)")
    parser.add_argument("--no-serve", action="store_true", help="skip the server's memory")
    args = parser.parse_args(argv or [])
    if not any(FASHION_MNIST.glob("train-images-idx3-ubyte*")):
        print(f"\n## scaling: skipped, Fashion-MNIST is not in {FASHION_MNIST} (run `make catalog`)")
        return
    sizes = sorted(int(size) for size in args.sizes.split(","))
    print(f"\n## scaling: `manage.py build-index` over {', '.join(f'{s:,}' for s in sizes)} Fashion-MNIST items "
          "(weights none), each in a fresh child process")
    with tempfile.TemporaryDirectory() as directory:
        before = model_alone()
        runs = [build(Path(directory), size) for size in sizes]
        model = (before + model_alone()) / 2
        print(f"\nmodel alone (the network as build-index runs it, on 2,048 preprocessed images, before and after): "
              f"{model:.0f} images/s")
        print("\n| items | wall s | s per 1,000 | images/s overall | ÷ model alone | embedding loop images/s "
              "| ÷ model alone | runtime, precision | index | peak RSS |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for run in runs:
            embedding, index = run["embedding"], run["index"]
            print(f"| {run['size']:,} | {run['seconds']:.1f} | {1000 * run['seconds'] / run['size']:.2f} "
                  f"| {run['size'] / run['seconds']:.0f} | {run['size'] / run['seconds'] / model:.2f} "
                  f"| {embedding['images_per_second']:.0f} | {embedding['images_per_second'] / model:.2f} "
                  f"| {embedding.get('runtime', '?')}, {embedding.get('precision', '?')} "
                  f"| {index.get('kind', 'flat')} | {mib(run['rss'])} |")
        print("\n" + linear_fit(sizes, [run["seconds"] for run in runs]))
        if len(runs) > 1:
            grow = (runs[-1]["rss"] - runs[0]["rss"]) / (sizes[-1] - sizes[0])
            print(f"peak RSS grows by {grow / 1024:.1f} KiB per item from {sizes[0]:,} to {sizes[-1]:,} items")
        if not args.no_serve:
            ready, peak, resident = serve_memory(runs[-1]["artifacts"], sizes[-1])
            print(f"server over {sizes[-1]:,} items: /healthz answered after {ready:.1f} s; "
                  f"peak RSS (VmHWM) {mib(peak)}, RSS {mib(resident)}")


if __name__ == "__main__":
    main(sys.argv[1:])
