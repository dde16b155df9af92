"""The embedding network run by ONNX Runtime on the CPU (embedder.runtime "onnxruntime", or "auto" on a CPU).

ONNX Runtime fuses each convolution with its BatchNorm, ReLU and residual addition, and its threads cope
with a busy CPU where torch's OpenMP threads stall; on a CPU it embeds faster than torch, above all in
small batches (benchmarks/README.md, Embedder forward), likely because it lays its weights out for its
kernels once, when the session starts, where torch's oneDNN path re-lays them on each call.

The export takes seconds, so the exported model is kept beside the checkpoint's other artifacts
(``exported_model_path``), named by the checkpoint's hash: build-index exports it once and every
server worker loads it.
"""
from __future__ import annotations

import logging
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger(__name__)

INSTALL_HINT = "embedder.runtime 'onnxruntime' needs onnxruntime, onnx and onnxscript: pip install onnxruntime onnx onnxscript"
EXPORT_PREFIX = "embedder-"


def exported_model_path(directory: Path, checkpoint_sha256: str, image_size: int, mirror_average: bool = False) -> Path:
    """Where the ONNX export of the checkpoint with this hash, for images of this size (averaged with their
    mirror images or not, see embedder.inference.network.MirrorAveraged), is kept."""
    mirrored = "-mirror" if mirror_average else ""
    return Path(directory) / f"{EXPORT_PREFIX}{checkpoint_sha256[:16]}-{image_size}px{mirrored}.onnx"


class OnnxRuntimeModel:
    """Called like the torch network (a float32 N×3×S×S batch in, N×D embeddings out), run by ONNX Runtime.

    ``saved``: an exported model to load, or to write after exporting when it is not there (or unreadable).
    ``spinning``: whether idle pool threads go on spinning between runs, as suits a long run of batches; a
    server turns it off so that its pool does not keep a core from the requests' own work between batches.
    Within a run they always spin: a ResNet-50 over a small image is many short operators, and a pool that
    sleeps would wake its threads for each of them. Stopping the spin at the end of each run
    (session.force_spinning_stop) keeps the pool from holding a core between runs.
    """

    def __init__(self, model: torch.nn.Module, image_size: int, threads: int | None = None,
                 saved: Path | None = None, spinning: bool = True) -> None:
        try:
            import onnxruntime
        except ImportError:
            raise RuntimeError(INSTALL_HINT) from None
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.add_session_config_entry("session.intra_op.allow_spinning", "1")
        if not spinning:
            options.add_session_config_entry("session.force_spinning_stop", "1")
        self.session = None
        if saved is not None and saved.is_file():
            try:
                self.session = onnxruntime.InferenceSession(str(saved), options, providers=["CPUExecutionProvider"])
                log.info("Loaded the ONNX Runtime embedder from %s", saved)
            except Exception as error:  # noqa: BLE001 - onnxruntime raises its own untyped errors on a bad file
                log.warning("Could not load %s (%s); exporting the embedder again", saved, error)
        if self.session is None:
            exported = _export(model, image_size)
            if saved is not None:
                _write_atomically(exported, saved)
            self.session = onnxruntime.InferenceSession(exported, options, providers=["CPUExecutionProvider"])

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        pixels = np.ascontiguousarray(batch.detach().cpu().numpy(), dtype=np.float32)
        return torch.from_numpy(self.session.run(None, {"images": pixels})[0])


def _export(model: torch.nn.Module, image_size: int) -> bytes:
    """The network as an ONNX model (serialised), any batch size, images of ``image_size`` px."""
    started = time.perf_counter()
    example = torch.zeros(2, 3, image_size, image_size)
    try:
        program = torch.onnx.export(model.eval().cpu(), (example,), input_names=["images"],
                                    output_names=["embeddings"], dynamic_shapes=({0: torch.export.Dim("batch")},),
                                    dynamo=True, verbose=False)
    except (ImportError, torch.onnx.OnnxExporterError) as error:  # onnx or onnxscript missing
        raise RuntimeError(f"{INSTALL_HINT} ({error})") from None
    log.info("Exported the embedder to ONNX in %.1f s", time.perf_counter() - started)
    return program.model_proto.SerializeToString()


def _write_atomically(serialised: bytes, path: Path) -> None:
    """Write to a temporary file and rename; exports of older checkpoints in that directory are removed
    (each is the size of the network, and a checkpoint's export is never read once it is replaced)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(serialised)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    for stale in path.parent.glob(f"{EXPORT_PREFIX}*.onnx"):
        if stale != path:
            stale.unlink(missing_ok=True)
