"""Training augmentation presets, kept apart from the loop; each ends in the checkpoint's preprocessing."""
from __future__ import annotations

from collections.abc import Callable

import torch
from PIL import Image
from torchvision import transforms as T

from embedder.transforms import PAD_SIDE_LIMIT, PadToSquare, Preprocessing, to_gray3, to_rgb, to_uint8_tensor

PRESETS = ("none", "fashion-mnist", "photo")


def preset_for(catalog_kind: str) -> str:
    """The preset a catalog gets under augment = "auto"."""
    return "fashion-mnist" if catalog_kind == "fashion-mnist" else "photo"


def training_pixels(preset: str, preprocessing: Preprocessing) -> Callable[[Image.Image], torch.Tensor]:
    """PIL image -> augmented 3×S×S uint8 tensor, shaped like the inference transform's output; the loop
    normalises whole batches (transforms.normalize_batch), which costs less than normalising each image."""
    if preset not in PRESETS:
        raise ValueError(f"augmentation preset {preset!r} is not one of {', '.join(PRESETS)}")
    size = preprocessing.image_size
    fill = tuple(round(255 * m) for m in preprocessing.mean)
    steps: list[Callable] = [to_gray3 if preprocessing.grayscale else to_rgb]
    if preprocessing.resize == "pad":
        steps.append(PadToSquare(fill, PAD_SIDE_LIMIT * size))
    if preset == "none":
        steps.append(T.Resize((size, size), antialias=True))
    elif preset == "fashion-mnist":
        # Small, centred product shots: mirror images and shifts of a pixel or two. Rotation and
        # scaling as well slowed learning within a short CPU budget (kNN top-1 0.82 after 600 s).
        steps += [
            T.RandomHorizontalFlip(),
            T.RandomAffine(degrees=0, translate=(0.07, 0.07), fill=0),
            T.Resize((size, size), antialias=True),
        ]
    else:
        # Catalog photos: crops of the garment, mirror images, a slight tilt, lighting changes.
        steps += [
            T.RandomResizedCrop(size, scale=(0.6, 1.0), ratio=(0.8, 1.25), antialias=True),
            T.RandomHorizontalFlip(),
            T.RandomRotation(10, fill=fill),
            T.ColorJitter(0.2, 0.2, 0.1, 0.02),
        ]
    steps.append(to_uint8_tensor)
    return T.Compose(steps)
