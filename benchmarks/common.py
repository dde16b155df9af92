"""What every benchmark needs: the machine in words, its peak FLOP/s, interleaved timing, a child's peak memory."""
from __future__ import annotations

import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
# FMA pipes per core: 2 on AMD Zen 2-4 and on Intel server cores since Skylake-SP Gold 6xxx / Platinum.
FMA_UNITS = 2


@dataclass(frozen=True)
class CpuPeak:
    """Peak float32 FLOP/s from the CPU's description, and how it was computed."""

    flops: float
    formula: str


def cpu_flags() -> set[str]:
    """The feature flags of the first CPU in /proc/cpuinfo (empty where there is none)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.partition(":")[2].split())
    except OSError:
        pass
    return set()


def cpu_model() -> str:
    """The CPU's model name and clock from /proc/cpuinfo, or the platform's word for it."""
    model, mhz = platform.processor() or platform.machine(), 0.0
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.partition(":")[2].strip()
            elif line.startswith("cpu MHz") and not mhz:
                mhz = float(line.partition(":")[2])
    except OSError:
        pass
    return f"{model} @ {mhz / 1000:.2f} GHz" if mhz else model


def cpu_peak(cores: int | None = None) -> CpuPeak:
    """cores × clock × FMA units × float32 lanes × 2 (an FMA is a multiply and an add).

    The clock is /proc/cpuinfo's "cpu MHz" (the nominal clock under a hypervisor; turbo would raise the
    peak); lanes are 16 with AVX-512, 8 with AVX2/AVX, 4 otherwise.
    """
    cores = cores or os.cpu_count() or 1
    flags = cpu_flags()
    lanes = 16 if "avx512f" in flags else 8 if "avx" in flags else 4
    mhz = 0.0
    try:
        mhz = next(float(line.partition(":")[2]) for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("cpu MHz"))
    except (OSError, StopIteration):
        pass
    flops = cores * mhz * 1e6 * FMA_UNITS * lanes * 2
    formula = (f"{cores} cores × {mhz / 1000:.3f} GHz × {FMA_UNITS} FMA units × {lanes} float32 lanes × 2 "
               f"= {flops / 1e9:.1f} GFLOP/s")
    return CpuPeak(flops, formula)


def usable_cores() -> int:
    """The cores this process may run on (a container's or taskset's share), not all the machine's."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def machine_line() -> str:
    """One line naming the hardware, for labelling absolute figures."""
    import torch

    flags = cpu_flags()
    extensions = [name for name in ("avx2", "avx512f", "avx512_bf16", "amx_tile") if name in flags]
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{cpu_model()}, {os.cpu_count()} cores ({', '.join(extensions) or 'no AVX'}), "
            f"{torch.get_num_threads()} torch threads, {gpu}; torch {torch.__version__}, "
            f"Python {platform.python_version()}")


def interleaved_best(functions: dict[str, Callable[[], object]], rounds: int = 3) -> dict[str, float]:
    """Best seconds of each function over ``rounds``, taking turns so that a busy shared CPU slows all alike."""
    for function in functions.values():
        function()  # warm-up: first calls allocate and pick kernels
    best = {name: float("inf") for name in functions}
    for _ in range(rounds):
        for name, function in functions.items():
            started = time.perf_counter()
            function()
            best[name] = min(best[name], time.perf_counter() - started)
    return best


@dataclass(frozen=True)
class ChildRun:
    """A finished child process: exit status, wall seconds, peak resident memory and its output."""

    returncode: int
    seconds: float
    peak_rss_bytes: int
    output: str


def run_child(command: Sequence[str], timeout: float, cwd: Path = ROOT) -> ChildRun:
    """Run a command, measuring its wall time and its peak RSS (ru_maxrss of that one child, from wait4)."""
    started = time.perf_counter()
    with tempfile.TemporaryFile("w+") as log:
        child = subprocess.Popen(list(command), cwd=cwd, stdin=subprocess.DEVNULL, stdout=log,
                                 stderr=subprocess.STDOUT, text=True)
        while True:
            pid, status, usage = os.wait4(child.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() - started > timeout:
                child.kill()
                os.wait4(child.pid, 0)
                log.seek(0)
                raise RuntimeError(f"{' '.join(command)} ran past {timeout:.0f} s:\n{log.read()[-2000:]}")
            time.sleep(0.05)
        child.returncode = os.waitstatus_to_exitcode(status)  # reaped here, so Popen must not wait again
        log.seek(0)
        output = log.read()
    return ChildRun(child.returncode, time.perf_counter() - started, usage.ru_maxrss * 1024, output)


def manage(*arguments: str) -> list[str]:
    """The command line of ``python manage.py ARGUMENTS`` with this interpreter."""
    return [sys.executable, str(ROOT / "manage.py"), *arguments]


def mib(size: float) -> str:
    """Bytes as MiB, for tables."""
    return f"{size / 2**20:,.0f} MiB"
