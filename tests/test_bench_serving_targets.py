"""benchmarks/bench_serving.py's summary of its runs against the serving targets."""
from __future__ import annotations

from benchmarks.bench_serving import RunSummary, SideBySide, target_lines


def test_each_run_is_held_to_the_targets_that_apply_to_it():
    lone, loaded, failing, roomy = target_lines([
        RunSummary("gunicorn", 1, 0, 1.36, 0.45, 0.60),
        RunSummary("gunicorn", 8, 0, None, 0.41, 0.49),
        RunSummary("gunicorn", 8, 2, None, 0.90, 0.95),
        RunSummary("batched", 8, 0, None, 0.60, 0.90),
    ])
    assert lone == ("- gunicorn, 1 client: 0 errors (met); lone p50 1.36 × in-process, side by side "
                    "(target ≤ 1.3: NOT met)")  # a 1-client run is not held to the 8-client throughput
    assert "0.41 × the forward rate (target ≥ 0.8: NOT met; the CPU ceiling, 0.49, is below the target" in loaded
    assert failing.startswith("- gunicorn, 8 clients: 2 errors (NOT met); 0.90 × the forward rate (target ≥ 0.8: met)")
    assert "NOT met)" in roomy and "ceiling" not in roomy  # room under its ceiling: the layout is to blame


def test_a_lone_shoppers_ratio_is_the_median_of_the_turns():
    turns = SideBySide(ratios=[1.2, 1.5, 1.3, 1.25, 1.4], in_process_ms=[10.0] * 5, http_ms=[13.0] * 5)
    assert turns.ratio == 1.3
    assert target_lines([RunSummary("gunicorn", 1, 0, turns.ratio, 0.5, 0.6)])[0].endswith("(target ≤ 1.3: met)")
