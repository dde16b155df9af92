"""Where the trunk's starting weights come from: ImageNet, a file, or nothing."""
from __future__ import annotations

import logging
from pathlib import Path

import torch
import torchvision

log = logging.getLogger(__name__)

from config import LookbookError


class WeightsUnavailableError(LookbookError, RuntimeError):
    """Pretrained weights were asked for and cannot be had; the message says how to provide them."""


def imagenet_weights_enum(backbone: str = "resnet50") -> torchvision.models.WeightsEnum:
    """torchvision's best ImageNet weights for the backbone."""
    if backbone != "resnet50":
        raise ValueError(f"no ImageNet weights known for {backbone!r}")
    return torchvision.models.ResNet50_Weights.IMAGENET1K_V2


def imagenet_cache_file(backbone: str = "resnet50") -> Path:
    """Where torchvision looks for the weights file before downloading (under TORCH_HOME)."""
    url = imagenet_weights_enum(backbone).url
    return Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]


def load_imagenet_state_dict(backbone: str = "resnet50") -> dict[str, torch.Tensor]:
    """ImageNet weights from the TORCH_HOME cache, downloading them when online."""
    weights = imagenet_weights_enum(backbone)
    cache_file = imagenet_cache_file(backbone)
    try:
        return weights.get_state_dict(progress=True)
    except Exception as error:  # urllib, DNS, SSL, a half-written file: all mean "not to be had"
        raise WeightsUnavailableError(
            f"ImageNet weights for {backbone} could not be loaded ({type(error).__name__}: {error}).\n"
            f"Provide them in one of these ways:\n"
            f"  - put the file {cache_file.name} (from {weights.url}) at {cache_file}"
            f" (set TORCH_HOME to move that directory);\n"
            f"  - or set embedder.weights to the path of that file"
            f" (LOOKBOOK_EMBEDDER_WEIGHTS=/path/{cache_file.name});\n"
            f"  - or set embedder.weights to 'none' to start from random weights"
            f" ('auto' uses ImageNet when it can be had, else random)."
        ) from error


def load_state_dict_file(path: Path) -> dict[str, torch.Tensor]:
    """A torchvision state dict saved with torch.save (e.g. the downloaded .pth file)."""
    if not path.is_file():
        raise WeightsUnavailableError(f"weights file {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise WeightsUnavailableError(f"weights file {path} could not be read: {error}") from error
    if not isinstance(state, dict):
        raise WeightsUnavailableError(f"weights file {path} does not hold a state dict")
    return state
