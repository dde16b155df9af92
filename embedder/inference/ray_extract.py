"""build-index's embedding loop on Ray Data (`build-index --engine ray`): decoding runs in CPU workers,
the network in an actor pool that loads the checkpoint once per actor (one GPU each where there are GPUs),
and the vectors come back to this process, which writes them into the same resumable partial file as the
one-process loop; embeddings.h5 and the index are then written as always.

Ray starts a local cluster of this machine's cores unless ``address`` (or RAY_ADDRESS) names one (`auto`:
the one this machine belongs to); a cluster's workers must see the catalog and the checkpoint at the same
paths."""
from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from embedder.catalogs.base import Catalog
from embedder.checkpoint import LoadedEmbedder
from embedder.inference.partial_embeddings import PartialEmbeddings

log = logging.getLogger(__name__)


class DecodeImages:
    """A Ray Data worker that reads and preprocesses catalog rows into uint8 pixels (a blank and the reason
    for rows that cannot be read)."""

    def __init__(self, catalog: Catalog, preprocessing_dict: dict) -> None:
        import torch

        from embedder.catalogs.dataset import CatalogImages
        from embedder.transforms import Preprocessing, build_pixel_transform

        torch.set_num_threads(1)
        preprocessing = Preprocessing.from_dict(preprocessing_dict)
        transform = build_pixel_transform(preprocessing)  # once per worker, not once per batch
        self.images = lambda rows: CatalogImages(catalog, rows, transform, preprocessing.image_size, torch.uint8)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        images = self.images(batch["row"].tolist())
        decoded = [images[position] for position in range(len(images))]
        return {"row": batch["row"], "pixels": np.stack([pixels.numpy() for pixels, _, _ in decoded]),
                "error": np.array([error for _, _, error in decoded], dtype=object)}


class EmbedImages:
    """A Ray Data actor holding the network (loaded once), embedding batches of preprocessed pixels."""

    def __init__(self, checkpoint: str, sha256: str, device: str, runtime: str, precision: str, artifacts: str,
                 mirror_average: bool) -> None:
        from embedder.inference.network import load_checked_network

        self.embed, _ = load_checked_network(Path(checkpoint), sha256, device, runtime, precision, Path(artifacts),
                                             mirror_average)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        return {"row": batch["row"], "vector": self.embed(torch.from_numpy(batch["pixels"])), "error": batch["error"]}


def embed_with_ray(catalog: Catalog, embedder: LoadedEmbedder, partial: PartialEmbeddings, pending: Sequence[int],
                   *, batch_size: int, device: str, runtime: str, precision: str, mirror_average: bool,
                   artifacts: Path, address: str | None, progress: Callable[[int], object]) -> str:
    """Embed the catalog's ``pending`` rows into ``partial`` on Ray (a local cluster unless ``address``);
    returns what ran the network. Rows land as their batches finish, so an interrupted run resumes."""
    import ray

    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    try:
        gpus = int(ray.cluster_resources().get("GPU", 0)) if device.startswith("cuda") else 0
        cpus = int(ray.cluster_resources().get("CPU", 1))
        actors = max(1, gpus) if gpus else max(1, cpus // 2)
        log.info("Ray: %d CPUs, %d GPUs; %d embedding actor(s), decoding on the other cores", cpus, gpus, actors)
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = context.print_on_execution_start = False  # build-index shows its own
        # One block a batch: each batch's vectors reach the partial file as soon as they are made.
        pending = np.asarray(pending, dtype=np.int64)
        blocks = np.array_split(pending, max(1, -(-len(pending) // batch_size)))
        dataset = ray.data.from_numpy(blocks).rename_columns({"data": "row"})
        # Ray Data puts the constructors' arguments (the catalog too) in the object store once, for every worker.
        decoders = ray.data.ActorPoolStrategy(size=max(1, cpus - (0 if gpus else actors)))
        dataset = dataset.map_batches(DecodeImages, fn_constructor_args=(catalog, embedder.preprocessing.to_dict()),
                                      batch_size=batch_size, compute=decoders, num_cpus=1)
        dataset = dataset.map_batches(
            EmbedImages, batch_size=batch_size, compute=ray.data.ActorPoolStrategy(size=actors),
            num_gpus=1 if gpus else 0, num_cpus=1 if not gpus else 0,
            fn_constructor_args=(str(embedder.path.resolve()), embedder.sha256, device, runtime, precision,
                                 str(Path(artifacts).resolve()), mirror_average),
        )
        for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
            partial.write(batch["row"], batch["vector"], [str(error) for error in batch["error"]])
            progress(len(batch["row"]))
    finally:
        if started_here:
            ray.shutdown()
    return f"ray ({runtime})"
