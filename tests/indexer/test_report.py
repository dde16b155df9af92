"""Evaluation reports: the terminal table, and evaluation.json / evaluation.md written whole."""
from __future__ import annotations

import json

import numpy as np
import pytest

from indexer.embeddings_file import read_embeddings
from indexer.evaluation.protocol import evaluate_knn
from indexer.report.text import evaluation_table, write_evaluation
from tests.indexer.conftest import unit_rows, write_embeddings

NAMES = ["T-shirt/top", "Trouser", "Bag|Case", "Ankle boot"]


@pytest.fixture
def evaluation(tmp_path):
    rng = np.random.default_rng(2)
    labels = np.array([0, 1, 2] * 10)  # "Ankle boot" has no items at all
    splits = ["train", "train", "train", "test"] * 7 + ["train", "test"]  # 8 queries, every class in both
    path = write_embeddings(tmp_path / "embeddings.h5", unit_rows(rng, 30, 6), labels, splits, NAMES)
    return evaluate_knn(read_embeddings(path), "test", ("train",), k=3)


def test_table_lists_every_class_then_totals(evaluation):
    lines = evaluation_table(evaluation).splitlines()
    assert lines[0].split() == ["class", "n", "top-1", "top-3", "top-5", "P@3", "R@3", "mAP@R"]
    body = lines[2:2 + len(NAMES)]
    assert [line.split("  ")[0].strip() for line in body] == NAMES
    assert body[3].split()[-7:] == ["0"] + ["-"] * 6  # no queries: no accuracy
    assert lines[-2].startswith("overall (micro)") and f"{100 * evaluation.top1:.1f}%" in lines[-2]
    assert lines[-1].startswith("macro (3 classes)")
    assert len({len(line) for line in lines[:2]}) == 1  # the rule is as wide as the header


def test_written_files_parse_and_hold_one_row_per_class(evaluation, tmp_path):
    out = tmp_path / "reports" / "fashion"
    json_path, md_path = write_evaluation(evaluation, out)
    assert (json_path.name, md_path.name) == ("evaluation.json", "evaluation.md")
    assert sorted(p.name for p in out.iterdir()) == ["evaluation.json", "evaluation.md"]  # no temporaries

    data = json.loads(json_path.read_text())
    assert data["protocol"]["query_split"] == "test" and data["protocol"]["index_splits"] == ["train"]
    assert data["overall"]["top1"] == pytest.approx(evaluation.top1)
    assert data["overall"]["queries"] == 8
    assert [row["name"] for row in data["classes"]] == NAMES
    assert data["classes"][3] == {"name": "Ankle boot", "queries": 0, "top1": None, "top3": None, "top5": None,
                                  "precision_at_k": None, "recall_at_k": None, "map_at_r": None}

    markdown = md_path.read_text()
    protocol_at, table_at = markdown.index("## Protocol"), markdown.index("| class |")
    assert protocol_at < table_at and "similarity-weighted vote" in markdown[protocol_at:table_at]
    per_class = markdown[markdown.index("## Per class"):markdown.index("## Totals")]
    rows = [line for line in per_class.splitlines() if line.startswith("| ") and not line.startswith("| class")]
    assert len(rows) == len(NAMES)
    assert rows[2].startswith("| Bag\\|Case |")  # a '|' in a name does not split the cell
    assert "**overall (micro)**" in markdown


def test_rewriting_replaces_the_files(evaluation, tmp_path):
    json_path, _ = write_evaluation(evaluation, tmp_path)
    json_path.write_text("stale")
    write_evaluation(evaluation, tmp_path)
    assert json.loads(json_path.read_text())["protocol"]["k"] == 3
