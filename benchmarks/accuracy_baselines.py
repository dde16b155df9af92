"""The two baselines bench_accuracy trains outside Lookbook's own training loop.

- A convolutional autoencoder's bottleneck: the unsupervised embedding, for catalogs without labels.
- A plain cross-entropy classifier's penultimate features: the same ResNet-50 trunk, stem, image size,
  optimiser and schedule as the recipe, a linear layer over its 2048 pooled features, softmax cross-entropy.

Both see the same number of steps of the same batch size as the recipe they stand beside.
"""
from __future__ import annotations

import dataclasses
import logging

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from config import Config
from embedder.catalogs.base import Catalog
from embedder.catalogs.dataset import CatalogImages
from embedder.checkpoint import catalog_preprocessing, create_embedder
from embedder.inference.extract import embed_batch
from embedder.model import TRUNK_FEATURES
from embedder.training.augment import preset_for, training_pixels
from embedder.training.loop import build_optimizer, fast_bfloat16, learning_rate, start_stem_from_catalog
from embedder.training.small_map_convs import use_small_map_convs
from embedder.transforms import build_pixel_transform, normalize_batch

log = logging.getLogger(__name__)


class ConvAutoencoder(nn.Module):
    """28×28 gray image → bottleneck vector → image, trained to reconstruct its input."""

    def __init__(self, bottleneck: int = 128) -> None:
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Conv2d(1, 32, 3, stride=2, padding=1), nn.ReLU(),  # 14×14
            nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(),  # 7×7
            nn.Flatten(), nn.Linear(64 * 7 * 7, bottleneck),
        )
        self.decoder = nn.Sequential(
            nn.Linear(bottleneck, 64 * 7 * 7), nn.ReLU(), nn.Unflatten(1, (64, 7, 7)),
            nn.ConvTranspose2d(64, 32, 3, stride=2, padding=1, output_padding=1), nn.ReLU(),  # 14×14
            nn.ConvTranspose2d(32, 1, 3, stride=2, padding=1, output_padding=1),  # 28×28 logits
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(images))


def autoencoder_embeddings(pixels: np.ndarray, train_rows: np.ndarray, steps: int, batch_size: int,
                           seed: int) -> np.ndarray:
    """Train a ConvAutoencoder on the training rows of N×28×28 uint8 pixels; the L2-normalised bottleneck
    of every row."""
    torch.manual_seed(seed)
    model = ConvAutoencoder()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    images = torch.from_numpy(np.ascontiguousarray(pixels)).unsqueeze(1)  # N×1×28×28 uint8
    generator = torch.Generator().manual_seed(seed)
    train = torch.from_numpy(train_rows)
    for step in range(steps):
        for group in optimizer.param_groups:  # cosine decay to zero over the run
            group["lr"] = 1e-3 * 0.5 * (1 + np.cos(np.pi * step / steps))
        batch = images[train[torch.randint(len(train), (batch_size,), generator=generator)]].float() / 255
        loss = F.binary_cross_entropy_with_logits(model(batch), batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if (step + 1) % 200 == 0 or step + 1 == steps:
            log.info("autoencoder step %d/%d, reconstruction loss %.4f", step + 1, steps, loss.item())
    with torch.inference_mode():
        codes = torch.cat([model.encoder(images[i:i + 4096].float() / 255) for i in range(0, len(images), 4096)])
    return F.normalize(codes, dim=1).numpy()


def classifier_embeddings(config: Config, catalog: Catalog, train_rows: np.ndarray, steps: int) -> np.ndarray:
    """Train the recipe's network as a plain classifier (linear layer over the trunk's pooled features,
    cross-entropy) for ``steps`` batches; the L2-normalised pooled features of every catalog row."""
    model, origin = create_embedder(config.embedder)
    preprocessing = catalog_preprocessing(config.embedder, catalog)
    start_stem_from_catalog(model, origin, catalog, train_rows, preprocessing, config, "cpu")  # the recipe's start
    trunk = model.trunk  # its fc is the identity: the output is the pooled 2048-d features
    head = nn.Linear(TRUNK_FEATURES[config.embedder.backbone], len(catalog.class_names))
    use_small_map_convs(model)
    trunk.to(memory_format=torch.channels_last).train()
    train_settings = dataclasses.replace(config.train, steps=steps, time_budget=0)
    optimizer = build_optimizer(train_settings, list(trunk.parameters()) + list(head.parameters()), fused=True)
    preset = preset_for(catalog.kind) if config.train.augment == "auto" else config.train.augment
    images = CatalogImages(catalog, train_rows, training_pixels(preset, preprocessing), preprocessing.image_size,
                           dtype=torch.uint8)
    labels = torch.tensor([item.label for item in catalog.items])
    batch_size = config.train.classes_per_batch * config.train.images_per_class
    loader = DataLoader(images, batch_size=batch_size, shuffle=True, drop_last=True,
                        generator=torch.Generator().manual_seed(config.train.seed))
    amp = fast_bfloat16("cpu")
    step = 0
    while step < steps:
        for batch, rows, _ in loader:
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(train_settings, step, len(loader), 0.0)
            batch = normalize_batch(batch, preprocessing).contiguous(memory_format=torch.channels_last)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
                logits = head(trunk(batch).float())
            loss = F.cross_entropy(logits.float(), labels[rows])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            if step % 200 == 0 or step == steps:
                log.info("classifier step %d/%d, cross-entropy %.4f", step, steps, loss.item())
            if step == steps:
                break
    trunk.eval()
    every = CatalogImages(catalog, range(len(catalog)), build_pixel_transform(preprocessing),
                          preprocessing.image_size, dtype=torch.uint8)
    features = [embed_batch(trunk, normalize_batch(batch, preprocessing), "cpu")
                for batch, _, _ in DataLoader(every, batch_size=config.embedder.batch_size)]
    features = np.concatenate(features)
    return features / np.linalg.norm(features, axis=1, keepdims=True)
