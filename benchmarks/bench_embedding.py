"""Embedder forward throughput at the catalog image sizes: eager NCHW against channels_last."""
from __future__ import annotations

import time

import torch

from embedder.model import EmbeddingNet

ROUNDS = 3


def images_per_second(model: torch.nn.Module, batch: torch.Tensor, rounds: int = ROUNDS) -> float:
    """Best of ``rounds`` timed forward passes, after one warm-up."""
    with torch.inference_mode():
        model(batch)
        best = float("inf")
        for _ in range(rounds):
            started = time.perf_counter()
            model(batch)
            best = min(best, time.perf_counter() - started)
    return len(batch) / best


def main() -> None:
    model = EmbeddingNet(embedding_size=128).eval()
    print("\n## embedding: ResNet-50 forward, images/s (best of 3)")
    print("| image size | batch | NCHW | channels_last | ratio |")
    print("|---|---|---|---|---|")
    for size, batch_size in ((32, 256), (224, 16)):
        batch = torch.randn(batch_size, 3, size, size)
        nchw = images_per_second(model.to(memory_format=torch.contiguous_format), batch)
        last = images_per_second(model.to(memory_format=torch.channels_last),
                                 batch.contiguous(memory_format=torch.channels_last))
        print(f"| {size} | {batch_size} | {nchw:.0f} | {last:.0f} | {last / nchw:.2f} |")
