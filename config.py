"""Lookbook configuration: frozen dataclasses and the one loader.

Values are layered: defaults <- optional TOML file <- ``LOOKBOOK_*`` environment
variables <- command-line overrides. The loader is the only place that reads the
environment; everything else receives a ``Config`` explicitly.
"""
from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

ENV_PREFIX = "LOOKBOOK_"

CATALOG_KINDS = ("fashion-mnist", "deepfashion", "fashion-product-images")
DEEPFASHION_SUBSETS = ("upper", "lower", "full", "all")
SPLITS = ("train", "val", "test")
# Inference arithmetic and engine (embedder/inference/network.py resolves "auto").
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
RUNTIMES = ("auto", "torch", "onnxruntime")


class LookbookError(Exception):
    """Bad input or a missing or damaged file, said in words for the person who can fix it; the base of
    every such error in the packages, so that manage.py shows them as one message, not a traceback."""


class ConfigError(LookbookError, ValueError):
    """A configuration key or value that Lookbook cannot use."""


@dataclass(frozen=True)
class CatalogConfig:
    """Which catalog to read and where it lies."""

    kind: str = "fashion-mnist"
    # None: the catalog's usual place (Fashion-MNIST: the Debian package's directory).
    root: Path | None = None
    # DeepFashion category_type subset: upper (1), lower (2), full (3) or all.
    subset: str = "upper"
    # Fashion Product Images: "hash" (80/10/10 by product id) or "year" (published: even years train, odd test).
    split: str = "hash"
    # Fashion Product Images: "all" articleTypes, or the 20 most frequent ("top20").
    article_types: str = "all"
    # Use only this many items, spread evenly over the catalog (0: all of them); for trials and benchmarks.
    limit: int = 0

    def __post_init__(self) -> None:
        _check_choice("catalog.kind", self.kind, CATALOG_KINDS)
        _check_choice("catalog.subset", self.subset, DEEPFASHION_SUBSETS)
        _check_choice("catalog.split", self.split, ("hash", "year"))
        _check_choice("catalog.article_types", self.article_types, ("all", "top20"))
        _check_range("catalog.limit", self.limit, 0, 1 << 40)


@dataclass(frozen=True)
class EmbedderConfig:
    """The embedding network and how it runs."""

    backbone: str = "resnet50"
    # "imagenet" (7×7 stride-2 convolution and max-pool, as ImageNet weights expect) or "small" (one 3×3
    # stride-1 convolution: small images keep their detail through the trunk, at several times the compute).
    stem: str = "imagenet"
    # "imagenet", "auto" (ImageNet when it can be had, else random), "none", or a checkpoint path.
    weights: str = "imagenet"
    # None: the catalog's own size (32 for Fashion-MNIST, 224 for DeepFashion).
    image_size: int | None = None
    embedding_size: int = 128
    batch_size: int = 128
    device: str = "auto"
    # DataLoader worker processes; None: as many as suit the device (see embedder.inference.extract.resolve_workers).
    workers: int | None = None
    seed: int = 0
    # Inference arithmetic: "auto" (float16 on CUDA, bfloat16 on CPUs with native bf16, else float32),
    # "fp32", "bf16" or "fp16" (CUDA only); see embedder/inference/network.py.
    precision: str = "auto"
    # torch.compile the network for build-index: compiling costs minutes on a small CPU (benchmarks/README.md).
    compile: bool = False
    # The inference engine of build-index and the web app: "onnxruntime" (CPU, fp32), "torch", or "auto":
    # ONNX Runtime for fp32 on a CPU, where it is faster (benchmarks/README.md), torch otherwise; it exports
    # once to a file beside the checkpoint.
    runtime: str = "auto"
    # build-index: embed each image and its mirror image in one pass and keep the mean direction of the two
    # vectors (test-time augmentation); queries then follow the index (embeddings.h5 records it). Twice the
    # forward cost a query; off by default.
    mirror_average: bool = False

    def __post_init__(self) -> None:
        _check_choice("embedder.backbone", self.backbone, ("resnet50",))
        _check_choice("embedder.stem", self.stem, ("imagenet", "small"))
        _check_choice("embedder.device", self.device, ("auto", "cpu", "cuda"))
        _check_choice("embedder.precision", self.precision, PRECISIONS)
        _check_choice("embedder.runtime", self.runtime, RUNTIMES)
        for key in ("compile", "mirror_average"):
            if not isinstance(getattr(self, key), bool):
                raise ConfigError(f"embedder.{key}: {getattr(self, key)!r} must be true or false")
        if self.image_size is not None:
            _check_range("embedder.image_size", self.image_size, 16, 1024)
        _check_range("embedder.embedding_size", self.embedding_size, 2, 4096)
        _check_range("embedder.batch_size", self.batch_size, 1, 65536)
        if self.workers is not None:
            _check_range("embedder.workers", self.workers, 0, 256)


@dataclass(frozen=True)
class TrainConfig:
    """Triplet-loss fine-tuning of the embedder."""

    epochs: int = 30
    # Seconds of training after which the run stops at the end of a step; 0 means no limit.
    time_budget: int = 0
    # Steps after which the run ends (0: the epochs decide); the schedule ends with whichever of epochs, steps
    # and time budget ends first, so a fixed step count reproduces what a time budget gives a slower machine.
    steps: int = 0
    classes_per_batch: int = 10  # P of the P×K batches
    images_per_class: int = 12  # K
    mining: str = "batch-hard"
    margin: float = 0.2
    # Weight of the normalised-softmax classification loss on the embedding; 0 turns it off.
    aux_loss_weight: float = 1.0
    optimizer: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 5e-4
    warmup_epochs: float = 0.5
    # "cosine", "linear" (straight to zero, which short runs such as the demo's gain from) or "constant".
    schedule: str = "cosine"
    # "none" trains everything; "stem", "layer1" ... "layer4" freeze the trunk up to and including that block.
    freeze: str = "none"
    augment: str = "auto"
    # Validation items per class taken from train when the catalog has no val split.
    holdout_per_class: int = 100
    validate_every: float = 1.0  # epochs between kNN validations (fractions allowed)
    # Validations without improvement before stopping; 0 (the default) never stops: a cosine schedule gains
    # most at its low-learning-rate end, after noisy early peaks.
    early_stopping: int = 0
    # Share of the schedule (by epochs or time budget, whichever is further on) before which validations
    # without improvement are not counted towards early_stopping.
    early_stopping_after: float = 0.5
    amp: str = "auto"  # bfloat16 autocast: auto (on GPUs and on CPUs with AVX512-BF16 or AMX), on, off
    seed: int = 0

    def __post_init__(self) -> None:
        _check_range("train.epochs", self.epochs, 1, 10_000)
        _check_range("train.time_budget", self.time_budget, 0, 10_000_000)
        _check_range("train.steps", self.steps, 0, 1 << 40)
        _check_range("train.classes_per_batch", self.classes_per_batch, 2, 10_000)
        _check_range("train.images_per_class", self.images_per_class, 2, 10_000)
        _check_choice("train.mining", self.mining, ("batch-hard", "semi-hard"))
        _check_choice("train.optimizer", self.optimizer, ("adamw", "sgd"))
        _check_choice("train.schedule", self.schedule, ("cosine", "linear", "constant"))
        _check_choice("train.freeze", self.freeze, ("none", "stem", "layer1", "layer2", "layer3", "layer4"))
        _check_choice("train.augment", self.augment, ("auto", "none", "fashion-mnist", "photo"))
        _check_choice("train.amp", self.amp, ("auto", "on", "off"))
        _check_range("train.holdout_per_class", self.holdout_per_class, 1, 1_000_000)
        _check_range("train.early_stopping", self.early_stopping, 0, 10_000)
        for key in ("margin", "lr", "weight_decay", "warmup_epochs", "aux_loss_weight", "validate_every",
                    "early_stopping_after"):
            _check_nonnegative(f"train.{key}", getattr(self, key))
        if self.early_stopping_after > 1:
            raise ConfigError(f"train.early_stopping_after: {self.early_stopping_after!r} must be a number from 0 to 1")
        if self.lr <= 0 or self.validate_every <= 0:
            raise ConfigError("train.lr and train.validate_every must be greater than 0")


@dataclass(frozen=True)
class IndexConfig:
    """The FAISS index over catalog vectors and the kNN vote."""

    # "flat" (exact), "ivf" or "hnsw" (approximate), or "auto": flat below approximate_from vectors, IVF above.
    kind: str = "auto"
    k: int = 10
    metric: str = "ip"
    gpu: str = "auto"
    # From this size an exact scan costs a served query a noticeable share of its time, and IVF served more
    # clients (benchmarks/README.md, Search). Evaluation stays exact.
    approximate_from: int = 50_000
    # IVF cells; 0: about 4·√N.
    nlist: int = 0
    # Cells (IVF) or candidates (HNSW, efSearch) a query looks at; 0: the fewest that reach recall_target.
    nprobe: int = 0
    # recall@10 against exact search that the tuned nprobe must reach, on catalog vectors used as queries.
    recall_target: float = 0.97
    # Where searches run (indexer.vector_store): "faiss" in the process, or "milvus": a Milvus Lite file
    # (uri a path; "" is <artifacts>/milvus.db) or a Milvus server or cluster (uri http://host:19530).
    backend: str = "faiss"
    uri: str = ""
    collection: str = ""  # "" is lookbook_<catalog kind>
    # Milvus's index type for the collection: FLAT (exact), HNSW, IVF_FLAT; on a server also DISKANN, GPU_CAGRA.
    milvus_index: str = "FLAT"
    # The longest any one call to Milvus may take.
    timeout_s: float = 30.0

    def __post_init__(self) -> None:
        _check_choice("index.kind", self.kind, ("auto", "flat", "ivf", "hnsw"))
        _check_choice("index.metric", self.metric, ("ip", "l2"))
        _check_choice("index.gpu", self.gpu, ("auto", "on", "off"))
        _check_range("index.k", self.k, 1, 1000)
        _check_range("index.approximate_from", self.approximate_from, 1, 1 << 40)
        _check_range("index.nlist", self.nlist, 0, 1 << 24)
        _check_range("index.nprobe", self.nprobe, 0, 1 << 24)
        _check_choice("index.backend", self.backend, ("faiss", "milvus"))
        _check_choice("index.milvus_index", self.milvus_index, ("FLAT", "HNSW", "IVF_FLAT", "IVF_SQ8", "DISKANN",
                                                                "GPU_CAGRA", "AUTOINDEX"))
        _check_nonnegative("index.timeout_s", self.timeout_s)
        if not isinstance(self.recall_target, (int, float)) or isinstance(self.recall_target, bool) \
                or not 0 < self.recall_target <= 1:
            raise ConfigError(f"index.recall_target: {self.recall_target!r} must be a number in (0, 1]")


@dataclass(frozen=True)
class EvaluateConfig:
    """Which items query and which form the index when measuring kNN accuracy."""

    query_split: str = "test"
    index_splits: tuple[str, ...] = ("train", "val")
    # Every item queries all the others (the splits are then not used).
    leave_one_out: bool = False
    # The k values of the accuracy-versus-k curve; the vote's k (index.k or --k) is always added.
    k_sweep: tuple[int, ...] = (1, 3, 5, 10, 20, 50)
    # mAP@R ranks the whole index for every query: exact, and the slowest metric.
    map_at_r: bool = True
    # Query embeddings drawn on the t-SNE map (a seeded sample when there are more); 0: no map.
    map_points: int = 1000
    # The classes with the lowest top-1 shown with strips of failed queries, and queries per strip.
    failure_classes: int = 3
    failures_per_class: int = 4
    seed: int = 0
    # Where reports/<timestamp>/ directories go; None: <artifacts>/reports.
    reports_dir: Path | None = None

    def __post_init__(self) -> None:
        _check_choice("evaluate.query_split", self.query_split, SPLITS)
        if not self.index_splits:
            raise ConfigError("evaluate.index_splits: name at least one split")
        for split in self.index_splits:
            _check_choice("evaluate.index_splits", split, SPLITS)
        for k in self.k_sweep:
            _check_range("evaluate.k_sweep", k, 1, 1000)
        _check_range("evaluate.map_points", self.map_points, 0, 20_000)
        _check_range("evaluate.failure_classes", self.failure_classes, 0, 1000)
        _check_range("evaluate.failures_per_class", self.failures_per_class, 1, 50)


@dataclass(frozen=True)
class AppConfig:
    """The web app: where it listens and what uploads it accepts."""

    host: str = "127.0.0.1"
    port: int = 5000
    max_upload_bytes: int = 10 * 1024 * 1024
    # Larger images are refused before decoding (decompression bombs).
    max_image_pixels: int = 40_000_000
    results: int = 12
    # `serve --prod`: "waitress" (reads whole requests before a request thread sees them, so slow clients
    # hold no thread) or "gunicorn" (behind a buffering proxy); one process either way, with this many
    # request threads (search_app.serving).
    server: str = "waitress"
    threads: int = 8
    # Concurrent queries share one forward pass, up to max_batch images (1: one at a time); a batch waits
    # at most batch_wait_ms for queries already being received (a lone query never waits).
    max_batch: int = 8
    batch_wait_ms: float = 20.0
    # The longest a photo search waits for the model before a JSON 503 with Retry-After (a hung or swamped model).
    search_deadline_s: float = 30.0
    # How often the server looks for a new build in the artifacts and swaps it in (search_app.reloading); 0: never.
    reload_check_s: float = 5.0
    # Where queries are embedded: "local" in this process, or "ray": the Ray Serve deployment that
    # `manage.py serve-embedder` made on the Ray cluster at ray_address ("" : the one this machine is in).
    embedder: str = "local"
    ray_address: str = ""

    def __post_init__(self) -> None:
        _check_range("app.port", self.port, 0, 65535)
        _check_range("app.max_upload_bytes", self.max_upload_bytes, 1024, 1 << 31)
        _check_range("app.max_image_pixels", self.max_image_pixels, 1, 1 << 31)
        _check_range("app.results", self.results, 1, 200)
        _check_choice("app.server", self.server, ("waitress", "gunicorn"))
        _check_range("app.threads", self.threads, 1, 256)
        _check_range("app.max_batch", self.max_batch, 1, 256)
        _check_nonnegative("app.batch_wait_ms", self.batch_wait_ms)
        if self.batch_wait_ms > 1000:
            raise ConfigError(f"app.batch_wait_ms: {self.batch_wait_ms!r} must be at most 1000")
        if not isinstance(self.search_deadline_s, (int, float)) or not 0.1 <= self.search_deadline_s <= 3600:
            raise ConfigError(f"app.search_deadline_s: {self.search_deadline_s!r} must be from 0.1 to 3600 seconds")
        _check_nonnegative("app.reload_check_s", self.reload_check_s)
        _check_choice("app.embedder", self.embedder, ("local", "ray"))


@dataclass(frozen=True)
class CaptionsConfig:
    """Captions: the GRU annotator and its training, neighbour consensus, attribute voting."""

    # "auto": the GRU annotator when one was trained on this embedder's vectors, else neighbour consensus.
    method: str = "auto"
    consensus_k: int = 15  # neighbours whose titles compete in the consensus
    attributes_shown: int = 5
    beam_size: int = 3  # 1 decodes greedily
    max_length: int = 16  # words, without the end token
    word_size: int = 128
    hidden_size: int = 256
    layers: int = 1
    dropout: float = 0.2
    min_word_count: int = 2  # rarer words become <unk>
    epochs: int = 30
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-4
    time_budget: int = 0  # seconds, 0 = none
    seed: int = 0

    def __post_init__(self) -> None:
        _check_choice("captions.method", self.method, ("auto", "gru", "consensus"))
        for key, low, high in (("consensus_k", 1, 1000), ("attributes_shown", 0, 1000), ("beam_size", 1, 64),
                               ("max_length", 1, 200), ("word_size", 1, 4096), ("hidden_size", 1, 8192),
                               ("layers", 1, 8), ("min_word_count", 1, 1_000_000), ("epochs", 1, 10_000),
                               ("batch_size", 1, 65536), ("time_budget", 0, 10_000_000)):
            _check_range(f"captions.{key}", getattr(self, key), low, high)
        for key in ("dropout", "lr", "weight_decay"):
            _check_nonnegative(f"captions.{key}", getattr(self, key))
        if self.lr <= 0 or self.dropout >= 1:
            raise ConfigError("captions.lr must be greater than 0 and captions.dropout less than 1")


@dataclass(frozen=True)
class Config:
    """Everything Lookbook can be told, one frozen tree."""

    catalog: CatalogConfig = field(default_factory=CatalogConfig)
    embedder: EmbedderConfig = field(default_factory=EmbedderConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    index: IndexConfig = field(default_factory=IndexConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    app: AppConfig = field(default_factory=AppConfig)
    captions: CaptionsConfig = field(default_factory=CaptionsConfig)
    # None: var/<catalog kind>/ under the working directory.
    artifacts_dir: Path | None = None

    @property
    def artifacts(self) -> Path:
        """The directory that holds this catalog's checkpoint, embeddings, index and reports."""
        return self.artifacts_dir if self.artifacts_dir is not None else Path("var") / self.catalog.kind

    @property
    def paths(self) -> Artifacts:
        """The artifacts' files, by name."""
        return Artifacts(self.artifacts)


@dataclass(frozen=True)
class Artifacts:
    """The files a catalog's build makes in its artifacts directory, named in one place (docs/artifacts.md)."""

    root: Path

    @property
    def checkpoint(self) -> Path:
        """The embedder (`train`, or made by `build-index`), which queries must be embedded with too."""
        return self.root / "embedder.pt"

    @property
    def embeddings(self) -> Path:
        return self.root / "embeddings.h5"

    @property
    def index(self) -> Path:
        return self.root / "index.faiss"

    @property
    def build_report(self) -> Path:
        return self.root / "build-report.json"

    @property
    def training(self) -> Path:
        """The training run's state, metrics and curves."""
        return self.root / "train"

    @property
    def reports(self) -> Path:
        """Evaluation reports, one directory each."""
        return self.root / "reports"

    @property
    def downloads(self) -> Path:
        return self.root / "downloads"

    @property
    def baselines(self) -> Path:
        """Other embeddings of the catalog under the evaluation protocol (benchmarks/bench_accuracy.py)."""
        return self.root / "baselines.json"


SECTIONS: dict[str, type] = {
    "catalog": CatalogConfig,
    "embedder": EmbedderConfig,
    "train": TrainConfig,
    "index": IndexConfig,
    "evaluate": EvaluateConfig,
    "app": AppConfig,
    "captions": CaptionsConfig,
}
TOP_LEVEL_KEYS = ("artifacts_dir",)


def load_config(
    path: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Build the Config: defaults <- TOML file <- LOOKBOOK_* environment <- overrides.

    ``overrides`` maps dotted keys ("embedder.weights", "artifacts_dir") to values;
    strings are converted to the field's type. ``env`` defaults to ``os.environ``.
    """
    layered: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
    top: dict[str, Any] = {}
    if path is not None:
        _merge(layered, top, _read_toml(Path(path)), source=str(path))
    _merge(layered, top, _from_env(os.environ if env is None else env), source="environment")
    if overrides:
        _merge(layered, top, _nest(overrides, source="command line"), source="command line")
    sections = {name: _build(cls, name, layered[name]) for name, cls in SECTIONS.items()}
    artifacts_dir = top.get("artifacts_dir")
    return Config(
        **sections,
        artifacts_dir=None if artifacts_dir in (None, "") else Path(artifacts_dir),
    )


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"config file {path} is not valid TOML: {error}") from None


def _from_env(env: Mapping[str, str]) -> dict[str, Any]:
    """LOOKBOOK_EMBEDDER_BATCH_SIZE=64 -> {"embedder": {"batch_size": "64"}}."""
    nested: dict[str, Any] = {}
    for name, value in env.items():
        if not name.startswith(ENV_PREFIX) or name == ENV_PREFIX + "CONFIG":
            continue
        rest = name[len(ENV_PREFIX):].lower()
        if rest in TOP_LEVEL_KEYS:
            nested[rest] = value
            continue
        section, _, key = rest.partition("_")
        if section not in SECTIONS or not key:
            raise ConfigError(
                f"environment variable {name}: unknown setting; expected "
                f"{ENV_PREFIX}<SECTION>_<KEY> with SECTION one of {', '.join(s.upper() for s in SECTIONS)}"
            )
        nested.setdefault(section, {})[key] = value
    return nested


def _nest(overrides: Mapping[str, Any], source: str) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for dotted, value in overrides.items():
        if dotted in TOP_LEVEL_KEYS:
            nested[dotted] = value
            continue
        section, _, key = dotted.partition(".")
        if section not in SECTIONS or not key:
            raise ConfigError(f"{source}: unknown setting {dotted!r}; expected <section>.<key>")
        nested.setdefault(section, {})[key] = value
    return nested


def _merge(layered: dict[str, dict[str, Any]], top: dict[str, Any], data: Mapping[str, Any], source: str) -> None:
    for name, value in data.items():
        if name in TOP_LEVEL_KEYS:
            top[name] = value
        elif name in SECTIONS:
            if not isinstance(value, Mapping):
                raise ConfigError(f"{source}: [{name}] must be a table of settings")
            known = {f.name for f in dataclasses.fields(SECTIONS[name])}
            for key, item in value.items():
                if key not in known:
                    raise ConfigError(
                        f"{source}: unknown setting {name}.{key}; known: {', '.join(sorted(known))}"
                    )
                layered[name][key] = item
        else:
            raise ConfigError(f"{source}: unknown setting {name!r}")


def _build(cls: type, section: str, values: Mapping[str, Any]) -> Any:
    hints = typing.get_type_hints(cls)
    converted = {key: _convert(f"{section}.{key}", hints[key], value) for key, value in values.items()}
    try:
        return cls(**converted)
    except TypeError as error:
        raise ConfigError(f"[{section}]: {error}") from None


def _convert(key: str, hint: Any, value: Any) -> Any:
    """Coerce a TOML, environment or command-line value to the field's declared type."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("", "none", "null")):
            if type(None) in args:
                return None
        inner = [a for a in args if a is not type(None)]
        return _convert(key, inner[0], value)
    if origin is tuple:
        # "" (an environment variable or --set left empty) is the empty list.
        items = [part for part in value.split(",") if part.strip()] if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return tuple(_convert(key, args[0], item.strip() if isinstance(item, str) else item) for item in items)
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            return value.lower() in ("1", "true", "yes", "on")
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if hint is int:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        try:
            return int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: expected an integer, got {value!r}") from None
    if hint is float:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: expected a number, got {value!r}") from None
    if hint is Path:
        if not isinstance(value, (str, Path)):
            raise ConfigError(f"{key}: expected a path, got {value!r}")
        return Path(value).expanduser()
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    return value


def _check_choice(key: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{key}: {value!r} is not one of {', '.join(choices)}")


def _check_range(key: str, value: Any, low: int, high: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ConfigError(f"{key}: {value!r} must be an integer from {low} to {high}")


def _check_nonnegative(key: str, value: Any) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
        raise ConfigError(f"{key}: {value!r} must be a number of at least 0")
