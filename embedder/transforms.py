"""Preprocessing that travels with a checkpoint, and the image transforms built from it."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
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


# A letterboxed image is first shrunk to at most this many times the network's input size: padding a
# thin strip to a square of its long side would otherwise allocate that square (side² pixels).
PAD_SIDE_LIMIT = 4


class PadToSquare:
    """Letterbox an image to a square so the whole garment stays in view, undistorted; with ``longest``,
    an image whose long side is over it is first shrunk to it (keeping its aspect), bounding the square."""

    def __init__(self, fill: tuple[int, ...], longest: int | None = None) -> None:
        self.fill, self.longest = fill, longest

    def __call__(self, image: Image.Image) -> Image.Image:
        width, height = image.size
        if width == height:
            return image
        side = max(width, height)
        if self.longest is not None and side > self.longest:
            scale = self.longest / side
            image = image.resize((max(1, round(width * scale)), max(1, round(height * scale))), Image.Resampling.BILINEAR,
                                 reducing_gap=2.0)
            side = self.longest
        return ImageOps.pad(image, (side, side), color=self.fill, centering=(0.5, 0.5))


def build_transform(preprocessing: Preprocessing) -> Callable[[Image.Image], torch.Tensor]:
    """PIL image (any mode) -> normalised 3×S×S float tensor, as the checkpoint was trained."""
    return T.Compose(_pil_steps(preprocessing) + [T.ToTensor(), T.Normalize(preprocessing.mean, preprocessing.std)])


def build_pixel_transform(preprocessing: Preprocessing) -> Callable[[Image.Image], torch.Tensor]:
    """PIL image -> 3×S×S uint8 tensor: build_transform up to its last step, which normalize_batch does per batch.

    Converting and normalising one small image at a time costs more than resizing it (torch's
    threads wake for every image); a whole batch at once costs next to nothing, and a uint8 batch
    is a quarter of the bytes to pass from DataLoader workers and to copy to a GPU.
    """
    return T.Compose(_pil_steps(preprocessing) + [to_uint8_tensor])


def normalize_batch(batch: torch.Tensor, preprocessing: Preprocessing) -> torch.Tensor:
    """uint8 N×3×S×S -> float32 normalised on the batch's device; bit for bit what build_transform gives."""
    mean = torch.tensor(preprocessing.mean, dtype=torch.float32, device=batch.device).view(1, 3, 1, 1)
    std = torch.tensor(preprocessing.std, dtype=torch.float32, device=batch.device).view(1, 3, 1, 1)
    # The same float32 operations in the same order as ToTensor (divide by 255) then Normalize.
    return batch.to(torch.float32).div(255).sub(mean).div(std)


def to_uint8_tensor(image: Image.Image) -> torch.Tensor:
    """An RGB PIL image -> 3×H×W uint8 tensor (a view of one copy: half the time of T.PILToTensor)."""
    return torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1)


def _pil_steps(preprocessing: Preprocessing) -> list[Callable]:
    """The PIL part of the transform: colour mode, then resize as the preprocessing says."""
    size = preprocessing.image_size
    # Padding with the mean colour makes the border zero after normalisation.
    fill = tuple(round(255 * m) for m in preprocessing.mean)
    if preprocessing.grayscale and preprocessing.resize != "pad":
        # Resizing one gray channel, then copying it to three, gives the same pixels as resizing three.
        resize = [T.Resize((size, size), antialias=True)] if preprocessing.resize == "squash" \
            else [T.Resize(size, antialias=True), T.CenterCrop(size)]
        return [to_gray, *resize, to_rgb]
    steps: list[Callable] = [to_gray3 if preprocessing.grayscale else to_rgb]
    if preprocessing.resize == "pad":
        steps += [PadToSquare(fill, PAD_SIDE_LIMIT * size), T.Resize((size, size), antialias=True)]
    elif preprocessing.resize == "squash":
        steps += [T.Resize((size, size), antialias=True)]
    else:
        steps += [T.Resize(size, antialias=True), T.CenterCrop(size)]
    return steps


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode -> RGB."""
    return image if image.mode == "RGB" else image.convert("RGB")


def to_gray(image: Image.Image) -> Image.Image:
    """Any PIL mode -> one gray channel."""
    return image if image.mode == "L" else image.convert("L")


def to_gray3(image: Image.Image) -> Image.Image:
    """Any PIL mode -> gray, replicated in three channels."""
    return image.convert("L").convert("RGB")
