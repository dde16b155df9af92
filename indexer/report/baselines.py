"""Baselines: other embeddings of the same catalog, evaluated with the same protocol as a run.

`python -m benchmarks.bench_accuracy` writes <artifacts>/baselines.json (raw pixels, the untrained network,
an autoencoder, a cross-entropy classifier, triplet loss alone, Lookbook's recipe); every later evaluation
report of the same protocol shows them beside its own numbers, so an analyst sees what training buys.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from indexer.evaluation.protocol import Evaluation
from indexer.report.text import _markdown_table, json_text, percent, write_text

log = logging.getLogger(__name__)

BASELINES_FORMAT = "lookbook-baselines"
# The protocol entries that must agree before two evaluations' numbers sit in one table.
SAME_PROTOCOL = ("mode", "query_split", "index_splits", "k", "metric", "weighting", "queries", "index_items")
SUMMARY = ("top1", "top5", "map_at_r", "macro_top1")
SUMMARY_LABELS = ("top-1", "top-5", "mAP@R", "macro top-1")


def baseline_entry(name: str, evaluation: Evaluation, note: str = "") -> dict[str, Any]:
    """One baseline as baselines.json keeps it: its totals and each class's top-1."""
    return {
        "name": name,
        "note": note,
        "top1": evaluation.micro["top1"],
        "top5": evaluation.micro["top5"],
        "map_at_r": evaluation.micro["map_at_r"],
        "macro_top1": evaluation.macro["top1"],
        "class_top1": {row.name: row.top1 for row in evaluation.classes},
    }


def write_baselines(path: Path, protocol: dict[str, Any], entries: list[dict[str, Any]], setup: str) -> None:
    """Write baselines.json atomically; ``setup`` says how the baselines were trained."""
    write_text(path, json_text({"format": BASELINES_FORMAT, "protocol": protocol, "setup": setup,
                                "baselines": entries}))


def read_baselines(path: Path) -> dict[str, Any] | None:
    """baselines.json, or None when there is none or it is not one (logged: a report goes on without it)."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        log.warning("%s: not readable as JSON (%s); the report leaves the baselines out", path, error)
        return None
    if not isinstance(data, dict) or data.get("format") != BASELINES_FORMAT:
        log.warning("%s: not a %s file; the report leaves the baselines out", path, BASELINES_FORMAT)
        return None
    return data


def matching_baselines(baselines: dict[str, Any] | None, protocol: dict[str, Any]) -> dict[str, Any] | None:
    """The baselines when they were measured with this protocol, else None (logged with the difference)."""
    if baselines is None:
        return None
    differences = [key for key in SAME_PROTOCOL if baselines["protocol"].get(key) != protocol.get(key)]
    if differences:
        log.info("The baselines were measured with another protocol (%s); the report leaves them out",
                 ", ".join(f"{key} {baselines['protocol'].get(key)!r} here {protocol.get(key)!r}"
                           for key in differences))
        return None
    return baselines


def baseline_tables(baselines: dict[str, Any], evaluation: Evaluation) -> tuple[
        tuple[str, ...], list[tuple[str, ...]], tuple[str, ...], list[tuple[str, ...]]]:
    """(header, rows) of the totals, one row a baseline and the last this run; then (header, rows) of
    each class's top-1, one column a baseline and the last this run."""
    entries = list(baselines["baselines"]) + [baseline_entry("this run", evaluation)]
    totals = [(entry["name"], *(percent(entry[key]) for key in SUMMARY)) for entry in entries]
    classes = [(row.name, *(percent(entry["class_top1"].get(row.name)) for entry in entries))
               for row in evaluation.classes]
    return ("embedding", *SUMMARY_LABELS), totals, ("class", *(entry["name"] for entry in entries)), classes


BASELINES_HEADING = "Baselines (same protocol)"


def baselines_intro(baselines: dict[str, Any]) -> str:
    """The sentence above the baseline tables: where they come from."""
    return (f"Other embeddings of this catalog, evaluated as this run was ({baselines['setup']}); "
            "`python -m benchmarks.bench_accuracy` measures them.")


def baselines_markdown(baselines: dict[str, Any], evaluation: Evaluation) -> str:
    """The report's baselines section in Markdown."""
    header, totals, class_header, classes = baseline_tables(baselines, evaluation)
    lines = ["", f"## {BASELINES_HEADING}", "", baselines_intro(baselines), ""]
    lines += _markdown_table(header, totals) + ["", "Top-1 per class:", ""] + _markdown_table(class_header, classes)
    return "\n".join(lines) + "\n"
