"""Captions end to end on a generated Fashion Product Images catalog: build-index -> train-captioner -> evaluate -> search."""
import io
import json

import pytest
from click.testing import CliRunner

from config import load_config
from manage import cli
from search_app import create_app

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A sample catalog with a malformed row and a missing image, embedded, indexed and captioned by the CLI."""
    root = tmp_path_factory.mktemp("products")
    runner = CliRunner()
    made = runner.invoke(cli, ["make-sample-catalog", "--layout", "fashion-product-images", "--per-category", "5",
                               str(root)], catch_exceptions=False)
    assert made.exit_code == 0 and "--catalog fashion-product-images" in made.output
    with (root / "styles.csv").open("a") as styles:
        styles.write("77777,Men,Apparel\n99999,Men,Apparel,Topwear,Shirts,Red,Fall,2012,Casual,Red Shirt\n")
    artifacts = tmp_path_factory.mktemp("artifacts")
    args = ["--catalog", "fashion-product-images", "--root", str(root), "--weights", "none", "--artifacts",
            str(artifacts), "--set", "embedder.image_size=32", "--set", "embedder.embedding_size=16",
            "--set", "embedder.batch_size=16", "--set", "embedder.workers=0", "--set", "captions.hidden_size=32",
            "--set", "captions.word_size=16", "--set", "captions.beam_size=2", "--set", "captions.min_word_count=1"]
    build = runner.invoke(cli, args + ["build-index"], catch_exceptions=False)
    return root, artifacts, args, build


def test_build_reports_the_rejected_rows(built):
    root, artifacts, args, build = built
    assert build.exit_code == 0, build.output
    assert "rejected rows   2" in build.output
    report = json.loads((artifacts / "build-report.json").read_text())
    assert any("line" in message and "found 3" in message for message in report["embeddings"]["rejected"])
    assert any("images/99999.jpg is missing" in message for message in report["embeddings"]["rejected"])


def test_evaluate_without_an_annotator_scores_consensus(built):
    root, artifacts, args, _ = built
    result = CliRunner().invoke(cli, args + ["evaluate", "--k", "3"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "consensus" in result.output and "train-captioner" in result.output
    data = json.loads((artifacts / "captions.json").read_text())
    assert [m["method"] for m in data["methods"]] == ["consensus"]
    assert 0 <= data["methods"][0]["scores"]["bleu1"] <= 1 and data["attributes"]["attributes"] > 0


def test_train_captioner_then_evaluate_and_search_use_it(built):
    root, artifacts, args, _ = built
    trained = CliRunner().invoke(cli, args + ["train-captioner", "--epochs", "3"], catch_exceptions=False)
    assert trained.exit_code == 0, trained.output
    assert (artifacts / "captioner.pt").is_file() and "Saved to" in trained.output
    result = CliRunner().invoke(cli, args + ["evaluate"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    data = json.loads((artifacts / "captions.json").read_text())
    assert [m["method"] for m in data["methods"]] == ["consensus", "gru"]
    assert set(data["methods"][1]["scores"]) == {"bleu1", "bleu2", "bleu3", "bleu4", "cider_d"}
    assert "| gru |" in (artifacts / "captions.md").read_text()

    config = load_config(env={}, overrides={
        "catalog.kind": "fashion-product-images", "catalog.root": str(root), "embedder.weights": "none",
        "artifacts_dir": str(artifacts), "captions.beam_size": "2"})
    client = create_app(config).test_client()
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (90, 120), (200, 40, 40)).save(buffer, "PNG")
    response = client.post("/api/search", data={"image": (io.BytesIO(buffer.getvalue()), "q.png")},
                           content_type="multipart/form-data")
    answer = response.get_json()
    assert response.status_code == 200, answer
    assert answer["caption"]["method"] == "gru-annotator" and isinstance(answer["caption"]["text"], str)
    assert all(attribute["name"].split(": ")[0] in {"gender", "colour", "season", "usage"}
               for attribute in answer["caption"]["attributes"])


def test_train_captioner_without_embeddings_is_a_clear_error(tmp_path):
    result = CliRunner().invoke(cli, ["--artifacts", str(tmp_path), "train-captioner"])
    assert result.exit_code == 1 and "build-index" in result.output
