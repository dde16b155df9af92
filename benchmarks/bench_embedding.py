"""ResNet-50 embedder forward throughput on the CPU: eager NCHW, channels_last, bfloat16, torch.compile, ONNX Runtime.

All paths run in one process, taking turns (best of --rounds), on real Fashion-MNIST images when they
are installed; each row says how far its embeddings are from eager float32 (lowest cosine). Then the
fraction of the CPU's peak FLOP/s (benchmarks.common.cpu_peak says how it is computed), from FLOPs
counted by torch.utils.flop_counter on a forward at that image size. The bfloat16 agreement check
adds kNN top-1 and neighbour overlap over --agreement images.

    python -m benchmarks.bench_embedding [--sizes 32x128,32x8,224x16] [--no-compile] [--agreement 1000]

32x8 is the web app's micro-batch (app.max_batch), where the runtimes differ most.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.common import FASHION_MNIST, ROOT, cpu_peak, interleaved_best
from config import EmbedderConfig
from embedder.checkpoint import create_embedder, load_checkpoint
from embedder.inference.network import prepare_model
from embedder.inference.onnx_runtime import OnnxRuntimeModel

TRAINED = ROOT / "var" / "fashion-mnist" / "embedder.pt"
DEFAULT = "BN folded, channels_last fp32"
COMPILED = "torch.compile (BN folded, channels_last) fp32"
ONNX = "ONNX Runtime fp32"


def load_model(checkpoint: Path | None) -> tuple[torch.nn.Module, str]:
    """The trained Fashion-MNIST embedder when there is one, else the network build-index makes with weights=none."""
    if checkpoint is not None and checkpoint.is_file():
        return load_checkpoint(checkpoint).model.eval(), f"trained checkpoint {checkpoint}"
    model, _ = create_embedder(EmbedderConfig(weights="none"))
    return model.eval(), "random weights (embedder.weights = none)"


def sample_images(count: int, size: int, seed: int = 0) -> tuple[torch.Tensor, np.ndarray | None, str]:
    """``count`` Fashion-MNIST images preprocessed as the catalog is (and their labels), else random pixels."""
    if any(FASHION_MNIST.glob("train-images-idx3-ubyte*")):
        from embedder.catalogs.fashion_mnist import FashionMnistCatalog
        from embedder.checkpoint import catalog_preprocessing
        from embedder.transforms import build_transform

        catalog = FashionMnistCatalog(FASHION_MNIST)
        transform = build_transform(catalog_preprocessing(EmbedderConfig(image_size=size), catalog))
        rows = np.random.default_rng(seed).choice(len(catalog), size=count, replace=False)
        images = torch.stack([transform(catalog.open_image(int(row))) for row in rows])
        return images, catalog.labels[rows], "Fashion-MNIST images"
    return torch.randn(count, 3, size, size, generator=torch.Generator().manual_seed(seed)), None, "random pixels"


def flops_per_image(model: torch.nn.Module, size: int) -> float:
    """FLOPs of one forward at ``size`` px, counted (a multiply-add is 2)."""
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 3, size, size))
    return float(counter.get_total_flops())


def forward(model: Callable, batch: torch.Tensor, precision: str = "fp32") -> Callable[[], torch.Tensor]:
    """A no-argument function running one inference forward."""
    def run() -> torch.Tensor:
        context = torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()
        with torch.inference_mode(), context:
            return model(batch).float()
    return run


def onnx_forward(model: torch.nn.Module, batch: torch.Tensor) -> tuple[Callable | None, str]:
    """ONNX Runtime's forward of the exported network (embedder.runtime = onnxruntime), or None and why not."""
    try:
        started = time.perf_counter()
        runtime = OnnxRuntimeModel(model, batch.shape[-1])
    except RuntimeError as error:
        return None, str(error)
    return (lambda: runtime(batch)), f"export {time.perf_counter() - started:.0f} s"


def lowest_cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """The smallest cosine similarity between corresponding rows."""
    return float(torch.nn.functional.cosine_similarity(a.float(), b.float(), dim=1).min())


def measure_size(model: torch.nn.Module, size: int, batch_size: int, rounds: int, compile_model: bool,
                 onnx: bool) -> tuple[list[tuple], float | None]:
    """Rows (path, images/s, lowest cosine, note) for one image size and batch, and the compile seconds."""
    batch, _, _ = sample_images(batch_size, size)
    last = batch.contiguous(memory_format=torch.channels_last)
    prepared = prepare_model(model, "cpu")  # what build-index runs: BatchNorms folded, channels_last
    paths = {
        "eager NCHW fp32": forward(model, batch),
        "eager channels_last fp32": forward(copy.deepcopy(model).to(memory_format=torch.channels_last), last),
        DEFAULT: forward(prepared, last),
        "BN folded, channels_last, bf16 autocast": forward(prepared, last, "bf16"),
    }
    notes, compile_seconds = {DEFAULT: "build-index's torch path"}, None
    if compile_model:
        compiled = torch.compile(prepared, dynamic=False)
        started = time.perf_counter()
        forward(compiled, last)()
        compile_seconds = time.perf_counter() - started
        paths[COMPILED] = forward(compiled, last)
        notes[COMPILED] = f"compile {compile_seconds:.0f} s"
    if onnx:
        run, notes[ONNX] = onnx_forward(model, batch)
        if run is not None:
            paths[ONNX] = run
    reference = paths["eager NCHW fp32"]()
    cosines = {name: lowest_cosine(reference, run()) for name, run in paths.items()}
    seconds = interleaved_best(paths, rounds)
    rows = [(name, batch_size / seconds[name], cosines[name], notes.get(name, "")) for name in paths]
    if onnx and ONNX not in paths:
        rows.append((ONNX, None, None, notes[ONNX]))
    return rows, compile_seconds


def break_even(rows: list[tuple], compile_seconds: float) -> str:
    """How many images torch.compile needs before its compile time is paid back, against eager channels_last."""
    rates = {name: rate for name, rate, _, _ in rows}
    eager, compiled = rates[DEFAULT], rates[COMPILED]
    if compiled <= eager:
        return f"torch.compile: {compile_seconds:.0f} s to compile and no faster than eager: it never pays off"
    images = compile_seconds / (1 / eager - 1 / compiled)
    return (f"torch.compile pays off after {images:,.0f} images ({compile_seconds:.0f} s compile, "
            f"{compiled / eager:.2f}× eager); a 70,000-image build {'gains' if images < 70_000 else 'loses'} "
            f"{abs(70_000 / eager - 70_000 / compiled - compile_seconds):.0f} s")


def agreement(model: torch.nn.Module, count: int, size: int, batch_size: int) -> str:
    """bfloat16 against float32 over ``count`` images: lowest cosine, kNN top-1 of each, neighbour overlap@10."""
    images, labels, source = sample_images(count, size, seed=1)
    last_model = prepare_model(model, "cpu")
    runs = {}
    for precision in ("fp32", "bf16"):
        parts = [forward(last_model, chunk.contiguous(memory_format=torch.channels_last), precision)()
                 for chunk in images.split(batch_size)]
        runs[precision] = torch.cat(parts).numpy()
    neighbours = {}
    for precision, x in runs.items():
        scores = x @ x.T
        np.fill_diagonal(scores, -np.inf)
        neighbours[precision] = np.argsort(-scores, axis=1)[:, :10]
    overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(neighbours["fp32"], neighbours["bf16"])])
    line = (f"bf16 vs fp32 on {count} {source} at {size} px: lowest cosine "
            f"{lowest_cosine(torch.from_numpy(runs['fp32']), torch.from_numpy(runs['bf16'])):.5f}, "
            f"neighbour overlap@10 {overlap:.3f}")
    if labels is not None:
        top1 = {p: float((labels[n[:, 0]] == labels).mean()) for p, n in neighbours.items()}
        line += f", 1-NN top-1 fp32 {top1['fp32']:.4f} vs bf16 {top1['bf16']:.4f} (leave-one-out)"
    return line


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="32x128,32x8,224x16", help="IMAGExBATCH list; compile at the first")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile (minutes on 2 cores)")
    parser.add_argument("--no-onnx", action="store_true")
    parser.add_argument("--agreement", type=int, default=1000, help="images for the bf16 kNN check (0: skip)")
    parser.add_argument("--checkpoint", type=Path, default=TRAINED)
    args = parser.parse_args(argv or [])
    model, origin = load_model(args.checkpoint)
    peak = cpu_peak(torch.get_num_threads())
    print(f"\n## embedding: ResNet-50 embedder forward on the CPU, images/s (best of {args.rounds}, interleaved)")
    print(f"model: {origin}; peak: {peak.formula}\n")
    print("| path | image px | batch | images/s | vs eager NCHW | GFLOP/s | % of peak | lowest cosine vs fp32 | note |")
    print("|---|---|---|---|---|---|---|---|---|")
    for number, item in enumerate(args.sizes.split(",")):
        size, batch_size = (int(part) for part in item.split("x"))
        flops = flops_per_image(model, size)
        first = number == 0
        rows, compile_seconds = measure_size(model, size, batch_size, args.rounds,
                                             compile_model=first and not args.no_compile, onnx=not args.no_onnx)
        baseline = rows[0][1]
        for name, rate, cosine, note in rows:
            if rate is None:
                print(f"| {name} | {size} | {batch_size} | – | – | – | – | – | {note} |")
                continue
            print(f"| {name} | {size} | {batch_size} | {rate:.0f} | {rate / baseline:.2f} | {rate * flops / 1e9:.1f} "
                  f"| {100 * rate * flops / peak.flops:.1f} | {cosine:.5f} | {note} |")
        print(f"\n({flops / 1e9:.3f} GFLOP per {size} px image, counted by FlopCounterMode)")
        if compile_seconds is not None:
            print(break_even(rows, compile_seconds))
    if args.agreement:
        size, batch_size = (int(part) for part in args.sizes.split(",")[0].split("x"))
        print(agreement(model, args.agreement, size, batch_size))


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
