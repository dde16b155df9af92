"""`manage.py evaluate` end to end on a generated catalog, then notebooks/knn_accuracy.ipynb run on its report."""
from __future__ import annotations

import json
from pathlib import Path

import nbclient
import nbformat
import pytest
from click.testing import CliRunner

from embedder.catalogs.sample_deepfashion import write_sample_catalog
from manage import cli

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "notebooks" / "knn_accuracy.ipynb"


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    """A sample catalog embedded by an untrained network, indexed, then evaluated twice by the CLI."""
    root = write_sample_catalog(tmp_path_factory.mktemp("catalog"), images_per_category=6, seed=5)
    artifacts = tmp_path_factory.mktemp("artifacts")
    args = ["--catalog", "deepfashion", "--root", str(root), "--weights", "none", "--artifacts", str(artifacts),
            "--set", "catalog.subset=all", "--set", "embedder.image_size=32", "--set", "embedder.embedding_size=16",
            "--set", "embedder.batch_size=16", "--set", "embedder.workers=0", "--set", "index.gpu=off",
            "--set", "evaluate.map_points=40"]
    runner = CliRunner()
    built = runner.invoke(cli, args + ["build-index"], catch_exceptions=False)
    assert built.exit_code == 0, built.output
    first = runner.invoke(cli, args + ["evaluate", "--k", "3", "--sweep", "1,5"], catch_exceptions=False)
    assert first.exit_code == 0, first.output
    [report] = (artifacts / "reports").iterdir()
    second = runner.invoke(cli, args + ["evaluate", "--leave-one-out", "--sweep", "", "--compare", str(report)],
                           catch_exceptions=False)
    assert second.exit_code == 0, second.output
    return artifacts, report, first.output, second.output


def test_evaluate_prints_the_table_and_writes_a_report_directory(evaluated):
    artifacts, report, output, _ = evaluated
    assert any(line.split() == ["class", "n", "top-1", "top-3", "top-5", "P@3", "R@3", "mAP@R"]
               for line in output.splitlines())
    assert "mAP@R" in output and f"Wrote the report to {report}" in output
    data = json.loads((report / "report.json").read_text())
    assert data["protocol"]["k"] == 3 and [row["k"] for row in data["k_sweep"]] == [1, 3, 5]
    assert {"confusion.png", "class-accuracy.png", "accuracy-vs-k.png", "embedding-map.png"} <= set(data["pictures"])
    # The catalog was reopened for the strips of failed queries (an untrained network fails plenty).
    assert any(name.startswith("failures-") for name in data["pictures"])
    for name in ("report.md", "report.html", "classes.csv", *data["pictures"]):
        assert (report / name).is_file(), name
    # Still written beside the artifacts, as before reports/ existed (by the second, leave-one-out run).
    assert json.loads((artifacts / "evaluation.json").read_text())["protocol"]["mode"] == "leave-one-out"


def test_compare_prints_and_writes_per_class_differences(evaluated):
    artifacts, report, _, output = evaluated
    assert f"Compared with {report / 'report.json'}" in output
    assert "protocol changed: mode: leave-one-out (was held-out split)" in output
    newest = max((artifacts / "reports").iterdir())
    comparison = json.loads((newest / "comparison.json").read_text())
    assert comparison["protocol_differences"]["mode"] == {"current": "leave-one-out", "other": "held-out split"}
    assert len(comparison["classes"]) == len(json.loads((report / "report.json").read_text())["classes"])


def test_bad_options_are_clear_errors(evaluated, tmp_path):
    artifacts, *_ = evaluated
    runner = CliRunner()
    result = runner.invoke(cli, ["--artifacts", str(artifacts), "evaluate", "--sweep", "1,x"])
    assert result.exit_code == 2 and "--sweep" in result.output
    result = runner.invoke(cli, ["--artifacts", str(artifacts), "evaluate", "--compare", str(tmp_path)])
    assert result.exit_code == 1 and "no such report" in result.output
    result = runner.invoke(cli, ["--artifacts", str(artifacts), "evaluate", "--k", "0"])
    assert result.exit_code == 1 and "k must be at least 1" in result.output


def test_the_notebook_is_committed_without_outputs():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code and all(not cell.outputs and cell.execution_count is None for cell in code)


def test_the_notebook_runs_on_the_generated_catalog(evaluated, monkeypatch):
    artifacts, report, _, _ = evaluated
    monkeypatch.setenv("LOOKBOOK_ARTIFACTS_DIR", str(artifacts))
    monkeypatch.delenv("LOOKBOOK_CONFIG", raising=False)
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(ROOT)}}).execute()
    text = "\n".join(output.get("text", "") for cell in notebook.cells if cell.cell_type == "code"
                     for output in cell.outputs if output.output_type == "stream")
    newest = max((artifacts / "reports").iterdir())
    assert f"report {newest}" in text
    assert "overall (micro)" in text and "its queries were taken for:" in text
    images = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs
              if "image/png" in output.get("data", {})]
    assert len(images) >= 3  # the report's pictures, and the class's failure strip
