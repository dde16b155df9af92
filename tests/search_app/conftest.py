"""A small real search engine without torch: seeded drawn images, a pixel embedder, an exact faiss index."""
from __future__ import annotations

import io
from collections.abc import Callable

import faiss
import numpy as np
import pytest
from PIL import Image, ImageDraw

from config import AppConfig, Config
from search_app import create_app
from search_app.engine import SearchEngine
from search_app.items import ItemTable

COLOURS = {
    "red": (205, 40, 50),
    "green": (40, 165, 70),
    "blue": (40, 70, 200),
    "yellow": (230, 200, 40),
    "purple": (125, 50, 160),
    "teal": (30, 160, 160),
}
CLASS_NAMES = list(COLOURS)
PER_CLASS = 5
IMAGE_SIDE = 48
MAX_UPLOAD_BYTES = 256 * 1024
MAX_IMAGE_PIXELS = 1_000_000
RESULTS = 8
VOTE_K = 5


def draw_item(colour: tuple[int, int, int], rng: np.random.Generator) -> Image.Image:
    """A square of one colour with a lighter or darker shape at a random place, so no two items are alike."""
    image = Image.new("RGB", (IMAGE_SIDE, IMAGE_SIDE), colour)
    draw = ImageDraw.Draw(image)
    shade = 0.55 if rng.random() < 0.5 else 1.35
    fill = tuple(int(np.clip(c * shade + 20, 0, 255)) for c in colour)
    x0, y0 = rng.integers(0, IMAGE_SIDE // 2, size=2)
    width, height = rng.integers(10, IMAGE_SIDE // 2, size=2)
    shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
    shape((int(x0), int(y0), int(x0 + width), int(y0 + height)), fill=fill)
    return image


def embed_pixels(image: Image.Image) -> np.ndarray:
    """A stand-in embedder: the 8×8 RGB thumbnail, centred and scaled to unit length (192 floats)."""
    pixels = np.asarray(image.convert("RGB").resize((8, 8), Image.Resampling.BOX), dtype=np.float32)
    vector = (pixels / 255.0 - 0.5).reshape(-1)
    return vector / np.linalg.norm(vector)


class RecordingEmbedder:
    """embed_pixels, remembering every image it was given (to check what the app hands the model)."""

    def __init__(self) -> None:
        self.received: list[Image.Image] = []

    def __call__(self, image: Image.Image) -> np.ndarray:
        self.received.append(image.copy())
        return embed_pixels(image)


@pytest.fixture
def catalog_images() -> list[Image.Image]:
    rng = np.random.default_rng(7)
    return [draw_item(COLOURS[name], rng) for name in CLASS_NAMES for _ in range(PER_CLASS)]


@pytest.fixture
def item_table() -> ItemTable:
    labels = np.repeat(np.arange(len(CLASS_NAMES)), PER_CLASS)
    numbers = np.tile(np.arange(PER_CLASS), len(CLASS_NAMES))
    return ItemTable(
        item_id=np.array([f"{CLASS_NAMES[c]}-{n:02d}" for c, n in zip(labels, numbers)]),
        label=labels,
        title=np.array([f"{CLASS_NAMES[c].title()} jumper no. {n}" for c, n in zip(labels, numbers)]),
        split=np.array(["train", "train", "train", "val", "test"] * len(CLASS_NAMES)),
    )


@pytest.fixture
def embedder() -> RecordingEmbedder:
    return RecordingEmbedder()


@pytest.fixture
def make_engine(catalog_images, item_table, embedder) -> Callable[..., SearchEngine]:
    """Build engines over the drawn catalog; keyword arguments override SearchEngine's."""

    def make(metric: str = "ip", **overrides) -> SearchEngine:
        xb = np.stack([embed_pixels(image) for image in catalog_images])
        index = faiss.IndexFlatIP(xb.shape[1]) if metric == "ip" else faiss.IndexFlatL2(xb.shape[1])
        index.add(xb)
        arguments = dict(
            embed_image=embedder, index=index, items=item_table, class_names=CLASS_NAMES,
            load_item_image=lambda row: catalog_images[row], has_titles=True, k=VOTE_K,
            catalog_kind="test-colours", model_name="pixels-8x8",
        )
        return SearchEngine(**{**arguments, **overrides})

    return make


@pytest.fixture
def engine(make_engine) -> SearchEngine:
    return make_engine()


@pytest.fixture
def config(tmp_path) -> Config:
    app = AppConfig(max_upload_bytes=MAX_UPLOAD_BYTES, max_image_pixels=MAX_IMAGE_PIXELS, results=RESULTS)
    return Config(app=app, artifacts_dir=tmp_path)


@pytest.fixture
def app(config, engine):
    app = create_app(config, engine=engine)
    app.config["TESTING"] = True
    return app


@pytest.fixture
def client(app):
    return app.test_client()


def encode(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    """The image saved in a format, as bytes."""
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def post_image(client, url: str, data: bytes, filename: str = "photo.png",
               content_type: str | None = None, **settings):
    """POST a multipart form with the file in the "image" field; the settings in the query string for the API,
    as form fields for the page."""
    upload = (io.BytesIO(data), filename) if content_type is None else (io.BytesIO(data), filename, content_type)
    if url.startswith("/api/"):
        return client.post(url, query_string=settings, data={"image": upload}, content_type="multipart/form-data")
    return client.post(url, data={"image": upload, **settings}, content_type="multipart/form-data")


@pytest.fixture(scope="session")
def sample_artifacts(tmp_path_factory) -> list[str]:
    """CLI arguments naming sample-catalog artifacts built by `manage.py build-index` (once per session)."""
    from tests.search_app.live import build_sample_artifacts

    return build_sample_artifacts(tmp_path_factory.mktemp("served"))


@pytest.fixture(scope="session")
def prod_server(sample_artifacts, tmp_path_factory):
    """The base URL of `manage.py serve --prod` as configured by default (waitress, one process) over the sample
    artifacts, stopped after the session."""
    yield from _served(sample_artifacts, tmp_path_factory, ())


@pytest.fixture(scope="session")
def gunicorn_prod_server(sample_artifacts, tmp_path_factory):
    """The same with `app.server = "gunicorn"`: one worker, request threads."""
    yield from _served(sample_artifacts, tmp_path_factory, ("app.server=gunicorn",))


def _served(sample_artifacts: list[str], tmp_path_factory, settings: tuple[str, ...]):
    from benchmarks.server_process import free_port, start_server, stop_server

    port = free_port()
    server = start_server(sample_artifacts, port, tmp_path_factory.mktemp("server") / "serve.log", settings)
    yield f"http://127.0.0.1:{port}"
    stop_server(server)
