"""Run every benchmark in this package: python -m benchmarks [name ...]."""
from __future__ import annotations

import importlib
import sys

import torch

from benchmarks.common import cpu_peak, machine_line

BENCHMARKS = ("embedding", "training", "pipeline", "scaling", "search", "gpu", "accuracy", "evaluate", "serving",
              "updates", "cluster", "openmp_wait")


def main(names: list[str]) -> None:
    print(f"# machine: {machine_line()}\n# CPU peak: {cpu_peak(torch.get_num_threads()).formula}")
    for name in names or BENCHMARKS:
        importlib.import_module(f"benchmarks.bench_{name}").main()


if __name__ == "__main__":
    main(sys.argv[1:])
