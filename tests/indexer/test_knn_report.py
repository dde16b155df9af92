"""The report directory: every file exists and parses, pictures are embedded, --compare works on known reports."""
from __future__ import annotations

import csv
import dataclasses
import io
import json
from datetime import datetime, timezone

import numpy as np
import pytest

from config import EvaluateConfig, IndexConfig
from indexer.embeddings_file import read_embeddings
from indexer.evaluation.protocol import evaluate_knn
from indexer.report.baselines import baseline_entry, read_baselines, write_baselines
from indexer.report.files import ReportFileError, latest_report, new_report_directory, read_report
from indexer.report.run import rerun_evaluation, write_knn_report
from indexer.report.text import percent
from tests.indexer.conftest import unit_rows, write_embeddings

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SETTINGS = EvaluateConfig(k_sweep=(1, 2, 5), map_points=15, failure_classes=2, failures_per_class=3)
INDEX = IndexConfig(gpu="off")


def image_loader(broken_row: int):
    """Catalog images as small arrays; one row fails like an unreadable file."""
    def load(row: int) -> np.ndarray:
        if row == broken_row:
            raise OSError(f"image of row {row} is truncated")
        return np.full((12, 10, 3), (row * 37) % 255, dtype=np.uint8)
    return load


@pytest.fixture(scope="module")
def vectors(tmp_path_factory):
    """The same 60 x 8 file as the embeddings_path fixture, written once for the module."""
    rng = np.random.default_rng(0)
    splits = [("train", "train", "train", "val", "test")[row % 5] for row in range(60)]
    path = write_embeddings(tmp_path_factory.mktemp("vectors") / "embeddings.h5", unit_rows(rng, 60, 8),
                            np.arange(60) % 3, splits)
    return read_embeddings(path)


@pytest.fixture(scope="module")
def report(vectors, tmp_path_factory):
    # Row 0 is a train item and a neighbour of many queries: its tile is drawn "unreadable".
    return write_knn_report(vectors, SETTINGS, INDEX, 3, tmp_path_factory.mktemp("first") / "reports",
                            load_image=image_loader(0))


def test_every_report_file_exists_and_parses(report, vectors):
    directory = report.directory
    names = sorted(path.name for path in directory.iterdir())
    assert {"report.md", "report.json", "classes.csv", "report.html", "confusion.png", "class-accuracy.png",
            "accuracy-vs-k.png", "embedding-map.png"} <= set(names)
    assert not [name for name in names if name.endswith(".tmp")]
    strips = [name for name in names if name.startswith("failures-")]
    assert 1 <= len(strips) <= 2
    pngs = [name for name in names if name.endswith(".png")]
    assert all((directory / name).read_bytes().startswith(PNG_MAGIC) for name in pngs)

    data = json.loads((directory / "report.json").read_text())
    assert data["format"] == "lookbook-knn-report" and data["protocol"]["k"] == 3
    assert data["protocol"]["mode"] == "held-out split" and data["protocol"]["self_matches_excluded"] is False
    assert set(data["pictures"]) == set(pngs)
    assert [row["k"] for row in data["k_sweep"]] == [1, 2, 3, 5]
    assert data["overall"]["queries"] == 12 and data["overall"]["top1"] == pytest.approx(report.evaluation.top1)
    assert {"search", "vote_and_metrics", "map_at_r", "charts", "embedding_map", "failure_strips"} <= set(data["timings_s"])
    assert "hit rate" in data["definitions"]["R@3"]

    rows = list(csv.DictReader(io.StringIO((directory / "classes.csv").read_text())))
    assert [row["class"] for row in rows] == vectors.class_names + ["(micro)", "(macro)"]
    assert float(rows[-2]["top1"]) == pytest.approx(report.evaluation.top1, abs=1e-6)

    markdown = (directory / "report.md").read_text()
    for heading in ("## Protocol", "## Definitions", "## Per class", "## Most confused pairs", "## Accuracy versus k",
                    "## Pictures", "## Time"):
        assert heading in markdown
    assert markdown.index("## Protocol") < markdown.index("## Per class")
    assert "(confusion.png)" in markdown

    page = (directory / "report.html").read_text()
    assert page.count('src="data:image/png;base64,') == len(pngs)
    assert "<table>" in page and "http" not in page.replace("http-equiv", "")  # nothing fetched from elsewhere


def test_failure_strips_come_from_the_worst_classes(report):
    worst = sorted((row.top1, number) for number, row in enumerate(report.evaluation.classes))[0][1]
    name = report.evaluation.class_names[worst]
    assert (report.directory / f"failures-1-{name}.png").is_file()


def test_no_loader_means_no_strips_and_no_map_when_asked(vectors, tmp_path):
    settings = EvaluateConfig(k_sweep=(), map_points=0)
    report = write_knn_report(vectors, settings, INDEX, 3, tmp_path)
    names = {path.name for path in report.directory.iterdir()}
    assert not any(name.startswith("failures-") for name in names)
    assert "embedding-map.png" not in names and "accuracy-vs-k.png" not in names  # a sweep of one k is no curve
    assert {"embedding_map", "failure_strips"}.isdisjoint(report.timings)


def test_compare_with_an_earlier_report(vectors, report, tmp_path):
    settings = EvaluateConfig(k_sweep=(), map_points=0, failure_classes=0)
    second = write_knn_report(vectors, settings, INDEX, 1, tmp_path / "reports", compare_with=report.directory)
    comparison = json.loads((second.directory / "comparison.json").read_text())
    assert comparison["other"] == str(report.directory / "report.json")
    assert comparison["protocol_differences"]["k"] == {"current": 1, "other": 3}
    first_rows = {row.name: row for row in report.evaluation.classes}
    for row in comparison["classes"]:
        before = first_rows[row["name"]].top1
        now = second.evaluation.classes[second.evaluation.class_names.index(row["name"])].top1
        assert row["top1"]["change"] == pytest.approx(now - before)
    assert "## Compared with an earlier report" in (second.directory / "report.md").read_text()
    assert "Compared with an earlier report" in (second.directory / "report.html").read_text()
    assert latest_report(tmp_path / "reports") == second.directory


def test_a_bad_compare_path_fails_before_any_work(vectors, tmp_path):
    with pytest.raises(ReportFileError, match="no such report"):
        write_knn_report(vectors, SETTINGS, INDEX, 3, tmp_path / "reports", compare_with=tmp_path / "nowhere")
    assert not (tmp_path / "reports").exists()


def test_read_report_names_what_is_wrong(tmp_path):
    (tmp_path / "broken.json").write_text("{not json")
    (tmp_path / "other.json").write_text('{"protocol": {}}')
    with pytest.raises(ReportFileError, match=r"broken.json: not a JSON report"):
        read_report(tmp_path / "broken.json")
    with pytest.raises(ReportFileError, match=r"other.json: not a Lookbook evaluation report \(missing overall"):
        read_report(tmp_path / "other.json")
    with pytest.raises(ReportFileError, match="no reports yet"):
        latest_report(tmp_path)


def test_report_directories_never_collide(tmp_path):
    moment = datetime(2024, 5, 1, 12, 0, 0, tzinfo=timezone.utc)
    names = [new_report_directory(tmp_path, moment).name for _ in range(3)]
    assert names == ["20240501-120000", "20240501-120000-2", "20240501-120000-3"]


def test_rerun_reproduces_the_report_and_refuses_other_embeddings(report, vectors, make_embeddings):
    data = read_report(report.directory)
    again = rerun_evaluation(vectors, data)
    assert again.micro == pytest.approx(report.evaluation.micro, nan_ok=True)
    assert again.neighbours.tolist() == report.evaluation.neighbours.tolist()
    other = read_embeddings(make_embeddings("other.h5", seed=9))
    with pytest.raises(Exception, match="does not reproduce the report"):
        rerun_evaluation(other, data)


def test_baselines_of_the_same_protocol_sit_beside_the_run(vectors, tmp_path):
    settings = EvaluateConfig(k_sweep=(), map_points=0, failure_classes=0)
    shuffled = evaluate_knn(dataclasses.replace(vectors, embeddings=vectors.embeddings[::-1].copy()),
                            settings.query_split, settings.index_splits, 3, "ip", use_gpu="off")
    write_baselines(tmp_path / "baselines.json", shuffled.protocol, [baseline_entry("shuffled", shuffled)],
                    "no training")
    baselines = read_baselines(tmp_path / "baselines.json")
    report = write_knn_report(vectors, settings, INDEX, 3, tmp_path / "reports", baselines=baselines)
    markdown = (report.directory / "report.md").read_text()
    section = markdown[markdown.index("## Baselines (same protocol)"):]
    assert f"| shuffled | {percent(shuffled.top1)} |" in section
    assert f"| this run | {percent(report.evaluation.top1)} |" in section
    for row in shuffled.classes:  # each class's top-1, the baseline's column then this run's
        mine = report.evaluation.classes[report.evaluation.class_names.index(row.name)]
        assert f"| {row.name} | {percent(row.top1)} | {percent(mine.top1)} |" in section
    assert "Baselines (same protocol)" in (report.directory / "report.html").read_text()
    assert json.loads((report.directory / "report.json").read_text())["baselines"][0]["name"] == "shuffled"

    # Another k is another protocol: the numbers would not compare, so the report leaves them out.
    other = write_knn_report(vectors, settings, INDEX, 1, tmp_path / "reports", baselines=baselines)
    assert "Baselines" not in (other.directory / "report.md").read_text()


def test_an_unreadable_baselines_file_leaves_the_report_alone(tmp_path):
    assert read_baselines(tmp_path / "missing.json") is None
    (tmp_path / "baselines.json").write_text("{not json")
    assert read_baselines(tmp_path / "baselines.json") is None
    (tmp_path / "baselines.json").write_text('{"format": "something else"}')
    assert read_baselines(tmp_path / "baselines.json") is None
