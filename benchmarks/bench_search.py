"""Search: FAISS exact batched against numpy and batch-1; IVF and HNSW against exact on 70,000 × 128 vectors; GPU.

1. Exact top-10: FAISS flat over 60,000 × 128 random unit vectors, batched, against numpy brute force
   and against one query at a time.
2. Approximate: the indexes build-index makes (indexer.approximate: IVF with nlist ≈ 4·√N, HNSW with
   M = 32, each with its search breadth tuned to recall@10 ≥ 0.97 on held-out rows) against the
   exact one, on real-size vectors: Fashion-MNIST's pixels projected by PCA to 128-d and normalised
   (60,000 training images indexed, the 10,000 test images as queries), or --embeddings FILE (an
   embeddings.h5: its test split queries the others). Recall@10 against exact search, kNN accuracy
   (10 neighbours, similarity-weighted vote) against exact, build time, queries/s, batch-1 latency.
3. Batch-1 latency of exact and IVF search against catalog size, which sets index.approximate_from.
4. FAISS on the GPU against the CPU, when faiss sees a GPU.

    python -m benchmarks.bench_search [--embeddings FILE] [--no-hnsw]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import faiss
import numpy as np

from benchmarks.common import FASHION_MNIST, interleaved_best
from indexer.approximate import build_approximate, recall_at_k
from indexer.index import build_index, gpu_available, search
from indexer.knn import knn_vote

DATABASE, QUERIES, DIMENSION, K = 60_000, 2_000, 128, 10


def unit_vectors(count: int, dimension: int, rng: np.random.Generator) -> np.ndarray:
    """Random float32 rows of length 1."""
    x = rng.standard_normal((count, dimension)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def exact_search() -> None:
    rng = np.random.default_rng(0)
    xb, xq = unit_vectors(DATABASE, DIMENSION, rng), unit_vectors(QUERIES, DIMENSION, rng)
    index = build_index(xb, "ip", "off")

    def numpy_brute() -> None:
        for row in range(0, QUERIES, 500):
            scores = xq[row:row + 500] @ xb.T
            np.argpartition(-scores, K, axis=1)[:, :K]

    single = 200
    seconds = interleaved_best({
        "FAISS flat, batched": lambda: search(index, xq, K),
        "numpy brute force, batched": numpy_brute,
        "FAISS flat, one query at a time": lambda: [search(index, xq[row:row + 1], K) for row in range(single)],
    }, rounds=2)
    seconds["FAISS flat, one query at a time"] *= QUERIES / single
    print(f"\n## search: exact top-{K}, {QUERIES} queries against {DATABASE:,} × {DIMENSION} (best of 2)")
    print("| method | queries/s | vs FAISS batched |\n|---|---|---|")
    for name, spent in seconds.items():
        print(f"| {name} | {QUERIES / spent:,.0f} | {seconds['FAISS flat, batched'] / spent:.2f} |")


def fashion_mnist_pca(dimension: int = 128) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, str]:
    """Fashion-MNIST pixels -> PCA (fitted on train) -> unit vectors: (xb, labels, xq, labels, source)."""
    from embedder.catalogs.fashion_mnist import FashionMnistCatalog  # only the reader; no torch model

    catalog = FashionMnistCatalog(FASHION_MNIST)
    pixels = catalog.pixels.reshape(len(catalog), -1).astype(np.float32) / 255
    train = np.array([item.split == "train" for item in catalog.items])
    mean = pixels[train].mean(axis=0)
    _, vectors = np.linalg.eigh(np.cov((pixels[train] - mean).T))
    x = (pixels - mean) @ vectors[:, ::-1][:, :dimension]
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    return x[train], catalog.labels[train], x[~train], catalog.labels[~train], \
        f"Fashion-MNIST pixels, PCA to {dimension}-d, normalised"


def embeddings_file(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, str]:
    """An embeddings.h5: the test split queries an index of the other rows."""
    from indexer.embeddings_file import read_embeddings

    stored = read_embeddings(path)
    test = stored.split == "test"
    x = stored.embeddings
    return x[~test], stored.label[~test], x[test], stored.label[test], f"{path} ({stored.model_name})"


def batch1_latency(index: faiss.Index, xq: np.ndarray, count: int = 300) -> float:
    """Mean microseconds per single-query search."""
    started = time.perf_counter()
    for row in range(count):
        index.search(xq[row:row + 1], K)
    return 1e6 * (time.perf_counter() - started) / count


def approximate_search(xb: np.ndarray, yb: np.ndarray, xq: np.ndarray, yq: np.ndarray, source: str,
                       kinds: tuple[str, ...]) -> None:
    classes = int(max(yb.max(), yq.max())) + 1
    indexes, build_seconds, plans = {}, {}, {}
    started = time.perf_counter()
    indexes["flat"] = build_index(xb, "ip", "off")
    build_seconds["flat"] = time.perf_counter() - started
    for kind in kinds:
        started = time.perf_counter()
        indexes[kind], plans[kind] = build_approximate(xb, kind, "ip", recall_target=0.97)
        build_seconds[kind] = time.perf_counter() - started
    seconds = interleaved_best({kind: (lambda index=index: search(index, xq, K)) for kind, index in indexes.items()},
                               rounds=2)
    D_exact, I_exact = search(indexes["flat"], xq, K)
    exact_accuracy = float((knn_vote(D_exact, I_exact, yb, classes).argmax(axis=1) == yq).mean())
    print(f"\n## search: approximate against exact, {len(xb):,} × {xb.shape[1]} indexed, {len(xq):,} queries; "
          f"{source}")
    print("| index | parameters | build s | queries/s batched | batch-1 µs | recall@10 vs exact | kNN top-1 "
          "| Δ points |")
    print("|---|---|---|---|---|---|---|---|")
    for kind, index in indexes.items():
        D, I = search(index, xq, K)
        accuracy = float((knn_vote(D, I, yb, classes).argmax(axis=1) == yq).mean())
        parameters = ", ".join(f"{key} {value}" for key, value in plans[kind].parameters.items()
                               if key in ("nlist", "nprobe", "M", "efSearch")) if kind in plans else "exact"
        print(f"| {kind} | {parameters} | {build_seconds[kind]:.1f} | {len(xq) / seconds[kind]:,.0f} "
              f"| {batch1_latency(index, xq):.0f} | {recall_at_k(I, I_exact, D, D_exact, 'ip'):.4f} | {accuracy:.4f} "
              f"| {100 * (accuracy - exact_accuracy):+.2f} |")


def latency_against_size(xb: np.ndarray, xq: np.ndarray, sizes: tuple[int, ...] = (35_000, 70_000, 140_000)) -> None:
    """Exact and IVF batch-1 latency as the catalog grows (rows beyond the data are jittered copies)."""
    rng = np.random.default_rng(1)
    print("\n## search: batch-1 latency against catalog size (exact flat vs IVF tuned to recall@10 ≥ 0.97)")
    print("| vectors | flat µs | IVF µs | IVF nprobe / nlist | flat ÷ IVF |\n|---|---|---|---|---|")
    for size in sizes:
        rows = np.resize(np.arange(len(xb)), size)
        x = xb[rows] + 0.02 * rng.standard_normal((size, xb.shape[1])).astype(np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        flat = batch1_latency(build_index(x, "ip", "off"), xq)
        ivf, plan = build_approximate(x, "ivf", "ip", recall_target=0.97)
        approximate = batch1_latency(ivf, xq)
        print(f"| {size:,} | {flat:.0f} | {approximate:.0f} | {plan.parameters['nprobe']} / {plan.parameters['nlist']} "
              f"| {flat / approximate:.1f} |")


def gpu_against_cpu(xb: np.ndarray, xq: np.ndarray) -> None:
    if not gpu_available():
        reason = "this faiss has no GPU support" if not hasattr(faiss, "StandardGpuResources") else "no GPU visible"
        print(f"\n## search: FAISS GPU vs CPU skipped: {reason} (pip install '.[gpu]' on a CUDA machine)")
        return
    cpu, gpu = build_index(xb, "ip", "off"), build_index(xb, "ip", "on")
    seconds = interleaved_best({"CPU": lambda: search(cpu, xq, K), "GPU": lambda: search(gpu, xq, K)}, rounds=3)
    started = time.perf_counter()
    build_approximate(xb, "ivf", "ip", gpu=False)
    cpu_build = time.perf_counter() - started
    started = time.perf_counter()
    build_approximate(xb, "ivf", "ip", gpu=True)
    gpu_build = time.perf_counter() - started
    print(f"\n## search: FAISS GPU vs CPU, {len(xq):,} queries against {len(xb):,} × {xb.shape[1]}")
    print("| | CPU | GPU | GPU ÷ CPU speed |\n|---|---|---|---|")
    print(f"| exact search, queries/s | {len(xq) / seconds['CPU']:,.0f} | {len(xq) / seconds['GPU']:,.0f} "
          f"| {seconds['CPU'] / seconds['GPU']:.1f} |")
    print(f"| IVF build with tuning, s | {cpu_build:.1f} | {gpu_build:.1f} | {cpu_build / gpu_build:.1f} |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--embeddings", type=Path, help="an embeddings.h5 to search instead of Fashion-MNIST PCA")
    parser.add_argument("--no-hnsw", action="store_true", help="skip HNSW (its build is the slow part)")
    parser.add_argument("--no-sizes", action="store_true", help="skip latency against catalog size")
    args = parser.parse_args(argv or [])
    exact_search()
    if args.embeddings:
        data = embeddings_file(args.embeddings)
    elif any(FASHION_MNIST.glob("train-images-idx3-ubyte*")):
        data = fashion_mnist_pca()
    else:
        rng = np.random.default_rng(0)
        xb, xq = unit_vectors(60_000, DIMENSION, rng), unit_vectors(10_000, DIMENSION, rng)
        data = xb, rng.integers(10, size=60_000), xq, rng.integers(10, size=10_000), "random unit vectors"
    xb, yb, xq, yq, source = data
    approximate_search(xb, yb, xq, yq, source, ("ivf",) if args.no_hnsw else ("ivf", "hnsw"))
    if not args.no_sizes:
        latency_against_size(xb, xq)
    gpu_against_cpu(xb, xq)


if __name__ == "__main__":
    main(sys.argv[1:])
