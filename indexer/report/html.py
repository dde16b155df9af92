"""The evaluation report as one self-contained HTML page: inline style, pictures embedded as base64 PNG."""
from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from indexer.evaluation.protocol import METRICS, Evaluation
from indexer.report.baselines import BASELINES_HEADING, baseline_tables, baselines_intro
from indexer.report.compare import comparison_rows
from indexer.report.text import definitions, metric_labels, percent, protocol_value

if TYPE_CHECKING:
    from indexer.report.files import Picture

STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 72em; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { padding: 0.25em 0.7em; border-bottom: 1px solid #ddd; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
tr.total td { font-weight: 600; border-top: 2px solid #888; }
td.bad { background: #fde0dd; } td.good { background: #e5f5e0; }
figure { margin: 1em 0 2em; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.9em; }
"""


def _e(text: object) -> str:
    return html.escape(str(text))


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], footer: Sequence[Sequence[str]] = (),
           shade: Any = None) -> str:
    """An HTML table; cells after the first are numeric. ``shade(row, column, text)`` may return a CSS class."""
    parts = ["<table><thead><tr>" + "".join(f"<th>{_e(cell)}</th>" for cell in header) + "</tr></thead><tbody>"]
    for kind, group in (("", rows), ("total", footer)):
        for row in group:
            cells = []
            for column, cell in enumerate(row):
                classes = ["n"] if column else []
                if shade and column and not kind:
                    classes += [name for name in [shade(row, column, cell)] if name]
                cells.append(f"<td class=\"{' '.join(classes)}\">{_e(cell)}</td>" if classes else f"<td>{_e(cell)}</td>")
            parts.append(f"<tr class=\"{kind}\">" + "".join(cells) + "</tr>")
    return "".join(parts) + "</tbody></table>"


def _accuracy_shade(macro_top1: float):
    def shade(row: Sequence[str], column: int, text: str) -> str | None:
        # Colour the top-1 cell: well below or above the macro average.
        if column != 2 or not text.endswith("%") or macro_top1 != macro_top1:
            return None
        value = float(text[:-1]) / 100
        return "bad" if value < macro_top1 - 0.05 else "good" if value > macro_top1 + 0.05 else None
    return shade


def report_html(evaluation: Evaluation, pictures: "Sequence[Picture]", timings: dict[str, float],
                comparison: dict[str, Any] | None = None, baselines: dict[str, Any] | None = None) -> str:
    """The whole report as a standalone HTML document."""
    labels = metric_labels(evaluation.k)
    protocol = "".join(f"<li><b>{_e(key)}</b>: {_e(protocol_value(value))}</li>"
                       for key, value in evaluation.protocol.items())
    meaning = "".join(f"<li><b>{_e(name)}</b>: {_e(text)}</li>" for name, text in definitions(evaluation.protocol).items())
    rows = [(row.name, str(row.queries), *(percent(getattr(row, m)) for m in METRICS)) for row in evaluation.classes]
    with_queries = sum(1 for row in evaluation.classes if row.queries)
    footer = [("overall (micro)", str(evaluation.query_rows.size), *(percent(evaluation.micro[m]) for m in METRICS)),
              (f"macro ({with_queries} classes)", "", *(percent(evaluation.macro[m]) for m in METRICS))]
    body = [f"<h1>kNN evaluation</h1><h2>Protocol</h2><ul>{protocol}</ul><h2>Definitions</h2><ul>{meaning}</ul>",
            "<h2>Per class</h2>",
            _table(("class", "queries", *labels.values()), rows, footer, _accuracy_shade(evaluation.macro["top1"]))]
    pairs = evaluation.confused_pairs()
    body.append("<h2>Most confused pairs</h2>" + (_table(
        ("true class", "predicted as", "queries", "share of the class"),
        [(p["true"], p["predicted"], str(p["count"]), percent(p["share"])) for p in pairs]) if pairs
        else "<p>No query was misclassified.</p>"))
    if evaluation.sweep:
        keys = ("top1", "top5", "macro_top1", "macro_top5", "precision_at_k", "recall_at_k")
        body.append("<h2>Accuracy versus k</h2>" + _table(
            ("k", "top-1", "top-5", "macro top-1", "macro top-5", "P@k", "R@k"),
            [(str(row["k"]), *(percent(row[key]) for key in keys)) for row in evaluation.sweep]))
    if baselines is not None:
        header, totals, class_header, classes = baseline_tables(baselines, evaluation)
        body.append(f"<h2>{BASELINES_HEADING}</h2><p>{_e(baselines_intro(baselines))}</p>" + _table(header, totals)
                    + "<p>Top-1 per class:</p>" + _table(class_header, classes))
    if comparison is not None:
        header, compared, totals = comparison_rows(comparison)
        changed = "".join(f"<li>{_e(key)}: {_e(protocol_value(pair['current']))} (was "
                          f"{_e(protocol_value(pair['other']))})</li>"
                          for key, pair in comparison["protocol_differences"].items()) or "<li>same protocol</li>"
        body.append(f"<h2>Compared with an earlier report</h2><p>Then: <code>{_e(comparison['other'])}</code>; "
                    f"changes in percentage points, now minus then.</p><ul>{changed}</ul>"
                    + _table(header, compared, totals))
    for picture in pictures:
        data = base64.b64encode(picture.png).decode("ascii")
        body.append(f"<figure><img alt=\"{_e(picture.caption)}\" src=\"data:image/png;base64,{data}\">"
                    f"<figcaption>{_e(picture.caption)}</figcaption></figure>")
    if timings:
        body.append("<h2>Time</h2><ul>" + "".join(f"<li>{_e(stage.replace('_', ' '))}: {seconds:.2f} s</li>"
                                                   for stage, seconds in timings.items()) + "</ul>")
    return ("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>kNN evaluation</title>"
            f"<style>{STYLE}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")
