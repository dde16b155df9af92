"""The search engine behind the web app: embed a query, search the index, vote a category, serve item images."""
from __future__ import annotations

import contextlib
import functools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import faiss
import numpy as np
from PIL import Image

from config import Config
from indexer.embeddings_file import EmbeddingsFile, EmbeddingsFileError, read_embeddings
from indexer.index import load_index
from indexer.knn import knn_vote, top_classes
from indexer.vector_store import FaissStore, MilvusStore, VectorStore
from search_app.batching import BatchTimeout, Found, QueryEmbedder, QuerySearcher
from search_app.captioning import CaptionMaker
from search_app.items import ENCODED_IMAGES_KEPT, ItemImageUnavailable, ItemTable, display_image, encode_jpeg
from search_app.match_strength import MatchScale
from search_app.results import Neighbour, Prediction, SearchResult

if TYPE_CHECKING:
    from embedder.checkpoint import LoadedEmbedder

log = logging.getLogger(__name__)

PREDICTIONS = 5
REBUILD_HINT = "run `python manage.py build-index` first"


def without_row(D: np.ndarray, I: np.ndarray, row: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Search results of one query without one row (the query item itself); unchanged for None."""
    if row is None:
        return D, I
    keep = I[0] != row
    return D[:, keep], I[:, keep]


def similarity_from_distance(D: np.ndarray, metric: str) -> np.ndarray:
    """Cosine similarity from faiss distances over unit vectors: inner products as they are, squared L2 as 1 - d/2."""
    return D if metric == "ip" else 1.0 - D / 2.0


class SearchEngine:
    """A loaded catalog index and the embedder that made it, ready to answer queries."""

    def __init__(
        self,
        embed_image: Callable[[Image.Image], np.ndarray] | QueryEmbedder,
        index: faiss.Index | VectorStore,
        items: ItemTable,
        class_names: Sequence[str],
        load_item_image: Callable[[int], Image.Image],
        *,
        has_titles: bool,
        k: int = 10,
        catalog_kind: str = "",
        model_name: str = "",
        max_batch: int = 1,
        batch_wait_ms: float = 0.0,
        search_deadline_s: float | None = None,
        captions: CaptionMaker | None = None,
        vectors: np.ndarray | None = None,
    ) -> None:
        """``embed_image`` is an Image -> vector function, or a QueryEmbedder that embeds many prepared images
        in one pass; concurrent queries then share up to ``max_batch`` passes and index scans. ``index``: a
        VectorStore, or a faiss index (searched in this process). ``vectors`` (N x D, the embeddings file's)
        are what "more like this" searches with; without them the store must give its vectors back (Milvus
        and flat faiss indexes do; faiss IVF, HNSW-with-ids and GPU indexes do not)."""
        store = index if isinstance(index, VectorStore) else FaissStore(index, items.label, len(class_names))
        if len(store) != len(items):
            raise ValueError(f"the index holds {len(store)} vectors but the item table {len(items)} items")
        if len(items) == 0:
            raise ValueError(f"the catalog index is empty; {REBUILD_HINT}")
        if k < 1:
            raise ValueError(f"k (neighbours in the vote) must be at least 1, got {k}")
        if vectors is not None and vectors.shape != (len(store), store.dimension):
            raise ValueError(f"vectors are {vectors.shape[0]} x {vectors.shape[1]} but the index holds "
                             f"{len(store)} x {store.dimension}")
        self.store = store
        self.vectors = vectors
        self.items = items
        self.class_names = list(class_names)
        self.load_item_image = load_item_image
        self.has_titles = has_titles
        self.k = k
        self.catalog_kind = catalog_kind
        self.model_name = model_name
        self.metric = store.metric
        # Without one, captions are the consensus of the neighbours' titles.
        self.captions = captions if captions is not None else CaptionMaker(items.title, has_titles)
        # Where a result's similarity lies among the catalog's own neighbour similarities, for shoppers.
        self.match_scale = None if vectors is None else MatchScale.of_catalog(
            vectors, store.search, lambda D: similarity_from_distance(D, self.metric))
        if not isinstance(embed_image, QueryEmbedder):
            embed_image = QueryEmbedder.one_image_at_a_time(embed_image)
        self.queries = QuerySearcher(embed_image, store, max_batch, batch_wait_ms / 1e3, search_deadline_s)

    @property
    def count(self) -> int:
        """How many catalog items can be found."""
        return len(self.items)

    def search(self, image: Image.Image, n_results: int, *, category: str | None = None,
               offset: int = 0) -> SearchResult:
        """The nearest catalog items to an image (ranks offset+1 .. offset+n_results, of one category if given),
        its top categories by kNN vote over the whole catalog, and a caption."""
        started = time.perf_counter()
        self._check_page(n_results, offset)
        # Embedded and searched together with concurrent queries: embed_ms includes the shared index scan.
        found = self.queries.search(image, self._depth(n_results, offset, skip=0))
        return self._search_vector(found[0], n_results, started, category, offset, found=found)

    def embed_image(self, image: Image.Image) -> np.ndarray:
        """The vector of a query image (1-d), as searches embed it."""
        return self.queries.embed(image)

    def search_item(self, item_id: str, n_results: int, *, category: str | None = None,
                    offset: int = 0) -> SearchResult:
        """"More like this": search with a catalog item's stored vector, leaving the item itself out.

        KeyError for ids not in the catalog."""
        started = time.perf_counter()
        row = self.row_of(item_id)
        if self.vectors is not None:
            xq = np.ascontiguousarray(self.vectors[row : row + 1], dtype=np.float32)
        else:
            xq = self.store.vector(row)
        return self._search_vector(xq, n_results, started, category, offset, exclude_row=row)

    @staticmethod
    def _check_page(n_results: int, offset: int) -> None:
        if n_results < 1 or offset < 0:
            raise ValueError(f"n_results must be at least 1 and offset at least 0, got {n_results} and {offset}")

    def _depth(self, n_results: int, offset: int, skip: int) -> int:
        """How many nearest rows a query needs: the page shown, the vote and the caption (plus a row left out)."""
        return min(max(offset + n_results, self.k, self.captions.depth) + skip, self.count)

    def _search_vector(self, xq: np.ndarray, n_results: int, started: float, category: str | None, offset: int,
                       exclude_row: int | None = None, found: Found | None = None) -> SearchResult:
        """The result for a query vector; ``found`` holds its nearest rows when they were searched already."""
        self._check_page(n_results, offset)
        label = self.label_of(category)
        embedded = time.perf_counter()
        skip = int(exclude_row is not None)
        vote_k = min(self.k, self.count - skip)
        wanted = offset + n_results + skip
        if found is None:
            found = (xq, *self.store.search(xq, self._depth(n_results, offset, skip)))
        if label is not None:
            # Within one category the store skips the other rows itself, so paging stays exact.
            Dc, Ic = self.store.search(xq, wanted, label=label)
        D, I = without_row(found[1], found[2], exclude_row)
        scores = knn_vote(D[:, :vote_k], I[:, :vote_k], self.items.label, len(self.class_names), self.metric)
        classes, class_scores = top_classes(scores, PREDICTIONS)
        predictions = [
            Prediction(self.class_names[c], float(s))
            for rank, (c, s) in enumerate(zip(classes[0].tolist(), class_scores[0].tolist()))
            # Classes no neighbour voted for say nothing; the best one is kept even then.
            if s > 0 or rank == 0
        ]
        # The caption describes the query, so it comes from its nearest items, whatever page or filter is shown.
        caption = self.captions.describe(xq, D, I, self.metric)
        available = self.count
        if label is not None:
            D, I = without_row(Dc, Ic, exclude_row)
            available = self.store.count_of(label)
        if exclude_row is not None and (label is None or int(self.items.label[exclude_row]) == label):
            available -= 1
        neighbours = self._neighbours(D[0, offset:offset + n_results], I[0, offset:offset + n_results])
        searched = time.perf_counter()
        log.debug("query embedded in %.1f ms, searched in %.1f ms", 1e3 * (embedded - started),
                  1e3 * (searched - embedded))
        return SearchResult(
            predictions=predictions,
            caption=caption,
            neighbours=neighbours,
            embed_ms=1e3 * (embedded - started),
            search_ms=1e3 * (searched - embedded),
            offset=offset,
            available=max(available, 0),
            category=None if label is None else self.class_names[label],
        )

    def label_of(self, category: str | None) -> int | None:
        """The class number of a category name (None for none); ValueError naming the categories otherwise."""
        if category is None:
            return None
        try:
            return self.class_names.index(category)
        except ValueError:
            raise ValueError(f"unknown category {category[:80]!r}; the categories are "
                             f"{', '.join(self.class_names)}") from None

    def _neighbours(self, distances: np.ndarray, rows: np.ndarray) -> list[Neighbour]:
        similarities = similarity_from_distance(distances, self.metric)
        return [
            Neighbour(
                item_id=str(self.items.item_id[row]),
                title=str(self.items.title[row]),
                category=self.class_names[int(self.items.label[row])],
                similarity=float(similarity),
                match=None if self.match_scale is None else self.match_scale.percent(similarity),
            )
            for similarity, row in zip(similarities.tolist(), rows.tolist())
            if row >= 0
        ]

    def incoming_query(self, with_image: bool) -> contextlib.AbstractContextManager:
        """Wrap the handling of a request that will embed an image, so a micro-batch can wait for it."""
        return self.queries.incoming() if with_image else contextlib.nullcontext()

    def row_of(self, item_id: str) -> int:
        """The index row of an item id; KeyError for ids not in the catalog."""
        return self.items.row_of(item_id)

    def describe_item(self, item_id: str) -> dict[str, Any]:
        """An item's id, title, category and split; KeyError for unknown ids."""
        return self.items.describe(self.row_of(item_id), self.class_names)

    def item_image_jpeg(self, item_id: str) -> bytes:
        """The JPEG of a catalog item, sized for the page; KeyError for unknown ids, ItemImageUnavailable for
        an image that cannot be read now. Kept once encoded: decoding and encoding each time burns CPU."""
        return self._encoded_image(self.row_of(item_id))

    @functools.cached_property
    def _encoded_image(self) -> Callable[[int], bytes]:
        @functools.lru_cache(maxsize=ENCODED_IMAGES_KEPT)
        def encoded(row: int) -> bytes:
            try:
                image = self.load_item_image(row)
            except (OSError, RuntimeError) as error:  # the catalog's image errors; failures are not kept
                item_id = str(self.items.item_id[row])
                log.warning("the image of catalog item %r cannot be read: %s", item_id, error)
                raise ItemImageUnavailable(f"the image of catalog item {item_id!r} cannot be read") from error
            return encode_jpeg(display_image(image))
        return encoded

    def health(self) -> dict[str, Any]:
        """What a monitor needs to know: is everything loaded, and what is being served."""
        return {
            "status": "ok",
            "model_loaded": True,
            "model_name": self.model_name,
            "index_loaded": len(self.store) > 0,
            "index_backend": self.store.backend,
            "items": self.count,
            "classes": len(self.class_names),
            "class_names": self.class_names,
            "catalog_kind": self.catalog_kind,
            "has_titles": self.has_titles,
            "caption_method": self.captions.method,
            "runtime": self.queries.runtime,
            "embedding_size": int(self.store.dimension),
            "metric": self.metric,
            "k": self.k,
            "batching": self.queries.stats(),
        }

    def close(self) -> None:
        """Stop the batching thread once the queries already queued are answered, and let go of the store."""
        self.queries.close()
        self.store.close()

    @classmethod
    def from_artifacts(cls, config: Config) -> SearchEngine:
        """The engine for config's artifacts: embeddings.h5, index.faiss, the checkpoint they name, the catalog."""
        embeddings_path, index_path = artifact_paths(config)
        stored = read_embeddings(embeddings_path)
        if config.index.backend == "milvus":
            store = MilvusStore.open(config.index, config.artifacts, stored.catalog_kind, stored.item_id,
                                     stored.label, stored.dimension, config.index.metric)
        else:
            index = load_index(index_path, embeddings_path, config.index.gpu)
            store = FaissStore(index, stored.label, len(stored.class_names))
        device = query_device(config)
        queries = load_query_embedder(config, stored, store.dimension, device)
        load_item_image = _catalog_image_loader(config, stored)
        return cls(
            queries, store, ItemTable.from_embeddings(stored), stored.class_names, load_item_image,
            has_titles=stored.has_titles, k=config.index.k, catalog_kind=stored.catalog_kind,
            model_name=stored.model_name, max_batch=config.app.max_batch, batch_wait_ms=config.app.batch_wait_ms,
            search_deadline_s=config.app.search_deadline_s, captions=_caption_maker(config, stored, device), vectors=stored.embeddings,
        )


def artifact_paths(config: Config) -> tuple[Path, Path]:
    """embeddings.h5 and index.faiss in config's artifacts; FileNotFoundError naming what is missing."""
    embeddings_path, index_path = config.paths.embeddings, config.paths.index
    missing = [str(path) for path in (embeddings_path, index_path) if not path.is_file()]
    if missing:
        raise FileNotFoundError(f"{' and '.join(missing)} not found; {REBUILD_HINT} "
                                f"(with the same configuration, so the artifacts land in {config.artifacts})")
    return embeddings_path, index_path


def query_device(config: Config) -> str:
    """Where queries are embedded: config.embedder.device resolved ("auto": a GPU when there is one)."""
    # search_app needs torch only here and in the helpers below: the app imports light, tests need no model.
    from embedder.inference.extract import resolve_device

    return resolve_device(config.embedder.device)


def load_query_embedder(config: Config, stored: EmbeddingsFile, dimension: int, device: str) -> QueryEmbedder:
    """The embedder of the checkpoint that made ``stored``, ready for queries and checked against the
    index's ``dimension``: in this process, or the Ray Serve deployment (app.embedder = "ray")."""
    if config.app.embedder == "ray":
        query_embedder = _ray_query_embedder(config, stored)
    else:
        loaded = _load_matching_checkpoint(stored, config.paths.checkpoint, device)
        query_embedder = _query_embedder(loaded, device, config, stored.mirror_average)
    # One query at start-up: the first shopper does not wait for the warm-up, and a model that
    # does not fit the index is found now rather than on every request.
    probe = query_embedder.embed_one(Image.new("RGB", (64, 64), "white"))
    if probe.shape != (1, dimension):
        raise EmbeddingsFileError(f"the checkpoint makes vectors of dimension {probe.shape[1]} but the index "
                                  f"holds vectors of dimension {dimension}; re-run `python manage.py build-index`")
    log.info("serving %d %s items with %s (checkpoint %s) on %s", stored.count, stored.catalog_kind,
             stored.model_name, stored.checkpoint_sha256[:12], device)
    return query_embedder


def _query_embedder(loaded: LoadedEmbedder, device: str, config: Config, mirror_average: bool) -> QueryEmbedder:
    """Images resized on the request's thread and embedded as build-index embeds the catalog: uint8 pixels
    normalised per batch, BatchNorms folded, channels_last, the configured precision, averaged with their
    mirror images when the index's vectors were; where query_precisions splits it, batches of fewer than
    FEW_QUERIES images go to a second network in their own precision."""
    import torch

    from embedder.inference.extract import embed_batch
    from embedder.inference.network import FEW_QUERIES, prepare_checkpoint, query_precisions
    from embedder.transforms import build_pixel_transform, normalize_batch

    preprocessing = loaded.preprocessing
    precisions = query_precisions(config.embedder.precision, config.embedder.runtime, device, preprocessing.image_size)

    def prepared(precision: str) -> tuple[Callable, str]:
        # Folding (torch) or exporting (ONNX Runtime) makes a copy; the training network is not needed for queries.
        # The pool's threads do not spin between batches: the requests' own work needs the cores then.
        return prepare_checkpoint(loaded, device, config.embedder.runtime, precision, config.artifacts, spinning=False,
                                  mirror_average=mirror_average)

    many, runtime = prepared(precisions.many)
    few, few_runtime = prepared(precisions.few) if precisions.split else (many, runtime)
    if precisions.split:
        runtime = f"{few_runtime}+{runtime}"
    log.info("query embedder: %s, batches of up to %d, waiting %.1f ms, %d threads", runtime, config.app.max_batch,
             config.app.batch_wait_ms, torch.get_num_threads())

    def embed(pixels: Sequence[torch.Tensor]) -> np.ndarray:
        # Normalised a whole batch at once: per image, torch's threads would wake for each small tensor.
        batch = normalize_batch(torch.stack(list(pixels)).to(device), preprocessing)
        if len(pixels) < FEW_QUERIES:
            return embed_batch(few, batch, device, precisions.few)
        return embed_batch(many, batch, device, precisions.many)

    if precisions.split:
        # The start-up probe (load_query_embedder) runs one image, so through the few-queries network only:
        # the first batch would otherwise pay the other network's warm-up (oneDNN prepares its kernels then).
        embed([torch.zeros(3, preprocessing.image_size, preprocessing.image_size, dtype=torch.uint8)] * FEW_QUERIES)
    return QueryEmbedder(prepare=build_pixel_transform(preprocessing), embed=embed, runtime=runtime)


def _ray_query_embedder(config: Config, stored: EmbeddingsFile) -> QueryEmbedder:
    """Queries resized here and embedded by the Ray Serve replicas, each call within app.search_deadline_s
    (BatchTimeout, a JSON 503, after it); the replicas check that their checkpoint is the catalog's."""
    from embedder.inference.ray_serve import embedder_handle
    from embedder.transforms import Preprocessing, build_pixel_transform

    handle = embedder_handle(config.app.ray_address or None)
    deadline_s = config.app.search_deadline_s
    deployed = handle.stats.remote().result(timeout_s=deadline_s)["checkpoint_sha256"]
    if deployed != stored.checkpoint_sha256:
        raise EmbeddingsFileError(
            f"the Ray Serve embedder runs the checkpoint of sha256 {deployed[:12]}..., but {stored.source} was "
            f"embedded with {stored.checkpoint_sha256[:12]}...; run `python manage.py serve-embedder` again")

    def embed(pixels: Sequence[Any]) -> np.ndarray:
        # One call a query, so that Ray Serve batches the queries of every web server together.
        responses: list[Any] = []
        deadline = time.monotonic() + deadline_s
        try:
            responses.extend(handle.remote(image.numpy()) for image in pixels)
            return np.stack([response.result(timeout_s=max(0.0, deadline - time.monotonic()))
                             for response in responses])
        except Exception as error:  # noqa: BLE001 (a timeout, a dead replica, an unreachable cluster: all a 503)
            for response in responses:
                with contextlib.suppress(Exception):  # a request that already failed re-raises on cancel
                    response.cancel()
            raise BatchTimeout(f"the Ray Serve embedder did not answer within {deadline_s:g} s: "
                               f"{type(error).__name__}") from error

    preprocessing = Preprocessing.from_dict(stored.preprocessing)
    return QueryEmbedder(prepare=build_pixel_transform(preprocessing), embed=embed, runtime="ray serve")


def _caption_maker(config: Config, stored: EmbeddingsFile, device: str) -> CaptionMaker:
    """Captions from the trained annotator when it matches this embedder, else from the neighbours' titles."""
    from embedder.captioner.training import annotator_for

    settings = config.captions
    annotate = annotator_for(config.artifacts, stored.checkpoint_sha256, settings, device) if stored.has_titles else None
    return CaptionMaker(stored.title, stored.has_titles, annotate=annotate, attributes=stored.attributes,
                        attribute_names=stored.attribute_names, consensus_k=settings.consensus_k,
                        attributes_shown=settings.attributes_shown)


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
    from embedder.catalogs.item_images import catalog_image_loader

    return catalog_image_loader(stored, config.paths.downloads)
