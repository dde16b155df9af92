"""Two evaluation reports side by side: per-class, micro and macro differences, and what changed in the protocol.

Works on the dictionaries that ``indexer.report.files.read_report`` returns (report.json, or the older
evaluation.json); metrics a report lacks show as missing rather than as zero.
"""
from __future__ import annotations

from typing import Any

from indexer.evaluation.protocol import METRICS
from indexer.report.text import aligned_table, markdown_cell, percent, protocol_value

# Protocol entries that differ between any two runs and say nothing about comparability.
IGNORED_PROTOCOL_KEYS = ("embeddings_file",)


def _pair(current: object, other: object) -> dict[str, float | None]:
    both = isinstance(current, (int, float)) and isinstance(other, (int, float))
    return {"current": current, "other": other, "change": (current - other) if both else None}


def compare_reports(current: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
    """Per-class and overall differences (current - other) of every metric both reports hold."""
    protocol_keys = [key for key in dict.fromkeys([*current["protocol"], *other["protocol"]])
                     if key not in IGNORED_PROTOCOL_KEYS]
    differences = {key: {"current": current["protocol"].get(key), "other": other["protocol"].get(key)}
                   for key in protocol_keys if current["protocol"].get(key) != other["protocol"].get(key)}
    theirs = {row["name"]: row for row in other["classes"]}
    ours = {row["name"]: row for row in current["classes"]}
    names = list(dict.fromkeys([*ours, *theirs]))
    classes = []
    for name in names:
        mine, yours = ours.get(name, {}), theirs.get(name, {})
        classes.append({"name": name, "queries": _pair(mine.get("queries"), yours.get("queries")),
                        **{m: _pair(mine.get(m), yours.get(m)) for m in METRICS}})
    return {
        "current": current.get("source", "current"),
        "other": other.get("source", "other"),
        "k": {"current": current["protocol"].get("k"), "other": other["protocol"].get("k")},
        "protocol_differences": differences,
        "overall": {m: _pair(current["overall"].get(m), other["overall"].get(m)) for m in METRICS},
        "macro": {m: _pair(current["macro"].get(m), other["macro"].get(m)) for m in METRICS},
        "classes": classes,
    }


def _change(pair: dict[str, float | None]) -> str:
    change = pair["change"]
    return "-" if change is None or change != change else f"{100 * change:+.1f}"


def _labels(comparison: dict[str, Any]) -> list[str]:
    k = comparison["k"]["current"]
    return ["top-1", "top-3", "top-5", f"P@{k}", f"R@{k}", "mAP@R"]


def comparison_rows(comparison: dict[str, Any]) -> tuple[tuple[str, ...], list[tuple[str, ...]], list[tuple[str, ...]]]:
    """Header, one row per class and the micro / macro rows: queries, top-1 now, then the change of each metric."""
    header = ("class", "queries", "top-1 now", *(f"Δ {label}" for label in _labels(comparison)))

    def queries(pair: dict) -> str:
        now, before = pair["current"], pair["other"]
        return str(now) if now == before else f"{'-' if now is None else now} (was {'-' if before is None else before})"

    rows = [(row["name"], queries(row["queries"]), percent(row["top1"]["current"]),
             *(_change(row[m]) for m in METRICS)) for row in comparison["classes"]]
    footer = [(name, "", percent(comparison[key]["top1"]["current"]), *(_change(comparison[key][m]) for m in METRICS))
              for name, key in (("overall (micro)", "overall"), ("macro", "macro"))]
    return header, rows, footer


def _protocol_lines(comparison: dict[str, Any]) -> list[str]:
    return [f"{key}: {protocol_value(pair['current'])} (was {protocol_value(pair['other'])})"
            for key, pair in comparison["protocol_differences"].items()]


def comparison_table(comparison: dict[str, Any]) -> str:
    """Plain text: what is compared, protocol differences, then the per-class changes in percentage points."""
    header, rows, footer = comparison_rows(comparison)
    lines = [f"Compared with {comparison['other']} (changes in percentage points, now minus then)"]
    lines += ["  protocol changed: " + line for line in _protocol_lines(comparison)]
    return "\n".join(lines + [aligned_table(header, rows, footer)])


def comparison_markdown(comparison: dict[str, Any]) -> str:
    """The comparison as a Markdown section."""
    header, rows, footer = comparison_rows(comparison)
    lines = ["", "## Compared with an earlier report", "",
             f"Now: `{comparison['current']}`; then: `{comparison['other']}`. Changes in percentage points "
             "(now minus then).", ""]
    protocol = _protocol_lines(comparison)
    lines += ([f"- protocol changed: {markdown_cell(line)}" for line in protocol] or ["- same protocol"]) + [""]
    lines += ["| " + " | ".join(map(markdown_cell, header)) + " |", "|---|" + "---:|" * (len(header) - 1)]
    lines += ["| " + " | ".join(map(markdown_cell, row)) + " |" for row in rows + footer]
    return "\n".join(lines) + "\n"
