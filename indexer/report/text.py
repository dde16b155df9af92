"""Evaluation reports as text: the terminal table, the Markdown report, and evaluation.json / evaluation.md.

The report's files in ``reports/<timestamp>/`` are written by ``indexer.report.files``; the Markdown
and the numbers' formatting live here so that every file says the same thing.
"""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

from indexer.evaluation.protocol import METRICS, Evaluation
from indexer.index import write_atomically

log = logging.getLogger(__name__)

JSON_NAME = "evaluation.json"
MARKDOWN_NAME = "evaluation.md"


def metric_labels(k: int) -> dict[str, str]:
    """Column headings of the metrics, with k filled in."""
    return {"top1": "top-1", "top3": "top-3", "top5": "top-5", "precision_at_k": f"P@{k}",
            "recall_at_k": f"R@{k}", "map_at_r": "mAP@R"}


def definitions(protocol: dict[str, Any]) -> dict[str, str]:
    """What each number means, for the head of every report."""
    k = protocol["k"]
    return {
        "top-n": f"kNN accuracy: the true class is among the n best-ranked classes. Classes rank by their vote of "
                 f"the {k} nearest index items ({protocol['weighting']}); classes without a vote (and equal votes) "
                 "by their nearest index item; then by class number. Without that ranking of the classes "
                 f"left without a vote, top-n could not exceed R@{k}",
        f"P@{k}": f"precision@{k}: the share of the {k} nearest index items that are of the query's class "
                  "(a missing neighbour counts as wrong)",
        f"R@{k}": f"recall@{k} as the retrieval literature defines it, i.e. the hit rate: 1 when at least one of "
                  f"the {k} nearest index items is of the query's class, else 0",
        "mAP@R": "mean average precision at R (Musgrave et al. 2020): R = index items of the query's class "
                 "(itself excluded); AP@R = (1/R) × the sum over ranks i ≤ R of P(i)·rel(i), where P(i) is the "
                 "precision of the first i and rel(i) is 1 for an item of the class; equal similarities rank "
                 "the wrong item first",
        "micro / macro": "micro: mean over all queries; macro: mean over the classes that have queries",
    }


def percent(value: float | None) -> str:
    """A fraction as a percentage with one decimal, '-' for a missing value."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{100 * value:.1f}%"


def _class_cells(evaluation: Evaluation) -> list[tuple[str, ...]]:
    return [(row.name, str(row.queries), *(percent(getattr(row, m)) for m in METRICS)) for row in evaluation.classes]


def _summary_rows(evaluation: Evaluation) -> list[tuple[str, ...]]:
    with_queries = sum(1 for row in evaluation.classes if row.queries)
    return [
        ("overall (micro)", str(evaluation.query_rows.size), *(percent(evaluation.micro[m]) for m in METRICS)),
        (f"macro ({with_queries} classes)", "", *(percent(evaluation.macro[m]) for m in METRICS)),
    ]


def aligned_table(header: tuple[str, ...], rows: list[tuple[str, ...]], footer: list[tuple[str, ...]]) -> str:
    """Plain-text columns: the first left-aligned, the others right-aligned, rules above and below the body."""
    lines = [header, *rows, *footer]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]

    def line(cells: tuple[str, ...]) -> str:
        return "  ".join([cells[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(cells[1:], widths[1:])])

    rule = "-" * len(line(header))
    return "\n".join([line(header), rule, *map(line, rows), *([rule] if footer else []), *map(line, footer)])


def evaluation_table(evaluation: Evaluation) -> str:
    """Per-class accuracy and retrieval metrics, then the overall and macro lines, as aligned plain text."""
    header = ("class", "n", *metric_labels(evaluation.k).values())
    return aligned_table(header, _class_cells(evaluation), _summary_rows(evaluation))


def markdown_cell(text: object) -> str:
    """Text safe inside a Markdown table cell."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def protocol_value(value: object) -> str:
    """A protocol entry in words."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value))
    return str(value)


def _markdown_table(header: tuple[str, ...], rows: list[tuple[str, ...]], numeric_from: int = 1) -> list[str]:
    align = ["---" if i < numeric_from else "---:" for i in range(len(header))]
    return ["| " + " | ".join(map(markdown_cell, header)) + " |", "|" + "|".join(align) + "|"] + [
        "| " + " | ".join(map(markdown_cell, row)) + " |" for row in rows
    ]


def evaluation_markdown(evaluation: Evaluation, pictures: dict[str, str] | None = None,
                        timings: dict[str, float] | None = None) -> str:
    """The whole report as Markdown: protocol, definitions, per-class table, totals, confusions, k sweep, timings.

    ``pictures`` maps a caption to an image path relative to the Markdown file; ``timings`` (seconds per
    stage) default to the evaluation's own.
    """
    timings = evaluation.timings if timings is None else timings
    labels = metric_labels(evaluation.k)
    lines = ["# kNN evaluation", "", "## Protocol", ""]
    lines += [f"- **{key}**: {protocol_value(value)}" for key, value in evaluation.protocol.items()]
    lines += ["", "## Definitions", ""]
    lines += [f"- **{name}**: {text}" for name, text in definitions(evaluation.protocol).items()]
    lines += ["", "## Per class", ""]
    lines += _markdown_table(("class", "queries", *labels.values()), _class_cells(evaluation))
    lines += ["", "## Totals", ""]
    lines += [f"- **{name}**" + (f" over {n} queries" if n else "") + ": "
              + ", ".join(f"{label} {value}" for label, value in zip(labels.values(), values))
              for name, n, *values in _summary_rows(evaluation)]
    pairs = evaluation.confused_pairs()
    lines += ["", "## Most confused pairs", ""]
    lines += _markdown_table(("true class", "predicted as", "queries", "share of the class"),
                             [(p["true"], p["predicted"], str(p["count"]), percent(p["share"])) for p in pairs],
                             numeric_from=2) if pairs else ["No query was misclassified."]
    if evaluation.sweep:
        lines += ["", "## Accuracy versus k", ""]
        lines += _markdown_table(("k", "top-1", "top-5", "macro top-1", "macro top-5", "P@k", "R@k"), [
            (str(row["k"]), *(percent(row[key]) for key in
                              ("top1", "top5", "macro_top1", "macro_top5", "precision_at_k", "recall_at_k")))
            for row in evaluation.sweep
        ], numeric_from=0)
    if pictures:
        lines += ["", "## Pictures", ""]
        lines += [f"![{markdown_cell(caption)}]({path})" for caption, path in pictures.items()]
    if timings:
        lines += ["", "## Time", ""]
        lines += [f"- {stage.replace('_', ' ')}: {seconds:.2f} s" for stage, seconds in timings.items()]
    return "\n".join(lines) + "\n"


def json_ready(value: object) -> object:
    """NaN is not JSON: write it as null; tuples become lists."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {key: json_ready(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(item) for item in value]
    return value


def json_text(data: dict[str, Any]) -> str:
    """Indented JSON with NaN written as null."""
    return json.dumps(json_ready(data), indent=2, allow_nan=False) + "\n"


def write_text(path: Path, text: str) -> None:
    """Write a UTF-8 text file atomically."""
    write_atomically(path, lambda temporary: temporary.write_text(text, encoding="utf-8"))


def write_evaluation(evaluation: Evaluation, directory: str | Path) -> tuple[Path, Path]:
    """Write evaluation.json and evaluation.md into ``directory``, each atomically; returns their paths."""
    directory = Path(directory)
    json_path, md_path = directory / JSON_NAME, directory / MARKDOWN_NAME
    write_text(json_path, json_text(evaluation.to_dict()))
    write_text(md_path, evaluation_markdown(evaluation))
    log.info("wrote %s and %s", json_path, md_path)
    return json_path, md_path
