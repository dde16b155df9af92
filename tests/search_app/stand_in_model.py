"""A stand-in query model for the model process's tests (mean colours of the prepared pixels): no checkpoint needed."""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from embedder.transforms import Preprocessing

PREPROCESSING = Preprocessing(image_size=8, resize="squash", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
CATALOG = 40


def colour_features(pixels: list[torch.Tensor]) -> np.ndarray:
    """n prepared 3×8×8 uint8 images -> n×6 unit vectors: each half's mean colour."""
    batch = torch.stack([torch.as_tensor(p) for p in pixels]).to(torch.float32) / 255.0
    halves = torch.cat([batch[:, :, :4].mean(dim=(2, 3)), batch[:, :, 4:].mean(dim=(2, 3))], dim=1) - 0.5
    return torch.nn.functional.normalize(halves, dim=1).numpy()


class CountingEmbed:
    """colour_features, remembering each batch's size."""

    def __init__(self) -> None:
        self.sizes: list[int] = []

    def __call__(self, pixels):
        self.sizes.append(len(pixels))
        return colour_features(list(pixels))


def random_image(rng: np.random.Generator) -> Image.Image:
    return Image.fromarray(rng.integers(0, 256, size=(20, 16, 3), dtype=np.uint8))
