"""Run every benchmark in this package: python -m benchmarks [name ...]."""
from __future__ import annotations

import importlib
import platform
import sys

import torch

BENCHMARKS = ("embedding", "search", "accuracy")


def main(names: list[str]) -> None:
    print(f"# machine: {platform.machine()}, {torch.get_num_threads()} torch threads, "
          f"cuda: {torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none'}")
    for name in names or BENCHMARKS:
        importlib.import_module(f"benchmarks.bench_{name}").main()


if __name__ == "__main__":
    main(sys.argv[1:])
