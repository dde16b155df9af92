"""Lookbook checkpoints: the model, its arguments and its preprocessing, in one file."""
from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch

from config import Artifacts, EmbedderConfig, LookbookError
from embedder.catalogs.base import Catalog
from embedder.model import EmbeddingNet
from embedder.transforms import Preprocessing
from embedder.weights import (
    WeightsUnavailableError,
    load_imagenet_state_dict,
    load_state_dict_file,
)

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "lookbook-embedder"
CHECKPOINT_VERSION = 1


class CheckpointError(LookbookError, RuntimeError):
    """A checkpoint that is missing, unreadable, or not a Lookbook embedder."""


@dataclass
class LoadedEmbedder:
    """An embedding network ready to use, with what it needs to preprocess and identify itself."""

    model: EmbeddingNet
    preprocessing: Preprocessing
    sha256: str
    path: Path
    origin: str


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_checkpoint(
    path: Path, model: EmbeddingNet, preprocessing: Preprocessing, origin: str, extra: dict | None = None
) -> str:
    """Write a checkpoint atomically (temporary file, then rename); returns its SHA-256."""
    payload = {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_VERSION,
        "model_args": model.model_args(),
        "preprocessing": preprocessing.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "origin": origin,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **(extra or {}),
    }
    save_atomically(payload, path)
    return file_sha256(path)


def save_atomically(payload: dict, path: Path) -> None:
    """torch.save to a temporary file beside ``path``, then rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        torch.save(payload, temporary)
        os.chmod(temporary, 0o644)  # mkstemp makes it private; artifacts are shared like any other file
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def read_checkpoint(path: Path) -> dict:
    """The raw checkpoint dict, checked to be a Lookbook embedder checkpoint."""
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; run `python manage.py build-index` to make one")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise CheckpointError(f"checkpoint {path} could not be read: {error}") from error
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a Lookbook embedder checkpoint (no format '{CHECKPOINT_FORMAT}')")
    if payload.get("format_version") != CHECKPOINT_VERSION:
        raise CheckpointError(
            f"checkpoint {path} has format version {payload.get('format_version')}; this Lookbook reads {CHECKPOINT_VERSION}"
        )
    return payload


def load_checkpoint(path: Path, device: str = "cpu") -> LoadedEmbedder:
    """Rebuild the network from a checkpoint, in eval mode on ``device``."""
    path = Path(path)
    payload = read_checkpoint(path)
    try:
        model = EmbeddingNet(**payload["model_args"])
        model.load_state_dict(payload["state_dict"])
        preprocessing = Preprocessing.from_dict(payload["preprocessing"])
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        raise CheckpointError(f"checkpoint {path} is damaged or from another version: {error}") from error
    model.eval().to(device)
    return LoadedEmbedder(model, preprocessing, file_sha256(path), path, str(payload.get("origin", "")))


def catalog_preprocessing(config: EmbedderConfig, catalog: Catalog) -> Preprocessing:
    """The preprocessing for a catalog: its own image size unless configured, gray for gray catalogs."""
    grayscale = catalog.kind == "fashion-mnist"
    return Preprocessing(
        image_size=config.image_size or catalog.default_image_size,
        # Fashion-MNIST images are already square and centred.
        resize="squash" if grayscale else "pad",
        grayscale=grayscale,
    )


def create_embedder(config: EmbedderConfig) -> tuple[EmbeddingNet, str]:
    """A fresh network whose trunk starts from the configured weights; returns it and their origin."""
    torch.manual_seed(config.seed)
    model = EmbeddingNet(config.backbone, config.embedding_size, config.stem)
    weights = config.weights
    if weights == "none":
        model.start_residual_blocks_as_identity()
        return model, "none"
    if weights in ("imagenet", "auto"):
        try:
            model.load_trunk_state_dict(load_imagenet_state_dict(config.backbone))
            return model, "imagenet"
        except WeightsUnavailableError as error:
            if weights == "imagenet":
                raise
            log.warning("%s\nContinuing with random weights (embedder.weights = auto).", error)
            model.start_residual_blocks_as_identity()
            return model, "none"
    model.load_trunk_state_dict(load_state_dict_file(Path(weights)))
    return model, str(weights)


def is_lookbook_checkpoint(path: Path) -> bool:
    """Whether a weights path is a Lookbook checkpoint (else it is a torchvision state dict)."""
    try:
        read_checkpoint(path)
    except CheckpointError:
        return False
    return True


def provide_embedder(config: EmbedderConfig, catalog: Catalog, artifacts: Path, device: str) -> LoadedEmbedder:
    """The embedder build-index uses: a configured checkpoint, else the artifacts' one, else a new one saved there.

    Saving the new one matters even with ImageNet weights: the projection head starts random, and the
    web app must embed queries with exactly the network that embedded the catalog.
    """
    configured = Path(config.weights)
    if config.weights not in ("imagenet", "auto", "none") and is_lookbook_checkpoint(configured):
        log.info("Using the checkpoint %s", configured)
        return load_checkpoint(configured, device)
    wanted = catalog_preprocessing(config, catalog)
    saved = Artifacts(artifacts).checkpoint
    if saved.is_file():
        loaded = load_checkpoint(saved, device)
        if (loaded.model.model_args() == EmbeddingNet(config.backbone, config.embedding_size, config.stem).model_args()
                and loaded.preprocessing.image_size == wanted.image_size):
            log.info("Reusing the embedder %s (weights from %s)", saved, loaded.origin)
            return loaded
        log.warning("The embedder %s does not match the configuration; making a new one", saved)
    model, origin = create_embedder(config)
    save_checkpoint(saved, model, wanted, origin)
    log.info("Saved a new embedder (weights from %s) to %s", origin, saved)
    return load_checkpoint(saved, device)
