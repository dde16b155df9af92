"""`manage.py average-weights`: a weight soup of trained checkpoints, recalibrated on the catalog's training
images and scored on its validation items beside each ingredient, saved as a checkpoint."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from config import Config
from embedder.catalog import Catalog
from embedder.catalogs import open_catalog
from embedder.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from embedder.dataset import CatalogImages
from embedder.extract import inference_context, resolve_device, resolve_workers
from embedder.train import KnnAccuracy, Validator
from embedder.training_state import split_validation
from embedder.transforms import Preprocessing, build_pixel_transform, normalize_batch
from embedder.weight_soup import average_checkpoints, recalibrate_batchnorm

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
