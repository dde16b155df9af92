"""Training step throughput on the CPU: ResNet-50's convolutions as oneDNN runs them, and over the smallest maps as products.

Both networks start from the same random weights and take the same P×K batch (Fashion-MNIST images
when installed) through the training step `manage.py train` runs: triplet + classification loss,
backward, AdamW (fused, as training runs it; and a tensor at a time, torch's CPU default, with the
products). They take turns, best of --rounds. Then the layers the products change at 32 px,
forward + backward alone, to show where the difference comes from.

    python -m benchmarks.bench_training [--rounds 3] [--classes 10] [--per-class 12]
"""
from __future__ import annotations

import argparse
import copy

import numpy as np
import torch

from benchmarks.common import FASHION_MNIST, interleaved_best
from config import Config, TrainConfig, load_config
from embedder.catalogs.dataset import CatalogImages
from embedder.catalogs.fashion_mnist import FashionMnistCatalog, has_fashion_mnist
from embedder.checkpoint import catalog_preprocessing
from embedder.training.loop import Trainee, build_optimizer, build_trainee, fast_bfloat16, train_step
from embedder.training.small_map_convs import use_small_map_convs
from embedder.transforms import build_transform

IMAGE_SIZE = 32


def training_batch(config: Config, classes: int, per_class: int) -> tuple[torch.Tensor, torch.Tensor, str]:
    """A P×K batch as the trainer feeds it (preprocessed, channels_last): Fashion-MNIST's when installed."""
    if has_fashion_mnist(FASHION_MNIST):
        catalog = FashionMnistCatalog(FASHION_MNIST)
        labels_of = np.array([item.label for item in catalog.items])
        rows = [row for label in range(classes) for row in np.flatnonzero(labels_of == label)[:per_class]]
        images = CatalogImages(catalog, np.array(rows), build_transform(catalog_preprocessing(config.embedder, catalog)),
                               IMAGE_SIZE)
        batch = torch.stack([images[i][0] for i in range(len(rows))])
        labels = torch.from_numpy(labels_of[rows])
        source = f"{len(rows)} Fashion-MNIST images"
    else:
        labels = torch.arange(classes).repeat_interleave(per_class)
        batch = torch.randn(len(labels), 3, IMAGE_SIZE, IMAGE_SIZE)
        source = f"{len(labels)} random images (Fashion-MNIST is not installed)"
    return batch.contiguous(memory_format=torch.channels_last), labels, source


def plain_convolutions(trainee: Trainee) -> Trainee:
    """The same trainee with every convolution back to a plain nn.Conv2d (what training ran before the shortcut)."""
    plain = copy.deepcopy(trainee)
    for module in plain.model.modules():
        if isinstance(module, torch.nn.Conv2d):
            module.__class__ = torch.nn.Conv2d
    return plain


def unfused_optimizer(trainee: Trainee, config: Config) -> Trainee:
    """A copy of the trainee whose optimiser updates one tensor at a time (torch's CPU default), not fused."""
    twin = copy.deepcopy(trainee)
    params = [p for p in twin.model.parameters() if p.requires_grad] + (list(twin.aux.parameters()) if twin.aux else [])
    twin.optimizer = build_optimizer(config.train, params, fused=False)
    return twin


def layer_times(rounds: int, batch_size: int) -> list[tuple[str, float, float]]:
    """Forward + backward ms of the convolutions over 2×2 and 1×1 maps at 32 px: plain, and as a product."""
    rows = []
    # name, in and out channels, kernel, input size, stride
    shapes = [("layer3.1-5.conv2: 256→256, 3×3 on 2×2 (blocks)", 256, 256, 3, 2, 1),
              ("layer4.0.conv2: 512→512, 3×3 stride 2 on 2×2", 512, 512, 3, 2, 2),
              ("layer4.1-2.conv2: 512→512, 3×3 on 1×1", 512, 512, 3, 1, 1),
              ("layer4.*.conv3: 512→2048, 1×1 on 1×1", 512, 2048, 1, 1, 1),
              ("layer4.0.downsample: 1024→2048, 1×1 stride 2 on 2×2", 1024, 2048, 1, 2, 2)]
    for name, in_channels, out_channels, kernel, size, stride in shapes:
        fast = torch.nn.Conv2d(in_channels, out_channels, kernel, stride, kernel // 2,
                               bias=False).to(memory_format=torch.channels_last)
        plain = copy.deepcopy(fast)
        use_small_map_convs(fast)
        x = torch.randn(batch_size, in_channels, size, size).contiguous(memory_format=torch.channels_last)
        x.requires_grad_()

        def step(conv: torch.nn.Conv2d) -> None:
            conv(x).sum().backward()

        best = interleaved_best({"plain": lambda: step(plain), "product": lambda: step(fast)}, rounds)
        rows.append((name, 1e3 * best["plain"], 1e3 * best["product"]))
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--classes", type=int, default=TrainConfig.classes_per_batch)
    parser.add_argument("--per-class", type=int, default=TrainConfig.images_per_class)
    options = parser.parse_args(argv if argv is not None else [])
    torch.manual_seed(0)
    config = load_config(env={}, overrides={"embedder.weights": "none", "embedder.image_size": str(IMAGE_SIZE)})
    fast = build_trainee(config, options.classes, "cpu")
    plain = plain_convolutions(fast)
    loop = unfused_optimizer(fast, config)
    batch, labels, source = training_batch(config, options.classes, options.per_class)
    weight = config.train.aux_loss_weight
    paths = {
        "plain": lambda: train_step(plain, batch, labels, weight, amp=False),
        "product": lambda: train_step(fast, batch, labels, weight, amp=False),
        "loop": lambda: train_step(loop, batch, labels, weight, amp=False),
    }
    labels_of = [("plain", "oneDNN for every convolution"), ("loop", "small maps as products, AdamW a tensor at a time"),
                 ("product", "small maps as products, AdamW fused (train without native bf16)")]
    if fast_bfloat16("cpu"):  # what train runs on CPUs with AVX512-BF16 or AMX (train.amp = auto)
        paths["bf16"] = lambda: train_step(fast, batch, labels, weight, amp=True)
        labels_of.append(("bf16", "the same in bf16 autocast (train here)"))
    best = interleaved_best(paths, options.rounds)
    print(f"\n## training step: ResNet-50 at {IMAGE_SIZE} px, {source}, {torch.get_num_threads()} threads, "
          f"best of {options.rounds}\n")
    print("| convolutions | ms per step | images/s | vs plain |")
    print("|---|---|---|---|")
    for name, label in labels_of:
        print(f"| {label} | {1e3 * best[name]:.0f} | {len(labels) / best[name]:.1f} | {best['plain'] / best[name]:.2f} |")
    print("\n| layer (forward + backward) | oneDNN ms | product ms | ratio |")
    print("|---|---|---|---|")
    for name, plain_ms, product_ms in layer_times(options.rounds, len(labels)):
        print(f"| {name} | {plain_ms:.1f} | {product_ms:.1f} | {plain_ms / product_ms:.1f} |")


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
