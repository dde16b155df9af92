"""The search engine behind the web app: embed a query, search the index, vote a category, serve item images."""
from __future__ import annotations

import io
import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import faiss
import numpy as np
from PIL import Image

from config import CatalogConfig, Config, ConfigError
from indexer.embeddings_file import EmbeddingsFile, EmbeddingsFileError, read_embeddings
from indexer.index import load_index
from indexer.index import search as index_search
from indexer.knn import knn_vote, top_classes

if TYPE_CHECKING:
    from embedder.checkpoint import LoadedEmbedder

log = logging.getLogger(__name__)

PREDICTIONS = 5
# Fashion-MNIST items are 28×28: shown at that size they are unreadable smudges.
MIN_IMAGE_SIDE = 160
MAX_IMAGE_SIDE = 640
JPEG_QUALITY = 88
NO_CAPTIONS = "this catalog has no captions"
REBUILD_HINT = "run `python manage.py build-index` first"
CHECKPOINT_NAME = "embedder.pt"


@dataclass(frozen=True)
class ItemTable:
    """What the app knows of each indexed item; row i is row i of the index and of embeddings.h5."""

    item_id: np.ndarray  # N str
    label: np.ndarray  # N int, index into class_names
    title: np.ndarray  # N str, "" when the catalog has none
    split: np.ndarray  # N str

    @classmethod
    def from_embeddings(cls, stored: EmbeddingsFile) -> ItemTable:
        """The item columns of a read embeddings.h5."""
        return cls(stored.item_id, stored.label, stored.title, stored.split)

    def __len__(self) -> int:
        return int(self.item_id.shape[0])


@dataclass(frozen=True)
class Prediction:
    """One predicted category and its share of the neighbours' vote (0..1)."""

    category: str
    score: float


@dataclass(frozen=True)
class Neighbour:
    """One catalog item near the query."""

    item_id: str
    title: str
    category: str
    similarity: float  # cosine similarity of the L2-normalised vectors, 1 = identical


@dataclass(frozen=True)
class Caption:
    """A sentence describing the query, and how it was made."""

    text: str
    method: str


@dataclass(frozen=True)
class SearchResult:
    """Everything one query produced."""

    predictions: list[Prediction]
    caption: Caption | None
    neighbours: list[Neighbour]
    embed_ms: float
    search_ms: float

    @property
    def caption_note(self) -> str | None:
        """Why there is no caption, for people; None when there is one."""
        return NO_CAPTIONS if self.caption is None else None


def nearest_title_caption(neighbours: Sequence[Neighbour], has_titles: bool) -> Caption | None:
    """The title of the nearest catalog item that has one; None for catalogs without titles."""
    if not has_titles:
        return None
    for neighbour in neighbours:
        if neighbour.title:
            return Caption(neighbour.title, "nearest-item-title")
    return None


def similarity_from_distance(D: np.ndarray, metric: str) -> np.ndarray:
    """Cosine similarity from faiss distances over unit vectors: inner products as they are, squared L2 as 1 - d/2."""
    return D if metric == "ip" else 1.0 - D / 2.0


def display_image(image: Image.Image) -> Image.Image:
    """An RGB copy sized for a web page: tiny images enlarged, big ones reduced."""
    image = image.convert("RGB")
    shortest, longest = min(image.size), max(image.size)
    if shortest < MIN_IMAGE_SIDE:
        factor = math.ceil(MIN_IMAGE_SIDE / shortest)
        image = image.resize((image.width * factor, image.height * factor), Image.Resampling.BICUBIC)
    elif longest > MAX_IMAGE_SIDE:
        image = image.copy()
        image.thumbnail((MAX_IMAGE_SIDE, MAX_IMAGE_SIDE), Image.Resampling.LANCZOS)
    return image


def encode_jpeg(image: Image.Image, quality: int = JPEG_QUALITY) -> bytes:
    """JPEG bytes of an RGB image."""
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=quality, optimize=True)
    return buffer.getvalue()


class SearchEngine:
    """A loaded catalog index and the embedder that made it, ready to answer queries."""

    def __init__(
        self,
        embed_image: Callable[[Image.Image], np.ndarray],
        index: faiss.Index,
        items: ItemTable,
        class_names: Sequence[str],
        load_item_image: Callable[[int], Image.Image],
        *,
        has_titles: bool,
        k: int = 10,
        catalog_kind: str = "",
        model_name: str = "",
    ) -> None:
        if index.ntotal != len(items):
            raise ValueError(f"the index holds {index.ntotal} vectors but the item table {len(items)} items")
        if len(items) == 0:
            raise ValueError(f"the catalog index is empty; {REBUILD_HINT}")
        if k < 1:
            raise ValueError(f"k (neighbours in the vote) must be at least 1, got {k}")
        self.embed_image = embed_image
        self.index = index
        self.items = items
        self.class_names = list(class_names)
        self.load_item_image = load_item_image
        self.has_titles = has_titles
        self.k = k
        self.catalog_kind = catalog_kind
        self.model_name = model_name
        self.metric = "ip" if index.metric_type == faiss.METRIC_INNER_PRODUCT else "l2"
        self._rows = {str(item_id): row for row, item_id in enumerate(items.item_id.tolist())}
        # The app answers requests on several threads; faiss GPU indexes must not be searched concurrently.
        self._search_lock = threading.Lock()

    @property
    def count(self) -> int:
        """How many catalog items can be found."""
        return len(self.items)

    def search(self, image: Image.Image, n_results: int) -> SearchResult:
        """The n_results nearest catalog items to an image, its top categories by kNN vote, and a caption."""
        if n_results < 1:
            raise ValueError(f"n_results must be at least 1, got {n_results}")
        started = time.perf_counter()
        xq = np.asarray(self.embed_image(image), dtype=np.float32).reshape(1, -1)
        embedded = time.perf_counter()
        vote_k = min(self.k, self.count)
        with self._search_lock:
            D, I = index_search(self.index, xq, min(max(n_results, vote_k), self.count))
        scores = knn_vote(D[:, :vote_k], I[:, :vote_k], self.items.label, len(self.class_names), self.metric)
        classes, class_scores = top_classes(scores, PREDICTIONS)
        searched = time.perf_counter()
        predictions = [
            Prediction(self.class_names[c], float(s))
            for rank, (c, s) in enumerate(zip(classes[0].tolist(), class_scores[0].tolist()))
            # Classes no neighbour voted for say nothing; the best one is kept even then.
            if s > 0 or rank == 0
        ]
        neighbours = self._neighbours(D[0, :n_results], I[0, :n_results])
        log.debug("query embedded in %.1f ms, searched in %.1f ms", 1e3 * (embedded - started),
                  1e3 * (searched - embedded))
        return SearchResult(
            predictions=predictions,
            caption=nearest_title_caption(neighbours, self.has_titles),
            neighbours=neighbours,
            embed_ms=1e3 * (embedded - started),
            search_ms=1e3 * (searched - embedded),
        )

    def _neighbours(self, distances: np.ndarray, rows: np.ndarray) -> list[Neighbour]:
        similarities = similarity_from_distance(distances, self.metric)
        return [
            Neighbour(
                item_id=str(self.items.item_id[row]),
                title=str(self.items.title[row]),
                category=self.class_names[int(self.items.label[row])],
                similarity=float(similarity),
            )
            for similarity, row in zip(similarities.tolist(), rows.tolist())
            if row >= 0
        ]

    def row_of(self, item_id: str) -> int:
        """The index row of an item id; KeyError for ids not in the catalog."""
        return self._rows[item_id]

    def item_image_jpeg(self, item_id: str) -> bytes:
        """The JPEG of a catalog item, sized for the page; KeyError for unknown ids."""
        return encode_jpeg(display_image(self.load_item_image(self.row_of(item_id))))

    def health(self) -> dict[str, Any]:
        """What a monitor needs to know: is everything loaded, and what is being served."""
        return {
            "status": "ok",
            "model_loaded": self.embed_image is not None,
            "model_name": self.model_name,
            "index_loaded": self.index is not None and self.index.ntotal > 0,
            "items": self.count,
            "classes": len(self.class_names),
            "catalog_kind": self.catalog_kind,
            "has_titles": self.has_titles,
            "embedding_size": int(self.index.d),
            "metric": self.metric,
            "k": self.k,
        }

    @classmethod
    def from_artifacts(cls, config: Config) -> SearchEngine:
        """The engine for config's artifacts: embeddings.h5, index.faiss, the checkpoint they name, the catalog."""
        embeddings_path, index_path = config.artifacts / "embeddings.h5", config.artifacts / "index.faiss"
        missing = [str(path) for path in (embeddings_path, index_path) if not path.is_file()]
        if missing:
            raise FileNotFoundError(f"{' and '.join(missing)} not found; {REBUILD_HINT} "
                                    f"(with the same configuration, so the artifacts land in {config.artifacts})")
        # search_app needs torch only here and in the two helpers below: the app imports light, tests need no model.
        from embedder.extract import embed_pil_images, resolve_device
        from embedder.transforms import build_transform

        stored = read_embeddings(embeddings_path)
        device = resolve_device(config.embedder.device)
        loaded = _load_matching_checkpoint(stored, config.artifacts / CHECKPOINT_NAME, device)
        index = load_index(index_path, embeddings_path, config.index.gpu)
        load_item_image = _catalog_image_loader(config, stored)
        transform = build_transform(loaded.preprocessing)

        def embed_image(image: Image.Image) -> np.ndarray:
            return embed_pil_images(loaded.model, [image], transform, device)[0]

        # One query at start-up: the first shopper does not wait for the warm-up, and a model that
        # does not fit the index is found now rather than on every request.
        probe = embed_image(Image.new("RGB", (64, 64), "white"))
        if probe.shape != (index.d,):
            raise EmbeddingsFileError(f"the checkpoint makes vectors of shape {probe.shape} but {index_path} holds "
                                      f"vectors of dimension {index.d}; re-run `python manage.py build-index`")
        log.info("serving %d %s items with %s (checkpoint %s) on %s", stored.count, stored.catalog_kind,
                 stored.model_name, stored.checkpoint_sha256[:12], device)
        return cls(
            embed_image, index, ItemTable.from_embeddings(stored), stored.class_names, load_item_image,
            has_titles=stored.has_titles, k=config.index.k, catalog_kind=stored.catalog_kind,
            model_name=stored.model_name,
        )


def _load_matching_checkpoint(stored: EmbeddingsFile, beside_artifacts: Path, device: str) -> LoadedEmbedder:
    """The checkpoint that embedded the catalog; queries embedded by any other model would be meaningless.

    The recorded path comes first; the one in the artifacts directory serves when the directory was
    moved. The hash check makes either safe.
    """
    from embedder.checkpoint import load_checkpoint

    path = Path(stored.checkpoint_path)
    if not path.is_file() and beside_artifacts.is_file():
        log.info("checkpoint %s is gone; trying %s", path, beside_artifacts)
        path = beside_artifacts
    loaded = load_checkpoint(path, device)
    if loaded.sha256 != stored.checkpoint_sha256:
        raise EmbeddingsFileError(
            f"{stored.source} was built with the checkpoint {stored.checkpoint_path} of sha256 "
            f"{stored.checkpoint_sha256[:12]}..., but {path} has sha256 {loaded.sha256[:12]}...: the index was "
            "built with another model; re-run `python manage.py build-index` to embed the catalog with this one"
        )
    return loaded


def _catalog_image_loader(config: Config, stored: EmbeddingsFile) -> Callable[[int], Image.Image]:
    """Reopen the catalog that was embedded and map each embeddings row to its catalog item."""
    from embedder.catalogs import open_catalog

    try:
        catalog_config = CatalogConfig(kind=stored.catalog_kind, root=Path(stored.catalog_root),
                                       subset=stored.catalog_subset)
    except ConfigError as error:
        raise EmbeddingsFileError(f"{stored.source} names a catalog Lookbook cannot reopen ({error}); "
                                  "re-run `python manage.py build-index`") from None
    catalog = open_catalog(catalog_config, config.artifacts / "downloads")
    position = {item.item_id: number for number, item in enumerate(catalog.items)}
    unknown = [item_id for item_id in stored.item_id.tolist() if item_id not in position]
    if unknown:
        raise EmbeddingsFileError(
            f"{stored.source} lists {len(unknown)} item(s) that the catalog at {catalog.root} does not hold "
            f"(first: {unknown[0]!r}); the catalog changed since the index was built; re-run "
            "`python manage.py build-index`"
        )
    catalog_rows = np.array([position[item_id] for item_id in stored.item_id.tolist()], dtype=np.int64)
    return lambda row: catalog.open_image(int(catalog_rows[row]))
