"""Preprocessing that travels with a checkpoint, and the image transforms built from it."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from PIL import Image, ImageOps
from torchvision import transforms as T

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESIZE_MODES = ("squash", "pad", "center-crop")


@dataclass(frozen=True)
class Preprocessing:
    """How an image becomes the network's input; saved in checkpoints and HDF5 attributes."""

    image_size: int
    # squash: resize to a square; pad: letterbox to a square, then resize; center-crop: shorter side, then crop.
    resize: str = "pad"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    # Grayscale catalogs: queries are made gray too, so they look like the catalog.
    grayscale: bool = False

    def __post_init__(self) -> None:
        if self.resize not in RESIZE_MODES:
            raise ValueError(f"preprocessing resize {self.resize!r} is not one of {', '.join(RESIZE_MODES)}")

    def to_dict(self) -> dict:
        """Plain types, for JSON and checkpoints."""
        return {**asdict(self), "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, data: dict) -> Preprocessing:
        """Inverse of to_dict; unknown keys are an error, so a newer format is noticed."""
        return cls(**{**data, "mean": tuple(data["mean"]), "std": tuple(data["std"])})


class PadToSquare:
    """Letterbox an image to a square so the whole garment stays in view, undistorted."""

    def __init__(self, fill: tuple[int, ...]) -> None:
        self.fill = fill

    def __call__(self, image: Image.Image) -> Image.Image:
        width, height = image.size
        if width == height:
            return image
        side = max(width, height)
        return ImageOps.pad(image, (side, side), color=self.fill, centering=(0.5, 0.5))


def build_transform(preprocessing: Preprocessing) -> Callable[[Image.Image], torch.Tensor]:
    """PIL image (any mode) -> normalised 3×S×S float tensor, as the checkpoint was trained."""
    size = preprocessing.image_size
    # Padding with the mean colour makes the border zero after normalisation.
    fill = tuple(round(255 * m) for m in preprocessing.mean)
    steps: list[Callable] = [to_gray3 if preprocessing.grayscale else to_rgb]
    if preprocessing.resize == "pad":
        steps += [PadToSquare(fill), T.Resize((size, size), antialias=True)]
    elif preprocessing.resize == "squash":
        steps += [T.Resize((size, size), antialias=True)]
    else:
        steps += [T.Resize(size, antialias=True), T.CenterCrop(size)]
    steps += [T.ToTensor(), T.Normalize(preprocessing.mean, preprocessing.std)]
    return T.Compose(steps)


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode -> RGB."""
    return image if image.mode == "RGB" else image.convert("RGB")


def to_gray3(image: Image.Image) -> Image.Image:
    """Any PIL mode -> gray, replicated in three channels."""
    return image.convert("L").convert("RGB")
