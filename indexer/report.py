"""Evaluation reports: a plain-text table for the terminal, and evaluation.json / evaluation.md on disk."""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path

from indexer.evaluation import Evaluation
from indexer.index import write_atomically

log = logging.getLogger(__name__)

JSON_NAME = "evaluation.json"
MARKDOWN_NAME = "evaluation.md"


def _percent(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "-"
    return f"{100 * value:.1f}%"


def _summary_rows(evaluation: Evaluation) -> list[tuple[str, str, str, str]]:
    with_queries = sum(1 for row in evaluation.classes if row.queries)
    return [
        ("overall (micro)", str(evaluation.query_rows.size), _percent(evaluation.top1), _percent(evaluation.top5)),
        (f"macro ({with_queries} classes)", "", _percent(evaluation.macro_top1), _percent(evaluation.macro_top5)),
    ]


def evaluation_table(evaluation: Evaluation) -> str:
    """Per-class top-1 / top-5 accuracy, then the overall and macro lines, as aligned plain text."""
    header = ("class", "n", "top-1", "top-5")
    rows = [(row.name, str(row.queries), _percent(row.top1), _percent(row.top5)) for row in evaluation.classes]
    summary = _summary_rows(evaluation)
    widths = [max(len(line[i]) for line in [header, *rows, *summary]) for i in range(4)]

    def line(cells: tuple[str, ...]) -> str:
        return "  ".join([cells[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(cells[1:], widths[1:])])

    rule = "-" * len(line(header))
    return "\n".join([line(header), rule, *map(line, rows), rule, *map(line, summary)])


def _markdown_cell(text: str) -> str:
    return text.replace("|", "\\|")


def _protocol_value(value: object) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value))
    return str(value)


def evaluation_markdown(evaluation: Evaluation) -> str:
    """The evaluation as Markdown: the protocol as a list, then one table row per class, then the totals."""
    lines = ["# kNN evaluation", "", "## Protocol", ""]
    lines += [f"- **{key}**: {_protocol_value(value)}" for key, value in evaluation.protocol.items()]
    lines += ["", "## Accuracy per class", "", "| class | queries | top-1 | top-5 |", "|---|---:|---:|---:|"]
    lines += [
        f"| {_markdown_cell(row.name)} | {row.queries} | {_percent(row.top1)} | {_percent(row.top5)} |"
        for row in evaluation.classes
    ]
    lines += ["", "## Totals", ""]
    lines += [f"- **{name}**: top-1 {top1}, top-5 {top5}" + (f" over {n} queries" if n else "")
              for name, n, top1, top5 in _summary_rows(evaluation)]
    return "\n".join(lines) + "\n"


def _json_ready(value: object) -> object:
    """NaN is not JSON: write it as null."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {key: _json_ready(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_json_ready(item) for item in value]
    return value


def write_evaluation(evaluation: Evaluation, directory: str | Path) -> tuple[Path, Path]:
    """Write evaluation.json and evaluation.md into ``directory``, each atomically; returns their paths."""
    directory = Path(directory)
    json_path, md_path = directory / JSON_NAME, directory / MARKDOWN_NAME
    text = json.dumps(_json_ready(evaluation.to_dict()), indent=2, allow_nan=False) + "\n"
    write_atomically(json_path, lambda temporary: temporary.write_text(text, encoding="utf-8"))
    markdown = evaluation_markdown(evaluation)
    write_atomically(md_path, lambda temporary: temporary.write_text(markdown, encoding="utf-8"))
    log.info("wrote %s and %s", json_path, md_path)
    return json_path, md_path
