"""Embedding images: a whole catalog into embeddings.h5 (resumable), or a few PIL images for a query."""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader
from tqdm import tqdm

from embedder.catalogs.base import Catalog
from embedder.catalogs.dataset import CatalogImages
from embedder.checkpoint import LoadedEmbedder
from embedder.inference.catalog_diff import CatalogDiff
from embedder.inference.network import autocast, prepare_checkpoint, resolve_precision, resolve_runtime
from embedder.inference.partial_embeddings import PartialEmbeddings, Skipped
from embedder.transforms import build_pixel_transform, normalize_batch

log = logging.getLogger(__name__)


@dataclass
class ExtractionReport:
    """What an extraction did: counts, skipped items with reasons, time and rate."""

    catalog_items: int
    embedded: int
    skipped: list[Skipped] = field(default_factory=list)
    resumed_rows: int = 0
    seconds: float = 0.0
    images_per_second: float = 0.0
    device: str = "cpu"
    reused: bool = False
    # Rows of the catalog's own files skipped while reading it ('file, line n: why').
    rejected: list[str] = field(default_factory=list)
    precision: str = "fp32"  # the arithmetic the network ran in (embedder.inference.network)
    compiled: bool = False
    runtime: str = "torch"
    # Against the previous embeddings.h5: items whose vectors were kept, and those embedded anew or dropped.
    kept: int = 0
    added: int = 0
    changed: int = 0
    removed: int = 0
    # Images read and run through the network in this run (skipped ones included).
    images_embedded: int = 0


def resolve_device(device: str) -> str:
    """'auto' -> 'cuda' when torch sees a GPU, else 'cpu'."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("embedder.device is 'cuda' but torch sees no CUDA GPU; use 'auto' or 'cpu'")
    return device


def resolve_workers(workers: int | None, device: str) -> int:
    """Decoding processes for a DataLoader. A GPU embeds DeepFashion-size images faster than all the cores
    decode them, so all cores but two decode; on a CPU they compete with the model's own threads
    (benchmarks/README.md, Pipeline and GPU)."""
    if workers is not None:
        return workers
    cores = os.cpu_count() or 1
    if device.startswith("cuda"):
        return max(1, min(cores - 2, 32))
    return 0 if cores <= 2 else 1


def inference_context(device: str, precision: str = "auto") -> contextlib.AbstractContextManager:
    """Mixed precision as ``precision`` says ('auto': float16 on the GPU, bfloat16 on CPUs that have it natively)."""
    return autocast(resolve_precision(precision, device), device)


@torch.inference_mode()
def embed_batch(model: torch.nn.Module, batch: torch.Tensor, device: str, precision: str = "auto") -> np.ndarray:
    """One preprocessed batch (N×3×H×W) -> N×D float32 numpy array."""
    batch = batch.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
    with inference_context(device, precision):
        return model(batch).float().cpu().numpy()


def embed_pil_images(
    model: torch.nn.Module, images: Sequence[Image.Image], transform: Callable, device: str = "cpu",
    precision: str = "auto",
) -> np.ndarray:
    """Embed a few PIL images (a shopper's query) -> n×D float32."""
    batch = torch.stack([transform(image) for image in images])
    return embed_batch(model, batch, device, precision)


def catalog_identity(catalog: Catalog, embedder: LoadedEmbedder, fingerprints: Sequence[str],
                     mirror_average: bool = False) -> dict:
    """What must match for a partial file's rows to be resumed: the model, how it ran, and every item's id
    and fingerprint in order, so that rows of different items are never mixed."""
    digest = hashlib.sha256()
    for item, fingerprint in zip(catalog.items, fingerprints, strict=True):
        digest.update(f"{item.item_id}\t{fingerprint}\n".encode())
    return {
        "checkpoint_sha256": embedder.sha256,
        "mirror_average": mirror_average,
        "catalog_kind": catalog.kind,
        "catalog_root": str(catalog.root),
        "items": len(catalog),
        "items_sha256": digest.hexdigest(),
    }


def embed_catalog(
    catalog: Catalog,
    embedder: LoadedEmbedder,
    output: Path,
    attributes: dict,
    batch_size: int = 128,
    workers: int | None = None,
    device: str = "cpu",
    precision: str = "auto",
    compile_model: bool = False,
    runtime: str = "auto",
    fingerprints: Sequence[str] | None = None,
    diff: CatalogDiff | None = None,
    engine: str = "local",
    address: str | None = None,
) -> ExtractionReport:
    """Embed every catalog image into ``output`` (HDF5), resuming an interrupted run; returns the report.

    ``fingerprints`` (Catalog.fingerprints, computed when not given) are stored for the next build; ``diff``
    (catalog_diff) names the items whose vectors are taken from the existing ``output`` instead. ``engine``
    "ray" embeds on Ray Data (embedder.inference.ray_extract; a cluster at ``address``, else a local one).

    ``precision``, ``compile_model`` and ``runtime`` choose how the network runs (embedder.inference.network).
    ``attributes["mirror_average"]`` (embeddings_attributes) says whether each image's vector is averaged
    with its mirror image's (MirrorAveraged): what the file tells queries is what is done here.
    """
    mirror_average = bool(attributes.get("mirror_average", False))
    if len(catalog) == 0:
        raise ValueError(f"the {catalog.kind} catalog at {catalog.root} has no items")
    started = time.perf_counter()
    # Read before hours of embedding, so that a damaged attribute file stops the run at once.
    item_attributes = catalog.item_attributes()
    fingerprints = catalog.fingerprints() if fingerprints is None else fingerprints
    partial = PartialEmbeddings(
        output.with_name(output.name + ".partial"),
        len(catalog),
        embedder.model.embedding_size,
        catalog_identity(catalog, embedder, fingerprints, mirror_average),
    )
    try:
        resumed = partial.rows_done
        if diff is not None:
            partial.reuse(output, diff.kept, diff.kept_from, diff.kept_skipped, diff.skipped_reasons)
        pending = partial.pending_rows()
        if engine == "ray":  # Ray's actors load the network themselves; this process only writes
            runtime = resolve_runtime(runtime, device, precision, compile_model)
        else:
            model, runtime = prepare_checkpoint(embedder, device, runtime, precision, output.parent, compile_model,
                                                mirror_average=mirror_average)
        precision = resolve_precision(precision, device, runtime)
        log.info("Embedding %d images on %s with %s in %s%s%s", len(pending), device, runtime, precision,
                 ", compiled" if compile_model else "", ", averaged with their mirror images" if mirror_average else "")
        with tqdm(total=len(catalog), initial=resumed, unit="img", desc="embedding", smoothing=0.1) as progress:
            if engine == "ray" and len(pending):
                from embedder.inference.ray_extract import embed_with_ray

                runtime = embed_with_ray(catalog, embedder, partial, pending, batch_size=batch_size, device=device,
                                         runtime=runtime, precision=precision, mirror_average=mirror_average,
                                         artifacts=output.parent, address=address, progress=progress.update)
            elif engine != "ray":
                images = CatalogImages(catalog, pending, build_pixel_transform(embedder.preprocessing),
                                       embedder.preprocessing.image_size, torch.uint8)
                for rows, vectors, errors in _embeddings(model, embedder, images, batch_size, workers, device,
                                                         precision, pad=compile_model):
                    partial.write(rows, vectors, errors)
                    progress.update(len(rows))
        skipped = partial.skipped(catalog.items)
        for item in skipped:
            log.warning("Skipped %s (%s): %s", item.item_id, item.path, item.reason)
        if len(skipped) == len(catalog):
            raise RuntimeError(f"none of the {len(catalog)} catalog images could be read; first: {skipped[0].reason}")
        embedded = partial.finish(output, catalog.items, {**attributes, "skipped": len(skipped)}, item_attributes,
                                  fingerprints)
    finally:
        partial.close()
    seconds = time.perf_counter() - started
    fresh = len(pending)
    return ExtractionReport(
        catalog_items=len(catalog),
        embedded=embedded,
        skipped=skipped,
        resumed_rows=resumed,
        seconds=seconds,
        images_per_second=fresh / seconds if seconds > 0 else 0.0,
        device=device,
        rejected=catalog.rejected,
        precision=precision,
        compiled=compile_model,
        runtime=runtime,
        kept=len(diff.kept) + len(diff.kept_skipped) if diff is not None else 0,
        added=diff.added if diff is not None else len(catalog),
        changed=diff.changed if diff is not None else 0,
        removed=diff.removed if diff is not None else 0,
        images_embedded=fresh,
    )


def _embeddings(model: Callable, embedder: LoadedEmbedder, images: CatalogImages, batch_size: int,
                workers: int | None, device: str, precision: str, pad: bool) -> Iterator[tuple]:
    """(catalog rows, their vectors, their errors) a batch at a time; uint8 batches are normalised on the device."""
    for batch, rows, errors in _batches(images, batch_size, workers, device):
        batch = normalize_batch(batch.to(device, non_blocking=True), embedder.preprocessing)
        # A compiled network would compile again for a shorter last batch: pad it instead.
        if pad and len(batch) < batch_size:
            batch = F.pad(batch, (0, 0, 0, 0, 0, 0, 0, batch_size - len(batch)))
        yield rows.numpy(), embed_batch(model, batch, device, precision)[:len(rows)], errors


def _batches(images: CatalogImages, batch_size: int, workers: int | None, device: str) -> Iterator:
    loader = DataLoader(
        images,
        batch_size=batch_size,
        shuffle=False,
        num_workers=resolve_workers(workers, device),
        pin_memory=device.startswith("cuda"),
        persistent_workers=False,
    )
    return iter(loader)


def embeddings_attributes(catalog: Catalog, embedder: LoadedEmbedder, subset: str, mirror_average: bool = False) -> dict:
    """The HDF5 attributes that tell readers which model and catalog made the vectors, and how."""
    return {
        "model_name": embedder.model.backbone,
        "checkpoint_sha256": embedder.sha256,
        "mirror_average": mirror_average,
        "checkpoint_path": str(embedder.path.resolve()),
        "embedding_size": embedder.model.embedding_size,
        "preprocessing": json.dumps(embedder.preprocessing.to_dict()),
        "catalog_kind": catalog.kind,
        "catalog_root": str(Path(catalog.root).resolve()),
        "catalog_subset": subset,
        "catalog_options": json.dumps(catalog.options, sort_keys=True),
        "has_titles": bool(catalog.has_titles),
        "class_names": json.dumps(catalog.class_names),
    }
