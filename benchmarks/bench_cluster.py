"""The engines beyond one machine, on this one: `build-index --engine ray` (a local Ray cluster) against the
one-process build on the same catalog, taking turns; and Milvus Lite against FAISS through the app's
VectorStore interface: a lone query's latency and recall@10 against exact search.

    python -m benchmarks.bench_cluster [--items 1000] [--image-size 224] [--rounds 2] [--vectors 20000]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np

from benchmarks.common import machine_line, manage, run_child
from benchmarks.deepfashion_layout import write_catalog
from config import IndexConfig
from indexer.approximate import build_approximate
from indexer.vector_store import FaissStore, MilvusStore, sync_milvus

TIMEOUT_S = 3600
QUERIES = 300


def ray_against_one_process(items: int, image_size: int, rounds: int) -> None:
    print(f"\n### build-index on Ray against one process: {items} generated DeepFashion-layout images at "
          f"{image_size} px, `--force` each time, taking turns\n")
    print("| engine | round | wall s (process start to saved index) | images/s of the embedding step (Ray start-up included) | ÷ one process |\n|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as directory:
        root = write_catalog(Path(directory) / "catalog", items)
        settings = ["--catalog", "deepfashion", "--root", str(root), "--weights", "none",
                    "--artifacts", str(Path(directory) / "artifacts"), "--set", "catalog.subset=all",
                    "--set", f"embedder.image_size={image_size}", "--set", "embedder.workers=0"]
        for turn in range(1, rounds + 1):
            seconds = {}
            for engine in ("local", "ray"):
                run = run_child(manage(*settings, "build-index", "--force", "--engine", engine), TIMEOUT_S)
                if run.returncode != 0:
                    raise RuntimeError(f"build-index --engine {engine} failed:\n{run.output[-3000:]}")
                report = json.loads((Path(directory) / "artifacts" / "build-report.json").read_text())
                seconds[engine] = run.seconds
                print(f"| {engine} | {turn} | {run.seconds:.1f} | {report['embeddings']['images_per_second']:.1f} "
                      f"| {run.seconds / seconds['local']:.2f} |")


def clustered(rng: np.random.Generator, count: int, dimension: int, centres: np.ndarray) -> np.ndarray:
    x = centres[rng.integers(0, len(centres), count)] + 0.35 * rng.standard_normal((count, dimension))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def lone_query_ms(store, queries: np.ndarray, k: int = 10) -> tuple[float, np.ndarray]:
    """p50 ms of one query at a time, and every query's top-k rows."""
    timings, rows = [], []
    for query in queries:
        started = time.perf_counter()
        _, found = store.search(query[None], k)
        timings.append(1e3 * (time.perf_counter() - started))
        rows.append(found[0])
    return statistics.median(timings), np.array(rows)


def recall(found: np.ndarray, exact: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(e)) / len(e) for a, e in zip(found, exact)]))


def milvus_against_faiss(count: int, dimension: int = 128) -> None:
    print(f"\n### Milvus Lite against FAISS: {count:,} clustered unit vectors of {dimension} dimensions, "
          f"{QUERIES} queries one at a time, through the VectorStore interface\n")
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((50, dimension))
    vectors, queries = clustered(rng, count, dimension, centres), clustered(rng, QUERIES, dimension, centres)
    labels = rng.integers(0, 20, count)
    ids = [f"item-{row:07d}" for row in range(count)]
    flat = faiss.IndexFlatIP(dimension)
    flat.add(vectors)
    exact_store = FaissStore(flat, labels, 20)
    _, exact = lone_query_ms(exact_store, queries)
    print("| store | index | lone query p50 ms | recall@10 vs exact | build / sync s |\n|---|---|---|---|---|")
    ivf, plan = build_approximate(vectors, "ivf", "ip")
    for name, index, store in (("FAISS", "flat (exact)", exact_store),
                               ("FAISS", f"IVF (nprobe {plan.parameters['nprobe']})", FaissStore(ivf, labels, 20))):
        ms, found = lone_query_ms(store, queries)
        print(f"| {name} | {index} | {ms:.3f} | {recall(found, exact):.3f} | - |")
    for milvus_index in ("FLAT", "IVF_FLAT", "HNSW"):
        with tempfile.TemporaryDirectory() as directory:
            config = IndexConfig(backend="milvus", uri=str(Path(directory) / "milvus.db"), milvus_index=milvus_index)
            report = sync_milvus(config, Path(directory), "bench", ids, vectors, labels, "ip")
            store = MilvusStore.open(config, Path(directory), "bench", ids, labels, dimension, "ip")
            try:
                ms, found = lone_query_ms(store, queries)
            finally:
                store.close()
        print(f"| Milvus Lite | {milvus_index} (defaults) | {ms:.3f} | {recall(found, exact):.3f} | {report.seconds:.1f} |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--vectors", type=int, default=20_000)
    args = parser.parse_args(argv or [])
    print(f"\n## cluster engines on one machine; {machine_line()}")
    milvus_against_faiss(args.vectors)
    ray_against_one_process(args.items, args.image_size, args.rounds)


if __name__ == "__main__":
    main(sys.argv[1:])
