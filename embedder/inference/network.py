"""How the embedding network runs for inference: BatchNorms folded, channels_last, precision, runtime.

On a CPU without native bfloat16 oneDNN emulates it, far slower than float32, so "auto" keeps float32
there and takes bfloat16 only on CPUs that compute it natively (AVX512-BF16 or AMX), except for the web
app's small batches of small images, which run faster on ONNX Runtime (query_precisions). On a GPU,
"auto" is float16 autocast, which agrees with float32 as closely as TF32 does. torch.compile is optional:
it pays on a GPU, not on a small CPU. The measurements are in benchmarks/README.md.
"""
from __future__ import annotations

import contextlib
import importlib.util
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.fx.experimental.optimization import fuse

from config import PRECISIONS, RUNTIMES

if TYPE_CHECKING:
    from embedder.checkpoint import LoadedEmbedder

log = logging.getLogger(__name__)

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def native_bfloat16() -> bool:
    """Whether this CPU computes bfloat16 in hardware (AVX512-BF16 or AMX), as oneDNN needs to profit from it."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


def onnx_runtime_installed() -> bool:
    """Whether onnxruntime and the exporter's packages (onnx, onnxscript) can be imported."""
    return all(importlib.util.find_spec(name) is not None for name in ("onnxruntime", "onnx", "onnxscript"))


def resolve_runtime(runtime: str, device: str, precision: str = "auto", compile_model: bool = False) -> str:
    """'auto' -> 'onnxruntime' for fp32 on a CPU where it is installed (faster at every batch size measured,
    above all the small batches a server embeds), else 'torch'; checks a named runtime fits."""
    if runtime not in RUNTIMES:
        raise ValueError(f"embedder.runtime {runtime!r} is not one of {', '.join(RUNTIMES)}")
    if runtime != "auto":
        return runtime
    fp32 = precision == "fp32" or (precision == "auto" and not native_bfloat16())
    if device == "cpu" and fp32 and not compile_model and onnx_runtime_installed():
        return "onnxruntime"
    return "torch"


# Image sizes up to which the web app embeds queries in fp32 (so on ONNX Runtime) on a CPU even where bf16
# is native: its micro-batches of 1-8 small images are mostly per-call cost, which ONNX Runtime keeps low.
SMALL_QUERY_IMAGES = 64

# Above SMALL_QUERY_IMAGES, where bf16 is native, batches of queries still run faster in bf16 but a lone query
# does not, so the web app keeps both networks and embeds batches of fewer than FEW_QUERIES images in fp32.
FEW_QUERIES = 2


@dataclass(frozen=True)
class QueryPrecisions:
    """The precisions the web app embeds queries in: ``few`` for batches of fewer than FEW_QUERIES images,
    ``many`` for the others (the same precision when one network serves both)."""

    few: str
    many: str

    @property
    def split(self) -> bool:
        return self.few != self.many


def query_precisions(precision: str, runtime: str, device: str, image_size: int) -> QueryPrecisions:
    """As configured, except on a CPU when both precision and runtime are "auto": fp32 (so ONNX Runtime where
    it is installed) for small images, and for lone queries of larger ones where bf16 is native."""
    if runtime == precision == "auto" and device == "cpu":
        if image_size <= SMALL_QUERY_IMAGES:
            return QueryPrecisions("fp32", "fp32")
        if native_bfloat16() and onnx_runtime_installed():
            return QueryPrecisions("fp32", precision)
    return QueryPrecisions(precision, precision)


def resolve_precision(precision: str, device: str, runtime: str = "torch") -> str:
    """'auto' -> 'fp16' on CUDA, 'bf16' on CPUs with native bfloat16, else 'fp32'; checks the others fit the device."""
    if precision not in PRECISIONS:
        raise ValueError(f"embedder.precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    if runtime == "onnxruntime":
        if precision not in ("auto", "fp32"):
            raise ValueError(f"embedder.precision {precision!r}: the onnxruntime runtime computes in fp32 only")
        return "fp32"
    on_gpu = device.startswith("cuda")
    if precision == "auto":
        return "fp16" if on_gpu else ("bf16" if native_bfloat16() else "fp32")
    if precision == "fp16" and not on_gpu:
        raise ValueError("embedder.precision 'fp16' needs a CUDA GPU; use 'auto', 'fp32' or 'bf16' on the CPU")
    return precision


def autocast(precision: str, device: str) -> contextlib.AbstractContextManager:
    """Mixed precision for a resolved precision ('fp32': none); weights stay float32, the output is made float32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast("cuda" if device.startswith("cuda") else "cpu", dtype=DTYPES[precision])


def fold_batch_norms(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of the network in eval mode with each BatchNorm folded into the convolution before it.

    The same function up to float rounding, with a third fewer passes over the activations
    (benchmarks/README.md, Embedder forward).
    """
    return fuse(model.eval(), inplace=False)


class MirrorAveraged(torch.nn.Module):
    """The network's vector for an image and for its mirror image, averaged (the mean direction, unit length).

    Test-time augmentation (embedder.mirror_average): the vector no longer depends on which way a garment
    faces. Both halves go through the network as one batch of 2N, so a small batch keeps the cores as busy.
    Off by default: at twice the forward cost it helped only some checkpoints (docs/experiments.md).
    """

    def __init__(self, network: torch.nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        # Rows 0..N-1 are the images, N..2N-1 their mirror images: (2N, D) -> (2, N, D), summed over the pair.
        # (chunk(2) would pin the ONNX export's batch size.)
        both = self.network(torch.cat([images, images.flip(-1)]))
        return torch.nn.functional.normalize(both.unflatten(0, (2, -1)).sum(0), dim=1)


def prepare_checkpoint(loaded: LoadedEmbedder, device: str, runtime: str, precision: str, artifacts: Path,
                       compile_model: bool = False, spinning: bool = True,
                       mirror_average: bool = False) -> tuple[Callable[[torch.Tensor], torch.Tensor], str]:
    """A loaded checkpoint's network ready for inference (prepare_model) with ``runtime`` resolved, and that
    runtime; with ONNX Runtime, its export is kept in (and loaded from) ``artifacts``, named by the checkpoint."""
    from embedder.inference.onnx_runtime import exported_model_path

    runtime = resolve_runtime(runtime, device, precision, compile_model)
    size = loaded.preprocessing.image_size
    saved_export = exported_model_path(artifacts, loaded.sha256, size, mirror_average)
    model = prepare_model(loaded.model, device, compile_model, runtime, size, saved_export=saved_export,
                          spinning=spinning, mirror_average=mirror_average)
    return model, runtime


def prepare_model(model: torch.nn.Module, device: str, compile_model: bool = False, runtime: str = "torch",
                  image_size: int = 224, saved_export: Path | None = None,
                  spinning: bool = True, mirror_average: bool = False) -> Callable[[torch.Tensor], torch.Tensor]:
    """A copy of the network for inference: BatchNorms folded, on ``device``, channels_last, compiled if asked;
    or, with ``runtime`` "onnxruntime" (a resolved runtime, see resolve_runtime), exported to ONNX Runtime
    for ``image_size`` px images (CPU only), loaded from or saved to ``saved_export``
    (embedder.inference.onnx_runtime.exported_model_path), its pool threads ``spinning`` or not between batches.
    With ``mirror_average``, the network inside MirrorAveraged.

    torch.compile compiles on the first batch of each shape (a minute or more on a small CPU), so
    callers keep batches one shape (see embed_catalog) and compile only for long runs.
    """
    runtime = resolve_runtime(runtime, device, compile_model=compile_model)
    if runtime == "onnxruntime":
        if device != "cpu" or compile_model:
            raise ValueError("embedder.runtime 'onnxruntime' runs uncompiled on the CPU: set embedder.device to cpu "
                             "and embedder.compile to false, or embedder.runtime to torch")
        from embedder.inference.onnx_runtime import OnnxRuntimeModel

        return OnnxRuntimeModel(MirrorAveraged(model) if mirror_average else model, image_size, saved=saved_export,
                                spinning=spinning)
    model = fold_batch_norms(model).to(device).to(memory_format=torch.channels_last)
    if mirror_average:
        model = MirrorAveraged(model)
    return torch.compile(model, dynamic=False) if compile_model else model


def load_checked_network(checkpoint: Path, sha256: str, device: str, runtime: str, precision: str, artifacts: Path,
                         mirror_average: bool = False) -> tuple[Callable[[torch.Tensor], np.ndarray], str]:
    """For a worker elsewhere (Ray): the checkpoint at ``checkpoint``, checked to be the one with ``sha256``,
    as a function from a uint8 pixel batch to vectors (normalised as build-index does), and its runtime."""
    from embedder.checkpoint import load_checkpoint
    from embedder.inference.extract import embed_batch
    from embedder.transforms import normalize_batch

    loaded = load_checkpoint(Path(checkpoint), device)
    if loaded.sha256 != sha256:
        raise RuntimeError(f"{checkpoint} here is not the checkpoint that embedded the catalog (sha256 "
                           f"{loaded.sha256[:12]}..., expected {sha256[:12]}...)")
    model, runtime = prepare_checkpoint(loaded, device, runtime, precision, Path(artifacts),
                                        mirror_average=mirror_average)
    precision = resolve_precision(precision, device, runtime)

    def embed(pixels: torch.Tensor) -> np.ndarray:
        return embed_batch(model, normalize_batch(pixels.to(device), loaded.preprocessing), device, precision)

    return embed, runtime
