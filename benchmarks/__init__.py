"""Benchmarks: `make bench` runs them all; each prints ratios measured side by side in one run."""
