"""compare_reports on two known reports: per-class, micro and macro changes, protocol differences, old files."""
from __future__ import annotations

import pytest

from indexer.report.compare import compare_reports, comparison_markdown, comparison_table


def report(k, shirt_top1, bag_top1, extra_class=None, **protocol):
    classes = [
        {"name": "Shirt", "queries": 10, "top1": shirt_top1, "top3": 0.9, "top5": 1.0, "precision_at_k": 0.5,
         "recall_at_k": 0.9, "map_at_r": 0.4},
        {"name": "Bag|Case", "queries": 4, "top1": bag_top1, "top3": 1.0, "top5": 1.0, "precision_at_k": 0.75,
         "recall_at_k": 1.0, "map_at_r": None},
    ]
    if extra_class:
        classes.append({"name": extra_class, "queries": 0, "top1": None, "top5": None})
    return {
        "protocol": {"k": k, "metric": "ip", "embeddings_file": f"/tmp/{k}.h5", **protocol},
        "overall": {"top1": (10 * shirt_top1 + 4 * bag_top1) / 14, "top5": 1.0, "queries": 14},
        "macro": {"top1": (shirt_top1 + bag_top1) / 2, "top5": 1.0},
        "classes": classes,
        "source": f"reports/{k}/report.json",
    }


def test_changes_are_now_minus_then_per_class_and_overall():
    comparison = compare_reports(report(10, 0.8, 0.5), report(5, 0.7, 0.75, extra_class="Hat"))
    shirt, bag, hat = comparison["classes"]
    assert shirt["top1"] == {"current": 0.8, "other": 0.7, "change": pytest.approx(0.1)}
    assert bag["top1"]["change"] == pytest.approx(-0.25)
    assert bag["map_at_r"] == {"current": None, "other": None, "change": None}  # missing is not zero
    assert hat["name"] == "Hat" and hat["queries"] == {"current": None, "other": 0, "change": None}
    assert comparison["macro"]["top1"]["change"] == pytest.approx((0.8 + 0.5) / 2 - (0.7 + 0.75) / 2)
    assert comparison["overall"]["top3"]["change"] is None  # neither report has an overall top-3
    # Only what differs, and not the file names, which always do.
    assert comparison["protocol_differences"] == {"k": {"current": 10, "other": 5}}


def test_the_table_and_markdown_show_percentage_points():
    comparison = compare_reports(report(10, 0.8, 0.5, leave_one_out=True), report(10, 0.7, 0.75))
    table = comparison_table(comparison)
    assert "protocol changed: leave_one_out: yes (was None)" in table
    shirt = next(line for line in table.splitlines() if line.startswith("Shirt"))
    assert shirt.split()[:4] == ["Shirt", "10", "80.0%", "+10.0"]
    markdown = comparison_markdown(comparison)
    assert "| Bag\\|Case | 4 | 50.0% | -25.0 |" in markdown
    assert "| macro |" in markdown
