"""The report directory ``reports/<timestamp>/``: report.md, report.json, classes.csv, report.html and PNGs.

Each file is written atomically; report.json is the machine-readable whole (``read_report`` reads it
back, for ``--compare`` and notebooks) and report.html embeds the pictures, so it can be mailed alone.
"""
from __future__ import annotations

import csv
import io
import json
import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from config import LookbookError
from indexer.evaluation.protocol import METRICS, Evaluation
from indexer.index import write_atomically
from indexer.report.baselines import baselines_markdown
from indexer.report.compare import comparison_markdown
from indexer.report.html import report_html
from indexer.report.text import definitions, evaluation_markdown, json_text, write_text

log = logging.getLogger(__name__)

REPORT_FORMAT = "lookbook-knn-report"
REPORT_VERSION = 1
JSON_NAME, MARKDOWN_NAME, CSV_NAME, HTML_NAME = "report.json", "report.md", "classes.csv", "report.html"
COMPARISON_NAME = "comparison.json"
TIMESTAMP = "%Y%m%d-%H%M%S"


class ReportFileError(LookbookError, ValueError):
    """A report file or directory that is missing or not a Lookbook evaluation report."""


@dataclass(frozen=True)
class Picture:
    """One PNG of the report."""

    name: str  # file name inside the report directory
    caption: str
    png: bytes


def new_report_directory(base: str | Path, now: datetime | None = None) -> Path:
    """Create and return base/<UTC timestamp>/, adding -2, -3 ... when a report of that second exists."""
    base = Path(base)
    stamp = (now or datetime.now(timezone.utc)).strftime(TIMESTAMP)
    for attempt in range(1, 1000):
        directory = base / (stamp if attempt == 1 else f"{stamp}-{attempt}")
        try:
            directory.mkdir(parents=True)
            return directory
        except FileExistsError:
            continue
    raise ReportFileError(f"{base}: could not find a free report directory name for {stamp}")


def report_data(evaluation: Evaluation, pictures: list[Picture], timings: dict[str, float]) -> dict[str, Any]:
    """What report.json holds: the evaluation summary, the definitions, the pictures and the timings."""
    return {
        "format": REPORT_FORMAT,
        "format_version": REPORT_VERSION,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **evaluation.to_dict(),
        "definitions": definitions(evaluation.protocol),
        "pictures": {picture.name: picture.caption for picture in pictures},
        "timings_s": timings,
    }


def classes_csv(evaluation: Evaluation) -> str:
    """One row per class (fractions; empty where a class has no value), then the micro and macro rows."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["class", "queries", *METRICS])

    def cells(values: list[float | None]) -> list[str]:
        return ["" if value is None or value != value else f"{value:.6f}" for value in values]

    for row in evaluation.classes:
        writer.writerow([row.name, row.queries, *cells([getattr(row, m) for m in METRICS])])
    writer.writerow(["(micro)", evaluation.query_rows.size, *cells([evaluation.micro[m] for m in METRICS])])
    writer.writerow(["(macro)", "", *cells([evaluation.macro[m] for m in METRICS])])
    return buffer.getvalue()


def write_report_files(
    evaluation: Evaluation, directory: str | Path, pictures: list[Picture], timings: dict[str, float],
    comparison: dict[str, Any] | None = None, baselines: dict[str, Any] | None = None,
) -> list[Path]:
    """Write the PNGs, report.md, report.json, classes.csv, report.html (and comparison.json) into directory;
    ``baselines`` (indexer.report.baselines, same protocol) become a table beside this run's numbers."""
    directory = Path(directory)
    paths = []
    for picture in pictures:
        path = directory / picture.name
        write_atomically(path, lambda temporary, data=picture.png: temporary.write_bytes(data))
        paths.append(path)
    data = report_data(evaluation, pictures, timings)
    if baselines is not None:
        data["baselines"] = baselines["baselines"]
    markdown = evaluation_markdown(evaluation, {p.caption: p.name for p in pictures}, timings)
    files = {MARKDOWN_NAME: markdown, JSON_NAME: json_text(data), CSV_NAME: classes_csv(evaluation),
             HTML_NAME: report_html(evaluation, pictures, timings, comparison, baselines)}
    if baselines is not None:
        files[MARKDOWN_NAME] += baselines_markdown(baselines, evaluation)
    if comparison is not None:
        files[MARKDOWN_NAME] += comparison_markdown(comparison)
        files[COMPARISON_NAME] = json_text(comparison)
    for name, text in files.items():
        write_text(directory / name, text)
        paths.append(directory / name)
    log.info("wrote the report to %s", directory)
    return paths


def read_report(path: str | Path) -> dict[str, Any]:
    """A report's data from its directory, its report.json, or an evaluation.json; ReportFileError if it is none."""
    path = Path(path)
    if path.is_dir():
        path = path / JSON_NAME
    if not path.is_file():
        raise ReportFileError(f"{path}: no such report; give a report directory (reports/<timestamp>/) or its "
                              f"{JSON_NAME}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ReportFileError(f"{path}: not a JSON report ({error})") from None
    missing = [key for key in ("protocol", "overall", "macro", "classes") if not isinstance(data, dict) or key not in data]
    if missing:
        raise ReportFileError(f"{path}: not a Lookbook evaluation report (missing {', '.join(missing)})")
    if not all(isinstance(row, dict) and "name" in row and "queries" in row for row in data["classes"]):
        raise ReportFileError(f"{path}: 'classes' must be a list of objects with 'name' and 'queries'")
    data["source"] = str(path)
    return data


def latest_report(base: str | Path) -> Path:
    """The newest report directory under base (by name: names are timestamps)."""
    base = Path(base)
    found = sorted(p for p in base.glob("*/") if (p / JSON_NAME).is_file()) if base.is_dir() else []
    if not found:
        raise ReportFileError(f"{base}: no reports yet; run `python manage.py evaluate` to write one")
    return max(found, key=lambda p: (p.name[:len("YYYYmmdd-HHMMSS")], len(p.name), p.name))
