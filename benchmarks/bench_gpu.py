"""The GPU path in one run: matrix peaks, embedding, training, build-index, Fashion-MNIST, the GPU tests.

Stages, each in its own process (a CUDA error in one leaves the others their GPU) and with its own
deadline, in this order:

- peaks: the GPU's matrix rate in fp32, TF32, bf16 and fp16 (8192³ products of random data) and its copy
  bandwidth; every "% of peak" below is against these measured ceilings.
- embedding: the embedder at 224 px as eager NCHW fp32, and BatchNorms folded + channels_last (what
  build-index runs) in fp32 with and without TF32, bf16 and fp16; then bf16 and fp16 over batch sizes,
  to find the batch that fills the GPU; cuDNN's autotuner on and off.
- training: `manage.py train`'s step (triplet + classification loss, backward, fused AdamW) at 32, 64 and
  224 px, bf16 autocast against fp32.
- build: `manage.py build-index` in a child over a generated 140,000-image DeepFashion-layout catalog
  (benchmarks.deepfashion_layout, written while the first stages run), decoding included; then the
  decoding pipeline alone and GPU JPEG decoding, to say what bounds it.
- fashion-mnist: `manage.py train` with the default recipe for --train-seconds on the real images.
- agreement: that checkpoint embeds all 70,000 Fashion-MNIST images in fp32 without TF32 (the reference),
  fp32 with TF32, bf16 and fp16: lowest cosine, neighbour overlap@10 of the test queries and kNN top-1.
- tests: pytest's gpu-marked tests.
- compile: torch.compile against eager, fp16 at 224 px (only when the budget leaves time).

A stage starts only while the run's --budget leaves it its usual time. Results go to --out: tables.md,
results.json, log.txt and the training curve. --allow-cpu --small checks every stage's path on a CPU.

    python -m benchmarks.bench_gpu [--out DIR] [--stages peaks,embedding,...] [--budget 480]
        [--fashion-mnist DIR] [--items 140000] [--train-seconds 120] [--allow-cpu --small]
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.common import FASHION_MNIST, ROOT, machine_line, manage, mib, run_child

TARGET_SECONDS = 120  # build-index over DeepFashion's size
CLIP_RETRIEVAL_RATE = 1500  # images/s on an RTX 3080, as clip-retrieval's README reports


@dataclass(frozen=True)
class Stage:
    name: str
    usual_seconds: int  # what it takes on an H200: a stage starts only if the budget has this much left
    cap_seconds: int  # its deadline
    run: Callable[[argparse.Namespace], tuple[dict, str]]  # results and their markdown table


# ---- helpers ------------------------------------------------------------------------------------------

def device_of(args: argparse.Namespace) -> str:
    return "cpu" if args.allow_cpu and not torch.cuda.is_available() else "cuda"


def timed(function: Callable[[], object], device: str, repeats: int = 10, warmup: int = 3) -> float:
    """Median seconds of a call: CUDA events around each on a GPU (the work is asynchronous), else a clock."""
    for _ in range(warmup):
        function()
    times = []
    for _ in range(repeats):
        if device == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            function()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1000)
        else:
            started = time.perf_counter()
            function()
            times.append(time.perf_counter() - started)
    return statistics.median(times)


@contextlib.contextmanager
def tf32(enabled: bool):
    """TF32 in cuDNN's convolutions (torch's default: on) and cuBLAS's products (default: off)."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def read_result(args: argparse.Namespace, stage: str) -> dict:
    """An earlier stage's results in this run (empty when it did not run or failed)."""
    path = args.work / f"{stage}.json"
    return json.loads(path.read_text())["result"] if path.is_file() else {}


def flops_per_image(size: int) -> float:
    from config import EmbedderConfig
    from embedder.checkpoint import create_embedder

    model, _ = create_embedder(EmbedderConfig(weights="none"))
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model.eval()(torch.randn(1, 3, size, size))
    return float(counter.get_total_flops())


def table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows])


def share(rate: float, peak: float | None) -> str:
    return f"{100 * rate / peak:.1f} %" if peak else "–"


# ---- stages -------------------------------------------------------------------------------------------

def stage_peaks(args: argparse.Namespace) -> tuple[dict, str]:
    device, size = device_of(args), 256 if args.small else 8192
    peaks = {}
    for name, dtype, allow in (("fp32", torch.float32, False), ("tf32", torch.float32, True),
                               ("bf16", torch.bfloat16, False), ("fp16", torch.float16, False)):
        a, b = (torch.randn(size, size, device=device, dtype=dtype) for _ in range(2))
        with tf32(allow):
            peaks[name] = 2 * size ** 3 / timed(lambda: a @ b, device)
    source = torch.randn(2 ** (20 if args.small else 29), device=device)  # 2 GiB of float32 on a GPU
    target = torch.empty_like(source)
    copy_rate = 2 * source.nbytes / timed(lambda: target.copy_(source), device)
    result = {"matmul_flops": peaks, "copy_bytes_per_second": copy_rate, "matmul_size": size,
              "gpu": torch.cuda.get_device_name(0) if device == "cuda" else "cpu"}
    rows = [[name, f"{rate / 1e12:,.1f}"] for name, rate in peaks.items()] + [["copy, GB/s", f"{copy_rate / 1e9:,.0f}"]]
    return result, f"### Measured ceilings ({size}³ products of random data, median of 10)\n" + \
        table(["precision", "TFLOP/s"], rows)


def stage_embedding(args: argparse.Namespace) -> tuple[dict, str]:
    from config import EmbedderConfig
    from embedder.checkpoint import create_embedder
    from embedder.inference.network import autocast, prepare_model

    device = device_of(args)
    size, batch_size = (64, 8) if args.small else (224, 256)
    flops = flops_per_image(size)
    peaks = read_result(args, "peaks").get("matmul_flops", {})
    model, _ = create_embedder(EmbedderConfig(weights="none"))
    plain, prepared = copy.deepcopy(model).eval().to(device), prepare_model(model, device)

    def rate(network, batch: int, precision: str, allow_tf32: bool = True, last: bool = True) -> tuple[float, float]:
        # At the main batch size, the probe batch whose fp32 vectors without TF32 are the reference.
        pixels = probe if batch == batch_size else torch.randn(batch, 3, size, size, device=device)
        pixels = pixels.contiguous(memory_format=torch.channels_last if last else torch.contiguous_format)

        def forward():
            with torch.inference_mode(), autocast(precision, device):
                return network(pixels)

        with tf32(allow_tf32):
            seconds = timed(forward, device, repeats=3 if args.small else 10)
            vectors = forward().float()
        cosine = float((vectors * reference).sum(1).min()) if batch == batch_size else float("nan")
        return batch / seconds, cosine

    with tf32(False):
        torch.manual_seed(0)
        probe = torch.randn(batch_size, 3, size, size, device=device).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            reference = prepared(probe).float()

    precisions = ["bf16"] if device == "cpu" else ["bf16", "fp16"]
    paths = [("eager NCHW, fp32 (cuDNN TF32, torch's default)", plain, "fp32", True, False),
             ("BN folded, channels_last, fp32 with TF32", prepared, "fp32", True, True),
             ("BN folded, channels_last, fp32 without TF32", prepared, "fp32", False, True)]
    paths += [(f"BN folded, channels_last, {p} autocast" + (" (build-index)" if p == "fp16" else ""), prepared, p, True,
               True) for p in precisions]
    rows, results = [], {"image_size": size, "flops_per_image": flops, "paths": {}, "batches": {}}
    peak_of = {"fp32": lambda allow: peaks.get("tf32" if allow else "fp32"), "bf16": lambda _: peaks.get("bf16"),
               "fp16": lambda _: peaks.get("fp16")}
    for name, network, precision, allow, last in paths:
        images, cosine = rate(network, batch_size, precision, allow, last)
        achieved = images * flops
        results["paths"][name] = {"images_per_second": images, "flops": achieved, "lowest_cosine": cosine}
        rows.append([name, batch_size, f"{images:,.0f}", f"{achieved / 1e12:.1f}", share(achieved, peak_of[precision](allow)),
                     f"{cosine:.5f}"])
    batches = [4, 8, 16] if args.small else [64, 128, 256, 512, 1024, 2048]
    for precision in precisions:
        for batch in batches:
            images, _ = rate(prepared, batch, precision)
            results["batches"][f"{precision}@{batch}"] = images
            if batch != batch_size:
                rows.append([f"BN folded, channels_last, {precision} autocast", batch, f"{images:,.0f}",
                             f"{images * flops / 1e12:.1f}", share(images * flops, peaks.get(precision)), ""])
    if device == "cuda":
        torch.backends.cudnn.benchmark = True
        images, _ = rate(prepared, batch_size, "fp16")
        torch.backends.cudnn.benchmark = False
        results["cudnn_benchmark_fp16"] = images
        rows.append(["fp16 autocast with torch.backends.cudnn.benchmark", batch_size, f"{images:,.0f}",
                     f"{images * flops / 1e12:.1f}", share(images * flops, peaks.get("fp16")), ""])
    best = max(results["batches"].items(), key=lambda item: item[1])
    results["best_batch"] = best
    text = (f"### The embedder at {size} px ({flops / 1e9:.2f} GFLOP an image by torch.utils.flop_counter; "
            f"% of the matching measured matmul peak; lowest cosine against fp32 without TF32 on one batch)\n"
            + table(["path", "batch", "images/s", "TFLOP/s", "% of peak", "lowest cosine"], rows)
            + f"\n\nFastest: {best[0]} at {best[1]:,.0f} images/s.")
    return results, text


def stage_training(args: argparse.Namespace) -> tuple[dict, str]:
    from config import Config, EmbedderConfig, TrainConfig
    from embedder.training.loop import build_trainee, train_step

    device = device_of(args)
    train = TrainConfig()
    labels = torch.arange(train.classes_per_batch).repeat_interleave(train.images_per_class).to(device)
    rows, results = [], {}
    for size in (32,) if args.small else (32, 64, 224):
        config = Config(embedder=EmbedderConfig(weights="none", image_size=size), train=train)
        trainee = build_trainee(config, train.classes_per_batch, device)
        batch = torch.randn(len(labels), 3, size, size, device=device).contiguous(memory_format=torch.channels_last)
        for amp in (True, False):
            steps = 2 if args.small else 20
            for _ in range(3):  # warm-up: cuDNN picks its kernels, the optimiser makes its state
                train_step(trainee, batch, labels, 1.0, amp)
            started = time.perf_counter()
            for _ in range(steps):  # each step reads its losses back, so the clock sees finished work
                train_step(trainee, batch, labels, 1.0, amp)
            seconds = (time.perf_counter() - started) / steps
            key = f"{size}px {'bf16 autocast' if amp else 'fp32 (TF32 convolutions)'}"
            results[key] = {"ms_per_step": 1000 * seconds, "images_per_second": len(labels) / seconds}
            rows.append([size, "bf16 autocast" if amp else "fp32 (cuDNN TF32)", len(labels), f"{1000 * seconds:.1f}",
                         f"{len(labels) / seconds:,.0f}"])
    return results, ("### Training step (P×K batch of the default recipe: triplet + classification loss, backward, "
                     "fused AdamW; random pixels)\n" + table(["px", "arithmetic", "batch", "ms a step", "images/s"], rows))


def stage_build(args: argparse.Namespace) -> tuple[dict, str]:
    from config import CatalogConfig
    from embedder.catalogs import open_catalog
    from embedder.catalogs.dataset import CatalogImages
    from embedder.inference.extract import resolve_workers
    from embedder.transforms import Preprocessing, build_pixel_transform

    device = device_of(args)
    root, artifacts = args.work / "deepfashion", args.work / "deepfashion-artifacts"
    wait_for_catalog(args)
    shutil.rmtree(artifacts, ignore_errors=True)
    child = run_child(manage("--catalog", "deepfashion", "--root", str(root), "--set", "catalog.subset=all",
                             "--weights", "none", "--artifacts", str(artifacts),
                             "--set", f"embedder.batch_size={args.batch}", "build-index"), timeout=args.stage_timeout)
    if child.returncode != 0:
        raise RuntimeError(f"build-index failed:\n{child.output[-3000:]}")
    report = json.loads((artifacts / "build-report.json").read_text())
    embedding, index = report["embeddings"], report["index"]
    overall = embedding["embedded"] / child.seconds
    # The embedding stage's rate of the same network, precision and batch on random pixels, in this run.
    model_only = read_result(args, "embedding").get("batches", {}).get(f"{embedding.get('precision')}@{args.batch}")

    # What bounds the pipeline: the DataLoader alone (decode, crop, resize, collate) with build-index's workers,
    # and the GPU's own JPEG decoder over the same files.
    catalog = open_catalog(CatalogConfig(kind="deepfashion", root=root, subset="all"), args.work / "downloads")
    rows = np.arange(min(len(catalog), 300 if args.small else 40_000))
    images = CatalogImages(catalog, rows, build_pixel_transform(Preprocessing(224)), 224, torch.uint8)
    workers = resolve_workers(None, device)
    loader = torch.utils.data.DataLoader(images, batch_size=args.batch, num_workers=workers)
    started = time.perf_counter()
    for _ in loader:
        pass
    loader_rate = len(rows) / (time.perf_counter() - started)
    gpu_decode = None
    if device == "cuda":
        from torchvision.io import decode_jpeg

        files = [torch.frombuffer(bytearray((root / catalog.items[row].path).read_bytes()), dtype=torch.uint8)
                 for row in rows[:args.batch]]
        gpu_decode = len(files) / timed(lambda: decode_jpeg(files, device="cuda"), device, repeats=5)
    result = {"wall_seconds": child.seconds, "images_per_second": overall, "embedded": embedding["embedded"],
              "embedding_loop_images_per_second": embedding["images_per_second"], "device": embedding["device"],
              "precision": embedding.get("precision"), "index": index, "peak_rss_bytes": child.peak_rss_bytes,
              "model_only_images_per_second": model_only, "loader_images_per_second": loader_rate,
              "loader_workers": workers, "gpu_jpeg_decode_images_per_second": gpu_decode}
    ratio = f"{embedding['images_per_second'] / model_only:.2f}, {overall / model_only:.2f}" if model_only else "–"
    text = (f"### `manage.py build-index` over {embedding['catalog_items']:,} DeepFashion-size JPEGs, batch {args.batch}, "
            "process start to saved index\n"
            + table(["wall s", "images/s overall", "embedding loop images/s",
                     "÷ model-only (loop, overall)", "device, precision",
                     "index", "peak RSS", "vs 2 min", "vs clip-retrieval 1,500/s"],
                    [[f"{child.seconds:.0f}", f"{overall:,.0f}", f"{embedding['images_per_second']:,.0f}", ratio,
                      f"{embedding['device']}, {embedding.get('precision')}",
                      f"{index.get('kind')} {index.get('parameters', {})}", mib(child.peak_rss_bytes),
                      "met" if child.seconds < TARGET_SECONDS else "missed", f"{overall / CLIP_RETRIEVAL_RATE:.2f}×"]])
            + f"\n\nDecoding alone ({workers} DataLoader workers, {len(rows):,} images, decode + box crop + pad + resize "
            f"to 224): {loader_rate:,.0f} images/s"
            + (f"; the GPU's JPEG decoder (torchvision.io.decode_jpeg, batches of {args.batch}, decode only): "
               f"{gpu_decode:,.0f} images/s" if gpu_decode else "") + ".")
    return result, text


def stage_fashion_mnist(args: argparse.Namespace) -> tuple[dict, str]:
    artifacts = args.work / "fashion-mnist"
    shutil.rmtree(artifacts, ignore_errors=True)
    extra = ["--set", "catalog.limit=3000"] if args.small else []
    child = run_child(manage("--catalog", "fashion-mnist", "--root", str(args.fashion_mnist), "--weights", "none",
                             "--artifacts", str(artifacts), *extra, "train", "--time-budget", str(args.train_seconds)),
                      timeout=args.stage_timeout)
    if child.returncode != 0:
        raise RuntimeError(f"train failed:\n{child.output[-3000:]}")
    metrics = (artifacts / "train" / "metrics.csv").read_text().splitlines()
    curve = artifacts / "train" / "training-curve.png"
    if curve.is_file():
        shutil.copy(curve, args.out / "fashion-mnist-training-curve.png")
    summary = [line for line in child.output.splitlines() if line.startswith(("Trained", "Best validation"))]
    return ({"seconds": child.seconds, "summary": summary, "metrics": metrics},
            f"### `manage.py train` on Fashion-MNIST, default recipe, --time-budget {args.train_seconds}\n"
            + "\n".join(f"- {line}" for line in summary) + f"\n- wall {child.seconds:.0f} s, process included")


def stage_agreement(args: argparse.Namespace) -> tuple[dict, str]:
    from config import CatalogConfig, EmbedderConfig
    from embedder.catalogs import open_catalog
    from embedder.catalogs.dataset import CatalogImages
    from embedder.checkpoint import catalog_preprocessing, create_embedder, load_checkpoint
    from embedder.inference.extract import embed_batch, resolve_workers
    from embedder.inference.network import prepare_model
    from embedder.transforms import build_pixel_transform, normalize_batch
    from indexer.evaluation.protocol import knn_top1

    device = device_of(args)
    catalog = open_catalog(CatalogConfig(kind="fashion-mnist", root=args.fashion_mnist, limit=3000 if args.small else 0),
                           args.work / "downloads")
    checkpoint = args.work / "fashion-mnist" / "embedder.pt"
    if checkpoint.is_file():
        loaded = load_checkpoint(checkpoint)
        model, preprocessing, origin = loaded.model, loaded.preprocessing, "the checkpoint trained in this run"
    else:
        model, _ = create_embedder(EmbedderConfig(weights="none"))
        preprocessing, origin = catalog_preprocessing(EmbedderConfig(), catalog), "random weights (no trained checkpoint)"
    rows = np.arange(len(catalog))
    images = CatalogImages(catalog, rows, build_pixel_transform(preprocessing), preprocessing.image_size, torch.uint8)
    loader = torch.utils.data.DataLoader(images, batch_size=1024, num_workers=resolve_workers(None, device))
    pixels = torch.cat([batch for batch, _, _ in loader])
    labels = np.array([item.label for item in catalog.items])
    test = np.array([item.split == "test" for item in catalog.items])
    network = prepare_model(model, device)

    def embed(precision: str, allow_tf32: bool) -> tuple[np.ndarray, float]:
        with tf32(allow_tf32):
            def run():
                return np.concatenate([embed_batch(network, normalize_batch(pixels[i:i + 1024].to(device), preprocessing),
                                                   device, precision) for i in range(0, len(pixels), 1024)])
            run()  # warm-up
            started = time.perf_counter()
            vectors = run()
            return vectors, len(pixels) / (time.perf_counter() - started)

    def neighbours(vectors: np.ndarray) -> np.ndarray:
        xq, xb = torch.from_numpy(vectors[test]).to(device), torch.from_numpy(vectors[~test]).to(device)
        with tf32(False):
            return torch.cat([(xq[i:i + 1000] @ xb.T).topk(10, dim=1).indices for i in range(0, len(xq), 1000)]).cpu().numpy()

    reference, _ = embed("fp32", False)
    near = neighbours(reference)
    variants = [("fp32 without TF32 (reference)", "fp32", False), ("fp32 with TF32", "fp32", True), ("bf16 autocast", "bf16", True)]
    if device == "cuda":
        variants.append(("fp16 autocast (build-index)", "fp16", True))
    rows, results = [], {"origin": origin, "image_size": preprocessing.image_size, "variants": {}}
    for name, precision, allow in variants:
        vectors, rate = embed(precision, allow)
        cosine = (vectors * reference).sum(axis=1)
        overlap = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(neighbours(vectors), near)]))
        top1 = knn_top1(vectors[test], labels[test], vectors[~test], labels[~test], 10)
        results["variants"][name] = {"lowest_cosine": float(cosine.min()), "mean_cosine": float(cosine.mean()),
                                     "overlap_at_10": overlap, "knn_top1": top1, "images_per_second": rate}
        rows.append([name, f"{cosine.min():.5f}", f"{cosine.mean():.6f}", f"{overlap:.4f}", f"{100 * top1:.2f} %",
                     f"{rate:,.0f}"])
    return results, (f"### Precision agreement on all {len(catalog):,} Fashion-MNIST images at {preprocessing.image_size} px "
                     f"({origin}; {int(test.sum()):,} test queries against {int((~test).sum()):,} training images, "
                     "batches of 1,024)\n"
                     + table(["arithmetic", "lowest cosine", "mean cosine", "overlap@10", "kNN top-1 (k=10)",
                              "images/s"], rows))


def stage_tests(args: argparse.Namespace) -> tuple[dict, str]:
    command = [sys.executable, "-m", "pytest", "-m", "gpu", "-p", "no:cacheprovider", "-q",
               "tests/embedder/test_gpu.py", "tests/indexer/test_index.py"]
    child = run_child(command, timeout=args.stage_timeout)
    last = child.output.strip().splitlines()[-1] if child.output.strip() else ""
    result = {"returncode": child.returncode, "summary": last, "output": child.output[-6000:]}
    if child.returncode not in (0, 5):
        raise RuntimeError(f"the GPU tests failed ({last}):\n{child.output[-4000:]}")
    return result, f"### `pytest -m gpu tests/embedder/test_gpu.py tests/indexer/test_index.py`\n{last}"


def stage_compile(args: argparse.Namespace) -> tuple[dict, str]:
    from config import EmbedderConfig
    from embedder.checkpoint import create_embedder
    from embedder.inference.network import autocast, prepare_model

    device = device_of(args)
    size, batch = (64, 8) if args.small else (224, args.batch)
    precision = "bf16" if device == "cpu" else "fp16"
    eager = prepare_model(create_embedder(EmbedderConfig(weights="none"))[0], device)
    compiled = torch.compile(eager, dynamic=False)
    pixels = torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=torch.channels_last)

    def forward(network):
        def run():
            with torch.inference_mode(), autocast(precision, device):
                return network(pixels)
        return run

    started = time.perf_counter()
    forward(compiled)()
    if device == "cuda":
        torch.cuda.synchronize()
    compile_seconds = time.perf_counter() - started
    rates = {name: batch / timed(forward(network), device) for name, network in (("eager", eager), ("compiled", compiled))}
    return ({"compile_seconds": compile_seconds, **rates},
            f"### torch.compile, {precision} at {size} px, batch {batch}\n"
            + table(["path", "images/s"], [[name, f"{rate:,.0f}"] for name, rate in rates.items()])
            + f"\n\nFirst call (compiling): {compile_seconds:.0f} s; compiled ÷ eager {rates['compiled'] / rates['eager']:.2f}.")


STAGES = (
    Stage("peaks", 20, 90, stage_peaks),
    Stage("embedding", 60, 150, stage_embedding),
    Stage("training", 40, 120, stage_training),
    Stage("build", 150, 330, stage_build),
    Stage("fashion-mnist", 150, 300, stage_fashion_mnist),
    Stage("agreement", 40, 120, stage_agreement),
    Stage("tests", 40, 150, stage_tests),
    Stage("compile", 120, 200, stage_compile),
)


# ---- the run ------------------------------------------------------------------------------------------

def wait_for_catalog(args: argparse.Namespace) -> None:
    """The generated catalog, written by the child the run started first (or now, when run alone)."""
    done = args.work / "deepfashion.done"
    if not done.is_file():
        pid_file = args.work / "deepfashion.pid"
        if not pid_file.is_file():
            write_catalog_child(args).wait(args.stage_timeout)
        deadline = time.monotonic() + args.stage_timeout
        while not done.is_file():
            if time.monotonic() > deadline:
                raise RuntimeError("the generated catalog was not written in time")
            if not _alive(int(pid_file.read_text())) and not done.is_file():
                raise RuntimeError(f"writing the generated catalog failed; see {args.work / 'deepfashion.log'}")
            time.sleep(1)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def write_catalog_child(args: argparse.Namespace) -> subprocess.Popen:
    """Write the catalog in the background with most of the cores, marking it done only when complete."""
    root = args.work / "deepfashion"
    shutil.rmtree(root, ignore_errors=True)
    processes = max(1, (os.cpu_count() or 1) - 4)
    script = (f"from benchmarks.deepfashion_layout import write_catalog; from pathlib import Path; "
              f"write_catalog(Path({str(root)!r}), {args.items}, {processes}); "
              f"Path({str(args.work / 'deepfashion.done')!r}).touch()")
    log = open(args.work / "deepfashion.log", "w")
    # Niced: it overlaps the first stages, whose timings should not wait for it.
    child = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                             preexec_fn=lambda: os.nice(10))
    (args.work / "deepfashion.pid").write_text(str(child.pid))
    return child


def run_stages(args: argparse.Namespace, names: list[str]) -> int:
    args.out.mkdir(parents=True, exist_ok=True)
    args.work.mkdir(parents=True, exist_ok=True)
    for stale in ["deepfashion.done", "deepfashion.pid"] + [f"{stage.name}.json" for stage in STAGES]:
        (args.work / stale).unlink(missing_ok=True)
    started = time.monotonic()
    results = {"machine": machine_line(), "command": " ".join(sys.argv), "stages": {}}
    tables = [f"# GPU run\n\n{results['machine']}\n"]
    writer = write_catalog_child(args) if "build" in names else None
    failures = 0
    with open(args.out / "log.txt", "a") as log:
        for stage in STAGES:
            if stage.name not in names:
                continue
            left = args.budget - (time.monotonic() - started)
            if left < stage.usual_seconds:
                status = {"status": "skipped", "why": f"{left:.0f} s of the budget left, it usually takes {stage.usual_seconds}"}
                print(f"[{stage.name}] skipped: {status['why']}", flush=True)
            else:
                status = _run_stage(args, stage, min(stage.cap_seconds, left), log)
            failures += status["status"] == "failed"
            results["stages"][stage.name] = status
            tables.append(status.get("table") or f"### {stage.name}: {status['status']} ({status.get('why', '')[-800:]})")
            (args.out / "results.json").write_text(json.dumps(results, indent=1, default=str))
            (args.out / "tables.md").write_text("\n\n".join(tables) + "\n")
    if writer is not None and writer.poll() is None:
        writer.kill()
    print("\n\n".join(tables))
    return 1 if failures else 0


def _run_stage(args: argparse.Namespace, stage: Stage, timeout: float, log) -> dict:
    """One stage in a child process (its own CUDA context) under a deadline; its output appended to the log."""
    command = [sys.executable, "-m", "benchmarks.bench_gpu", "--stage", stage.name, "--work", str(args.work),
               "--out", str(args.out), "--fashion-mnist", str(args.fashion_mnist), "--items", str(args.items),
               "--batch", str(args.batch), "--train-seconds", str(args.train_seconds),
               "--stage-timeout", str(int(timeout - 5))] + (["--allow-cpu"] if args.allow_cpu else []) \
        + (["--small"] if args.small else [])
    print(f"[{stage.name}] started (deadline {timeout:.0f} s)", flush=True)
    log.write(f"\n===== {stage.name} =====\n")
    log.flush()
    began = time.monotonic()
    child = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        code = child.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()
        code = None
    seconds = time.monotonic() - began
    result_path = args.work / f"{stage.name}.json"
    if code == 0 and result_path.is_file():
        saved = json.loads(result_path.read_text())
        print(f"[{stage.name}] done in {seconds:.0f} s", flush=True)
        return {"status": "done", "seconds": seconds, **saved}
    why = f"ran past its {timeout:.0f} s deadline" if code is None else f"exit status {code}"
    print(f"[{stage.name}] failed: {why}", flush=True)
    return {"status": "failed", "seconds": seconds, "why": why + ": " + _log_tail(args.out / "log.txt")}


def _log_tail(path: Path, characters: int = 1500) -> str:
    return path.read_text(errors="replace")[-characters:]


def run_one_stage(args: argparse.Namespace) -> None:
    stage = next(stage for stage in STAGES if stage.name == args.stage)
    torch.manual_seed(0)
    result, text = stage.run(args)
    (args.work / f"{stage.name}.json").write_text(json.dumps({"result": result, "table": text}, default=str))
    print(text, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stages", default=",".join(stage.name for stage in STAGES))
    parser.add_argument("--stage", help=argparse.SUPPRESS)
    parser.add_argument("--budget", type=float, default=480, help="seconds for the whole run")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or ROOT / "var" / "bench-gpu"))
    parser.add_argument("--work", type=Path, default=Path("/tmp/lookbook-bench-gpu"))
    parser.add_argument("--fashion-mnist", type=Path, default=FASHION_MNIST)
    parser.add_argument("--items", type=int, default=140_000)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--train-seconds", type=int, default=120)
    parser.add_argument("--stage-timeout", type=int, default=600, help=argparse.SUPPRESS)
    parser.add_argument("--allow-cpu", action="store_true", help="without CUDA, run the stages on the CPU")
    parser.add_argument("--small", action="store_true", help="toy sizes, to check the paths")
    args = parser.parse_args(argv or [])
    if args.stage:
        run_one_stage(args)
        return 0
    if not torch.cuda.is_available() and not args.allow_cpu:
        print("\n## gpu: skipped: torch sees no CUDA GPU (`python -m benchmarks.bench_gpu --allow-cpu --small` "
              "checks the stages' paths on the CPU)")
        return 0
    names = [name.strip() for name in args.stages.split(",") if name.strip()]
    unknown = set(names) - {stage.name for stage in STAGES}
    if unknown:
        parser.error(f"unknown stages: {', '.join(sorted(unknown))}")
    return run_stages(args, names)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
