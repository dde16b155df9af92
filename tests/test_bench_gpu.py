"""bench_gpu's run: stages in child processes under one budget, results kept as each stage ends."""
from __future__ import annotations

import json

from benchmarks import bench_gpu


def run(tmp_path, *arguments: str) -> tuple[int, dict, str]:
    code = bench_gpu.main(["--allow-cpu", "--small", "--out", str(tmp_path / "out"), "--work", str(tmp_path / "work"),
                           *arguments])
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    return code, results, (tmp_path / "out" / "tables.md").read_text()


def test_a_stage_runs_in_a_child_and_its_table_is_kept(tmp_path):
    code, results, tables = run(tmp_path, "--stages", "peaks")
    assert code == 0
    peaks = results["stages"]["peaks"]
    assert peaks["status"] == "done" and peaks["result"]["matmul_flops"]["fp32"] > 0
    assert "### Measured ceilings" in tables and "| fp16 |" in tables


def test_stages_the_budget_cannot_fit_are_skipped_and_said(tmp_path):
    code, results, tables = run(tmp_path, "--stages", "peaks,training", "--budget", "1")
    assert code == 0
    assert [stage["status"] for stage in results["stages"].values()] == ["skipped", "skipped"]
    assert "training: skipped" in tables and "of the budget left" in tables
