"""Weight soups (`manage.py average-weights`): the mean of several checkpoints' weights (Wortsman et al.
2022, "Model soups"; SWA's average of a run's snapshots), with BatchNorm's statistics measured again on
the catalog's training images, since the mean of the ingredients' running statistics is not the
statistics of the averaged network; scored on the validation items beside each ingredient and saved as
a checkpoint.

Checkpoints from one run, or from warm restarts of one another, lie in one basin; their mean lies inside
it where no single snapshot does (on Fashion-MNIST it beat every run's best checkpoint: docs/experiments.md).
"""
from __future__ import annotations

import inspect
import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.optim.swa_utils import update_bn
from torch.utils.data import DataLoader
from tqdm import tqdm

from config import Config
from embedder.catalogs import open_catalog
from embedder.catalogs.base import Catalog
from embedder.catalogs.dataset import CatalogImages
from embedder.checkpoint import CheckpointError, load_checkpoint, read_checkpoint, save_checkpoint
from embedder.inference.extract import inference_context, resolve_device, resolve_workers
from embedder.model import EmbeddingNet
from embedder.training.loop import KnnAccuracy, Validator
from embedder.training.state import split_validation
from embedder.transforms import Preprocessing, build_pixel_transform, normalize_batch

log = logging.getLogger(__name__)

# Training images BatchNorm's statistics are measured on (all of them when the catalog has fewer): enough
# for stable statistics, few enough to take about a minute on a small CPU.
RECALIBRATION_IMAGES = 10_000


@dataclass
class SoupReport:
    """The soup's and each ingredient's validation kNN top-1, and where the soup went."""

    output: str
    val_top1: float
    ingredients_val_top1: dict[str, float]
    recalibration_images: int


def make_soup(config: Config, paths: list[Path], output: Path, knn_accuracy: KnnAccuracy,
              catalog: Catalog | None = None) -> SoupReport:
    """Average the checkpoints, recalibrate BatchNorm, validate, and save the soup to ``output``."""
    device = resolve_device(config.embedder.device)
    soup = average_checkpoints(paths)
    catalog = catalog or open_catalog(config.catalog, config.paths.downloads)
    train_rows, val_rows = split_validation(catalog, config.train.holdout_per_class, config.train.seed)
    validate = Validator(catalog, train_rows, val_rows, soup.preprocessing, config, knn_accuracy, device)
    scores = {}
    for path in paths:
        scores[str(path)] = validate(load_checkpoint(path, device).model)
        log.info("%s: validation kNN top-1 %.4f", path, scores[str(path)])
    model = soup.model.to(device).to(memory_format=torch.channels_last)
    rows = np.sort(np.random.default_rng(config.train.seed).permutation(train_rows)[:RECALIBRATION_IMAGES])
    with inference_context(device, config.embedder.precision):  # the precision the network will embed in
        seen = recalibrate_batchnorm(model, _batches(catalog, rows, soup.preprocessing, config, device))
    top1 = validate(model)
    log.info("The weight soup of %d checkpoints: validation kNN top-1 %.4f", len(paths), top1)
    save_checkpoint(output, model, soup.preprocessing, origin="weight soup of " + ", ".join(soup.ingredients),
                    extra={"soup": {"ingredients": soup.ingredients, "ingredients_val_top1": scores, "val_top1": top1,
                                    "recalibration_images": seen}})
    return SoupReport(str(output), top1, scores, seen)


def check_output(output: Path, paths: list[Path], replace: bool) -> None:
    """Refuse to overwrite a checkpoint that is not one of the ingredients (it would be lost) unless told to."""
    if output.exists() and not replace and output.resolve() not in {path.resolve() for path in paths}:
        raise CheckpointError(f"{output} exists and is not one of the checkpoints averaged; name another file with "
                              "--out, or pass --replace to overwrite it")


def _batches(catalog: Catalog, rows: np.ndarray, preprocessing: Preprocessing, config: Config, device: str):
    """The training images as the network's inputs (the evaluation transform: no augmentation), unreadable ones left out."""
    images = CatalogImages(catalog, rows, build_pixel_transform(preprocessing), preprocessing.image_size,
                           dtype=torch.uint8)
    loader = DataLoader(images, batch_size=config.embedder.batch_size,
                        num_workers=resolve_workers(config.embedder.workers, device))
    for batch, _, errors in tqdm(loader, desc="recalibrating BatchNorm", unit="batch"):
        ok = torch.tensor([not error for error in errors], dtype=torch.bool)
        if ok.any():
            yield normalize_batch(batch[ok].to(device), preprocessing).contiguous(memory_format=torch.channels_last)


@dataclass
class Soup:
    """The averaged network (BatchNorm not yet recalibrated) and what its ingredients share."""

    model: EmbeddingNet
    preprocessing: Preprocessing
    ingredients: list[str]


def _filled(payload: dict, key: str) -> dict:
    """A checkpoint's model_args or preprocessing with the defaults filled in: checkpoints written before a
    setting existed lack its key, and meant its default."""
    if key == "model_args":
        defaults = {name: parameter.default for name, parameter in inspect.signature(EmbeddingNet).parameters.items()}
        return {**defaults, **payload[key]}
    return Preprocessing.from_dict(payload[key]).to_dict()


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
            if _filled(payload, key) != _filled(first, key):
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
