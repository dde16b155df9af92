"""The GPU: ResNet-50 inference at batch 256 against its peak; build-index over 140,000 DeepFashion-size images.

1. The embedder at 224 px, batch 256: float32 NCHW, then BatchNorms folded + channels_last in float32,
   float16 and bfloat16 autocast (build-index's GPU path is the float16 one). TFLOP/s from FLOPs counted
   by torch.utils.flop_counter, against the GPU's nominal dense float16 tensor peak (from its data
   sheet, where known) and against a float16 8192³ matmul measured here.
2. `manage.py build-index` in a child process over a generated DeepFashion-layout catalog
   (benchmarks.deepfashion_layout: 140,000 JPEGs of DeepFashion's sizes), decoding included, with
   random weights; the target is under 2 minutes end to end on one H100 (clip-retrieval publishes
   1,500 images/s on an RTX 3080).
FAISS on the GPU against the CPU is in bench_search. Without CUDA this prints why and stops;
--allow-cpu --items 300 runs part 2 on the CPU to check the path.

    python -m benchmarks.bench_gpu [--items 140000] [--root DIR] [--allow-cpu]
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.common import interleaved_best, manage, mib, run_child
from benchmarks.deepfashion_layout import write_catalog
from config import EmbedderConfig
from embedder.checkpoint import create_embedder
from embedder.inference import prepare_model

# Dense float16 tensor-core TFLOP/s from NVIDIA's data sheets (without sparsity).
NOMINAL_FP16_TFLOPS = {"H100 80GB HBM3": 989.4, "H100 SXM": 989.4, "H100 PCIe": 756.5, "H100 NVL": 835.0,
                       "H200": 989.4, "A100": 312.0, "L40S": 362.1, "L4": 121.0, "RTX 3080": 119.0}
CLIP_RETRIEVAL_RATE = 1500  # images/s on an RTX 3080, as clip-retrieval's README reports
TARGET_SECONDS = 120


def nominal_peak(name: str) -> float | None:
    """The data-sheet dense float16 peak of a GPU named like ``name``, in FLOP/s; None when unknown."""
    for key, tflops in NOMINAL_FP16_TFLOPS.items():
        if key in name:
            return tflops * 1e12
    return None


def measured_matmul_peak(size: int = 8192, rounds: int = 10) -> float:
    """FLOP/s of a float16 size³ matmul on the GPU: what its tensor cores reach in practice."""
    a = torch.randn(size, size, device="cuda", dtype=torch.float16)
    b = torch.randn(size, size, device="cuda", dtype=torch.float16)
    a @ b
    torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(rounds):
        a @ b
    torch.cuda.synchronize()
    return 2 * size ** 3 * rounds / (time.perf_counter() - started)


def model_throughput(batch_size: int = 256, size: int = 224, rounds: int = 5) -> None:
    model, _ = create_embedder(EmbedderConfig(weights="none"))
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model.eval()(torch.zeros(1, 3, size, size))
    flops = counter.get_total_flops()
    plain = model.eval().cuda()
    prepared = prepare_model(model, "cuda")
    batch = torch.randn(batch_size, 3, size, size, device="cuda")
    last = batch.contiguous(memory_format=torch.channels_last)

    def run(network, pixels, dtype=None):
        def forward():
            mixed = torch.autocast("cuda", dtype=dtype) if dtype is not None else contextlib.nullcontext()
            with torch.inference_mode(), mixed:
                network(pixels)
            torch.cuda.synchronize()
        return forward

    seconds = interleaved_best({
        "eager NCHW fp32": run(plain, batch),
        "BN folded, channels_last fp32": run(prepared, last),
        "BN folded, channels_last fp16 autocast (build-index)": run(prepared, last, torch.float16),
        "BN folded, channels_last bf16 autocast": run(prepared, last, torch.bfloat16),
    }, rounds)
    name = torch.cuda.get_device_name(0)
    nominal, measured = nominal_peak(name), measured_matmul_peak()
    print(f"\n## gpu: ResNet-50 embedder at {size} px, batch {batch_size}, on {name} (best of {rounds})")
    print(f"peak: nominal dense fp16 {nominal / 1e12:.0f} TFLOP/s (data sheet)" if nominal else
          "peak: nominal unknown for this GPU", f"; fp16 8192³ matmul measured {measured / 1e12:.0f} TFLOP/s")
    print("| path | images/s | TFLOP/s | % of nominal peak | % of matmul peak |\n|---|---|---|---|---|")
    for path, spent in seconds.items():
        rate = batch_size / spent
        achieved = rate * flops
        share = f"{100 * achieved / nominal:.1f}" if nominal else "–"
        print(f"| {path} | {rate:,.0f} | {achieved / 1e12:.1f} | {share} | {100 * achieved / measured:.1f} |")


def catalog_build(items: int, root: Path | None, batch_size: int) -> None:
    with tempfile.TemporaryDirectory() as directory:
        if root is None:
            started = time.perf_counter()
            root = write_catalog(Path(directory) / "catalog", items)
            print(f"\n(generated {items:,} DeepFashion-layout JPEGs in {time.perf_counter() - started:.0f} s "
                  f"with {os.cpu_count()} processes)")
        artifacts = Path(directory) / "artifacts"
        child = run_child(manage("--catalog", "deepfashion", "--root", str(root), "--set", "catalog.subset=all",
                                 "--weights", "none", "--artifacts", str(artifacts),
                                 "--set", f"embedder.batch_size={batch_size}", "build-index"), timeout=3600)
        if child.returncode != 0:
            raise RuntimeError(f"build-index failed:\n{child.output[-3000:]}")
        report = json.loads((artifacts / "build-report.json").read_text())
    embedding, index = report["embeddings"], report["index"]
    rate = embedding["embedded"] / child.seconds
    print(f"\n## gpu: `manage.py build-index` over {embedding['catalog_items']:,} DeepFashion-size JPEGs, "
          f"batch {batch_size}, end to end (process start to saved index)")
    print("| wall s | images/s overall | embedding loop images/s | device, runtime, precision | index | peak RSS "
          "| vs 2-minute target | vs clip-retrieval 1,500/s |")
    print("|---|---|---|---|---|---|---|---|")
    print(f"| {child.seconds:.0f} | {rate:,.0f} | {embedding['images_per_second']:,.0f} | {embedding['device']}, "
          f"{embedding.get('runtime')}, {embedding.get('precision')} "
          f"| {index.get('kind')} {index.get('parameters', {})} "
          f"| {mib(child.peak_rss_bytes)} | {'met' if child.seconds < TARGET_SECONDS else 'missed'} "
          f"| {rate / CLIP_RETRIEVAL_RATE:.2f}× |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=140_000)
    parser.add_argument("--root", type=Path, help="an existing DeepFashion-layout catalog instead of generating one")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--allow-cpu", action="store_true", help="without CUDA, still run the catalog build")
    args = parser.parse_args(argv or [])
    if not torch.cuda.is_available():
        if not args.allow_cpu:
            print("\n## gpu: skipped: torch sees no CUDA GPU (mixed-precision inference at batch 256, FAISS GPU "
                  "and the 140,000-image build need one; --allow-cpu --items 300 checks the build path on the CPU)")
            return
        print("\n## gpu: no CUDA GPU; running only the catalog build, on the CPU, to check its path")
    else:
        model_throughput(args.batch)
    catalog_build(args.items, args.root, args.batch)


if __name__ == "__main__":
    main(sys.argv[1:])
