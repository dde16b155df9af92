"""The embedding network run by ONNX Runtime on the CPU (embedder.runtime = "onnxruntime"; pip install '.[onnx]').

ONNX Runtime fuses each convolution with its BatchNorm, ReLU and residual addition, and its threads
cope with a busy CPU where torch's OpenMP threads stall: on an idle 2-core CPU it embeds as fast as
torch (1.02×), on one shared with other work 2-3× faster (benchmarks/README.md). Its embeddings are
within a cosine of 0.99999 of torch's. The export takes about 7 s.
"""
from __future__ import annotations

import logging
import time

import numpy as np
import torch

log = logging.getLogger(__name__)

INSTALL_HINT = "embedder.runtime 'onnxruntime' needs onnxruntime, onnx and onnxscript: pip install 'lookbook[onnx]'"


class OnnxRuntimeModel:
    """Called like the torch network (a float32 N×3×S×S batch in, N×D embeddings out), run by ONNX Runtime."""

    def __init__(self, model: torch.nn.Module, image_size: int, threads: int | None = None) -> None:
        try:
            import onnxruntime
        except ImportError:
            raise RuntimeError(INSTALL_HINT) from None
        started = time.perf_counter()
        example = torch.zeros(2, 3, image_size, image_size)
        try:
            program = torch.onnx.export(model.eval().cpu(), (example,), input_names=["images"],
                                        output_names=["embeddings"], dynamic_shapes=({0: torch.export.Dim("batch")},),
                                        dynamo=True, verbose=False)
        except (ImportError, torch.onnx.OnnxExporterError) as error:  # onnx or onnxscript missing
            raise RuntimeError(f"{INSTALL_HINT} ({error})") from None
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        self.session = onnxruntime.InferenceSession(program.model_proto.SerializeToString(), options,
                                                    providers=["CPUExecutionProvider"])
        log.info("Exported the embedder to ONNX Runtime %s in %.1f s", onnxruntime.__version__,
                 time.perf_counter() - started)

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        pixels = np.ascontiguousarray(batch.detach().cpu().numpy(), dtype=np.float32)
        return torch.from_numpy(self.session.run(None, {"images": pixels})[0])
