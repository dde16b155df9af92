"""The web app over Milvus (Milvus Lite in the artifacts directory) answers as it does over FAISS: the same
results for a photo, within a category, page by page, and for "more like this"."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from config import load_config
from embedder.catalogs.sample_deepfashion import write_sample_catalog
from manage import cli
from search_app import create_app
from tests.conftest import sample_build_arguments
from tests.search_app.test_serving import photo


@pytest.fixture(scope="module")
def clients(tmp_path_factory):
    directory = tmp_path_factory.mktemp("milvus-app")
    root = write_sample_catalog(directory / "catalog", images_per_category=4, seed=2)
    arguments = [*sample_build_arguments(root, directory / "artifacts"), "--set", "index.backend=milvus"]
    result = CliRunner().invoke(cli, [*arguments, "build-index"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    report = json.loads((directory / "artifacts" / "build-report.json").read_text())
    assert report["milvus"]["added"] == report["milvus"]["rows"] == report["embeddings"]["embedded"]
    overrides = {"catalog.kind": "deepfashion", "catalog.root": str(root), "catalog.subset": "all",
                 "embedder.weights": "none", "artifacts_dir": str(directory / "artifacts"),
                 "embedder.image_size": 32, "embedder.embedding_size": 16, "app.reload_check_s": 0}
    apps = {backend: create_app(load_config(env={}, overrides={**overrides, "index.backend": backend}))
            for backend in ("faiss", "milvus")}
    yield {backend: app.test_client() for backend, app in apps.items()}
    for app in apps.values():
        app.extensions["lookbook"].close()


def answers(clients, ask) -> dict:
    return {backend: ask(client) for backend, client in clients.items()}


def same_results(got: dict) -> None:
    """The same similarities rank by rank, and the same items wherever no other item ties (the untrained
    network gives many items the very same vector, so ties are common)."""
    faiss, milvus = got["faiss"]["results"], got["milvus"]["results"]
    similarities = [r["similarity"] for r in faiss]
    assert [r["similarity"] for r in milvus] == pytest.approx(similarities, abs=1e-4)
    for want, found, similarity in zip(faiss, milvus, similarities):
        tied = sum(abs(other - similarity) < 1e-4 for other in similarities) > 1
        assert tied or abs(similarity - similarities[-1]) < 1e-4 or found["item_id"] == want["item_id"]


@pytest.mark.parametrize("settings", [{"k": 10}, {"k": 5, "offset": 5}, {"k": 3, "category": "Tee"}])
def test_a_photo_finds_the_same_items_in_both(clients, settings):
    got = answers(clients, lambda client: client.post("/api/search", query_string=settings,
                                                      data=photo((180, 40, 60)), content_type="image/png").get_json())
    same_results(got)
    if "category" in settings:
        assert {r["category"] for r in got["milvus"]["results"]} == {"Tee"}


def test_more_like_this_finds_the_same_items_in_both(clients):
    item_id = clients["faiss"].post("/api/search", data=photo((20, 90, 200)),
                                    content_type="image/png").get_json()["results"][0]["item_id"]
    got = answers(clients, lambda client: client.get(f"/api/items/{item_id}/similar?k=8").get_json())
    same_results(got)
    assert item_id not in [r["item_id"] for r in got["milvus"]["results"]]
    health = clients["milvus"].get("/healthz").get_json()
    assert health["index_backend"] == "milvus" and health["items"] == clients["faiss"].get("/healthz").get_json()["items"]
