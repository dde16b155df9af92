"""Exact mAP@R over a whole index against a brute-force reference, and its tie and self conventions."""
from __future__ import annotations

import math

import numpy as np
import pytest

from indexer.evaluation import map_at_r as module
from indexer.evaluation.map_at_r import map_at_r_per_query
from tests.indexer.conftest import unit_rows


def reference(xq, yq, xb, yb, self_positions, metric):
    """One query at a time: the full ranking, pessimistic on exact ties, AP over its first R."""
    result = []
    for query, label, own in zip(xq, yq, self_positions):
        score = xb @ query if metric == "ip" else -((xb - query) ** 2).sum(axis=1)
        irrelevant = (yb != label)
        rows = [row for row in range(len(xb)) if row != own]
        # Descending score; among equals the irrelevant item first.
        rows.sort(key=lambda row: (-score[row], not irrelevant[row]))
        r = int((yb == label).sum()) - (own >= 0)
        if r == 0:
            result.append(math.nan)
            continue
        hits, total = 0, 0.0
        for rank, row in enumerate(rows[:r], start=1):
            if not irrelevant[row]:
                hits += 1
                total += hits / rank
        result.append(total / r)
    return np.array(result)


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_matches_brute_force_on_clustered_data(metric, monkeypatch):
    monkeypatch.setattr(module, "BATCH_ROWS", 7)  # several batches per class, a short last one
    rng = np.random.default_rng(4)
    centres = unit_rows(rng, 4, 6) * 2
    yb, yq = rng.integers(0, 4, 90), rng.integers(0, 4, 25)
    xb = (centres[yb] + rng.standard_normal((90, 6))).astype(np.float32)
    xq = (centres[yq] + rng.standard_normal((25, 6))).astype(np.float32)
    got = map_at_r_per_query(xq, yq, xb, yb, metric=metric)
    assert got == pytest.approx(reference(xq, yq, xb, yb, [-1] * 25, metric), abs=1e-9)
    assert 0.2 < np.nanmean(got) < 1.0


def test_queries_inside_the_index_skip_themselves():
    rng = np.random.default_rng(5)
    x, y = unit_rows(rng, 40, 5), rng.integers(0, 3, 40)
    positions = np.arange(40)
    got = map_at_r_per_query(x, y, x, y, positions)
    assert got == pytest.approx(reference(x, y, x, y, positions, "ip"), abs=1e-9)


def test_ties_rank_the_wrong_item_first_and_a_lonely_class_is_nan():
    # The query sits exactly between a relevant and an irrelevant item: R = 1, and the tie goes to the
    # irrelevant one, so AP@R is 0. Class 2 has no index item: NaN.
    xb = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]], dtype=np.float32)
    yb = np.array([0, 1, 1])
    xq = np.array([[0.6, 0.6], [0.0, 1.0], [0.0, -1.0]], dtype=np.float32)
    got = map_at_r_per_query(xq, [0, 1, 2], xb, yb)
    assert got[0] == 0.0 and got[1] == pytest.approx(0.5 * (1 + 0)) and math.isnan(got[2])


def test_rejects_mismatched_shapes_and_unknown_metrics():
    x = np.zeros((3, 2), dtype=np.float32)
    with pytest.raises(ValueError, match="shapes disagree"):
        map_at_r_per_query(x, [0, 1], x, [0, 1, 2])
    with pytest.raises(ValueError, match="metric"):
        map_at_r_per_query(x, [0, 1, 2], x, [0, 1, 2], metric="cosine")
