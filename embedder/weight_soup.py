"""A weight soup: the mean of several checkpoints' weights (Wortsman et al. 2022, "Model soups"; SWA's
average of a run's snapshots), with BatchNorm's statistics measured again on training images, since the
mean of the ingredients' running statistics is not the statistics of the averaged network.

Checkpoints from one run, or from warm restarts of one another, lie in one basin; their mean lies inside
it where no single snapshot does (on Fashion-MNIST it beat every run's best checkpoint: docs/experiments.md).
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.optim.swa_utils import update_bn

from embedder.checkpoint import CheckpointError, read_checkpoint
from embedder.model import EmbeddingNet
from embedder.transforms import Preprocessing


@dataclass
class Soup:
    """The averaged network (BatchNorm not yet recalibrated) and what its ingredients share."""

    model: EmbeddingNet
    preprocessing: Preprocessing
    ingredients: list[str]


def average_checkpoints(paths: Sequence[Path]) -> Soup:
    """The mean of the checkpoints' floating-point weights and buffers; CheckpointError naming the file when
    one does not fit the first (another network or preprocessing)."""
    if len(paths) < 2:
        raise CheckpointError(f"a weight soup needs at least two checkpoints, got {len(paths)}")
    first = read_checkpoint(Path(paths[0]))
    total = {name: tensor.double() if tensor.is_floating_point() else tensor.clone()
             for name, tensor in first["state_dict"].items()}
    for path in paths[1:]:
        payload = read_checkpoint(Path(path))
        for key in ("model_args", "preprocessing"):
            if payload[key] != first[key]:
                raise CheckpointError(f"{path} cannot be averaged with {paths[0]}: its {key} {payload[key]} differ "
                                      f"from {first[key]}")
        if payload["state_dict"].keys() != total.keys():
            raise CheckpointError(f"{path} cannot be averaged with {paths[0]}: they hold different weights")
        for name, tensor in payload["state_dict"].items():
            if tensor.is_floating_point():
                total[name] += tensor.double()
    model = EmbeddingNet(**first["model_args"])
    model.load_state_dict({name: (tensor / len(paths)).to(first["state_dict"][name].dtype)
                           if tensor.is_floating_point() else tensor for name, tensor in total.items()})
    return Soup(model, Preprocessing.from_dict(first["preprocessing"]), [str(path) for path in paths])


def recalibrate_batchnorm(model: torch.nn.Module, batches: Iterable[torch.Tensor]) -> int:
    """Set every BatchNorm's running mean and variance to their average over ``batches`` (model inputs), with
    torch's own update_bn; returns the images seen. The model is left in eval mode."""
    seen = 0

    def counted() -> Iterator[torch.Tensor]:
        nonlocal seen
        for batch in batches:
            seen += len(batch)
            yield batch

    update_bn(counted(), model)
    model.eval()
    if not seen and any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        raise ValueError("BatchNorm cannot be recalibrated without images")
    return seen
