"""The CLI end to end on a generated DeepFashion-layout catalog: build-index -> evaluate -> a search."""
import io
import json

import h5py
import pytest
from click.testing import CliRunner
from PIL import Image

from config import load_config
from embedder.catalogs.sample_deepfashion import write_sample_catalog
from manage import cli
from search_app import create_app

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A sample catalog with one truncated and one missing image, embedded and indexed by the CLI."""
    root = write_sample_catalog(tmp_path_factory.mktemp("catalog"), images_per_category=6, seed=3, truncated=1, missing=1)
    artifacts = tmp_path_factory.mktemp("artifacts")
    args = ["--catalog", "deepfashion", "--root", str(root), "--weights", "none", "--artifacts", str(artifacts),
            "--set", "catalog.subset=all", "--set", "embedder.image_size=32", "--set", "embedder.embedding_size=16",
            "--set", "embedder.batch_size=16", "--set", "embedder.workers=0"]
    runner = CliRunner()
    result = runner.invoke(cli, args + ["build-index"], catch_exceptions=False)
    return root, artifacts, args, result


def test_build_index_writes_the_artifacts_and_reports_skips(built):
    root, artifacts, args, result = built
    assert result.exit_code == 0, result.output
    assert "skipped         2" in result.output
    for name in ("embedder.pt", "embeddings.h5", "index.faiss", "index.json", "build-report.json"):
        assert (artifacts / name).is_file(), name
    report = json.loads((artifacts / "build-report.json").read_text())
    assert len(report["embeddings"]["skipped"]) == 2
    reasons = " ".join(s["reason"] for s in report["embeddings"]["skipped"])
    assert "No such file" in reasons or "missing" in reasons.lower()
    with h5py.File(artifacts / "embeddings.h5") as f:
        assert f["embeddings"].shape[0] == report["embeddings"]["embedded"] == report["index"]["count"]
        assert f.attrs["catalog_kind"] == "deepfashion"


def test_second_build_reuses_everything(built):
    root, artifacts, args, _ = built
    before = (artifacts / "embeddings.h5").stat().st_mtime_ns
    result = CliRunner().invoke(cli, args + ["build-index"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "(reused)" in result.output
    assert (artifacts / "embeddings.h5").stat().st_mtime_ns == before


def test_evaluate_prints_and_writes_the_per_class_table(built):
    root, artifacts, args, _ = built
    result = CliRunner().invoke(cli, args + ["evaluate", "--k", "5"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    data = json.loads((artifacts / "evaluation.json").read_text())
    assert data["protocol"]["k"] == 5
    markdown = (artifacts / "evaluation.md").read_text()
    assert "| " in markdown and "top-1" in markdown.lower()


def test_search_through_the_app_finds_the_uploaded_catalog_image(built):
    root, artifacts, args, _ = built
    config = load_config(env={}, overrides={
        "catalog.kind": "deepfashion", "catalog.root": str(root), "catalog.subset": "all",
        "embedder.weights": "none", "artifacts_dir": str(artifacts)})
    app = create_app(config)
    client = app.test_client()
    with h5py.File(artifacts / "embeddings.h5") as f:
        item_id, path = f["item_id"][0].decode(), f["path"][0].decode()
    from embedder.catalogs.deepfashion import DeepFashionCatalog

    catalog = DeepFashionCatalog(root, "all")
    row = [item.item_id for item in catalog.items].index(item_id)
    buffer = io.BytesIO()
    catalog.open_image(row).save(buffer, "PNG")
    response = client.post("/api/search", data={"image": (io.BytesIO(buffer.getvalue()), "query.png")},
                           content_type="multipart/form-data")
    assert response.status_code == 200, response.get_json()
    answer = response.get_json()
    assert answer["results"][0]["item_id"] == item_id
    assert answer["results"][0]["similarity"] == pytest.approx(1.0, abs=1e-3)
    assert client.get(answer["results"][0]["image_url"]).mimetype == "image/jpeg"
    health = client.get("/healthz").get_json()
    assert health["model_loaded"] and health["index_loaded"]
    with h5py.File(artifacts / "embeddings.h5") as f:
        assert health["items"] == f["embeddings"].shape[0]
    bad = client.post("/api/search", data={"image": (io.BytesIO(b"not an image"), "x.jpg")},
                      content_type="multipart/form-data")
    assert bad.status_code == 400 and "error" in bad.get_json()


def test_bad_configuration_is_a_clear_error(tmp_path):
    result = CliRunner().invoke(cli, ["--set", "index.k=zero", "evaluate"])
    assert result.exit_code != 0 and "index.k" in result.output
    result = CliRunner().invoke(cli, ["--catalog", "deepfashion", "--root", str(tmp_path), "--artifacts",
                                      str(tmp_path / "a"), "build-index"])
    assert result.exit_code == 1 and "list_category_cloth.txt" in result.output
