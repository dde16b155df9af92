"""Training augmentation presets, kept apart from the loop; each ends in the checkpoint's preprocessing."""
from __future__ import annotations

from collections.abc import Callable

import torch
from PIL import Image
from torchvision import transforms as T

from embedder.transforms import PadToSquare, Preprocessing, to_gray3, to_rgb, to_uint8_tensor

PRESETS = ("none", "fashion-mnist", "photo")


def preset_for(catalog_kind: str) -> str:
    """The preset a catalog gets under augment = "auto"."""
    return "fashion-mnist" if catalog_kind == "fashion-mnist" else "photo"


def training_pixels(preset: str, preprocessing: Preprocessing,
                    erasing: float = 0.0) -> Callable[[Image.Image], torch.Tensor]:
    """PIL image -> augmented 3×S×S uint8 tensor, shaped like the inference transform's output; the loop
    normalises whole batches (transforms.normalize_batch): per image, reading a batch of 120 Fashion-MNIST
    images took 84 rather than 32 ms (about 5 % of a 2-core training step, measured while training ran).
    ``erasing`` is the chance that a rectangle of the result is replaced by noise (RandomNoiseErasing)."""
    if preset not in PRESETS:
        raise ValueError(f"augmentation preset {preset!r} is not one of {', '.join(PRESETS)}")
    size = preprocessing.image_size
    fill = tuple(round(255 * m) for m in preprocessing.mean)
    steps: list[Callable] = [to_gray3 if preprocessing.grayscale else to_rgb]
    if preprocessing.resize == "pad":
        steps.append(PadToSquare(fill))
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
    if erasing > 0:
        steps.append(RandomNoiseErasing(erasing, same_in_all_channels=preprocessing.grayscale))
    return T.Compose(steps)


class RandomNoiseErasing:
    """Random erasing (Zhong et al., 2017): with probability ``p``, a rectangle of 2-40 % of the image, of
    aspect 0.3-3.3, becomes uniform noise, so the embedder cannot lean on any one part of a garment (a
    collar, a sleeve) to tell classes apart. Noise rather than a constant: on Fashion-MNIST a black patch
    is the background, and erasing a sleeve that way draws another garment. Gray catalogs get gray noise:
    inference never shows them colour."""

    SCALE = (0.02, 0.4)
    RATIO = (0.3, 3.3)

    def __init__(self, p: float, same_in_all_channels: bool = False) -> None:
        self.p, self.same_in_all_channels = p, same_in_all_channels

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        if torch.rand(()) >= self.p:
            return pixels
        top, left, height, width, _ = T.RandomErasing.get_params(pixels, self.SCALE, self.RATIO, value=[0])
        if (height, width) == tuple(pixels.shape[1:]):
            return pixels  # no rectangle of that size fitted in ten draws: torchvision then gives the whole image
        channels = 1 if self.same_in_all_channels else pixels.shape[0]
        noise = torch.randint(0, 256, (channels, height, width), dtype=torch.uint8)
        erased = pixels.clone()
        erased[:, top:top + height, left:left + width] = noise
        return erased
