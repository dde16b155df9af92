"""OpenMP waiting: torch's CPU forward pass as a server runs it (a pause between passes) under libgomp's wait settings.

`serve --prod` sets OMP_WAIT_POLICY=PASSIVE (idle OpenMP threads must not spin on the cores the
request threads need), and libgomp's threads then sleep at every barrier: some 620 times in one pass
of ResNet-50 over 8 images. GOMP_SPINCOUNT (spins at a barrier before sleeping) bridges the gaps
between operators. libgomp reads both once, when it loads, so each setting runs in a fresh
interpreter: ResNet-50 on torch's threads, a pause of 20 ms before each pass (a server's gap between
batches), the median pass, its voluntary context switches (threads going to sleep) and CPU per pass.
The settings run in turns, `--rounds` times, so that the machine's swings fall on all of them.

    python -m benchmarks.bench_openmp_wait [--sizes 32x1,64x1,64x8] [--spins default,passive,2000,20000,100000]
                                           [--passes 30] [--rounds 2]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections import defaultdict

import numpy as np

PAUSE_S = 0.02
CHILD_TIMEOUT_S = 600.0  # one setting's passes; a 224-px pass over 8 images takes ~0.8 s on a 2-core CPU
# One pass, in the child: the model, then timed passes after a warm-up; prints one JSON line.
CHILD = """
import json, resource, sys, time
import torch, torchvision
size, batch, passes, pause = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
model = torchvision.models.resnet50().eval()
images = torch.randn(batch, 3, size, size)
with torch.inference_mode():
    for _ in range(3):
        model(images)
    times, before = [], resource.getrusage(resource.RUSAGE_SELF)
    for _ in range(passes):
        time.sleep(pause)
        started = time.perf_counter()
        model(images)
        times.append(time.perf_counter() - started)
    after = resource.getrusage(resource.RUSAGE_SELF)
cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
print(json.dumps({"ms": [1e3 * t for t in times], "sleeps": (after.ru_nvcsw - before.ru_nvcsw) / passes,
                  "cpu_ms": 1e3 * cpu / passes}))
"""


def environment(spin: str) -> dict[str, str]:
    """The child's environment: libgomp's defaults ("default"), passive waiting alone ("passive", what serve
    --prod sets), or passive with that many spins first."""
    env = {key: value for key, value in os.environ.items() if key not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    if spin != "default":
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    if spin not in ("default", "passive"):
        env["GOMP_SPINCOUNT"] = spin
    return env


def timed_passes(spin: str, size: int, batch: int, passes: int) -> dict:
    """The passes' times, sleeps and CPU under one setting, from a fresh interpreter (libgomp reads it at load)."""
    completed = subprocess.run([sys.executable, "-c", CHILD, str(size), str(batch), str(passes), str(PAUSE_S)],
                               env=environment(spin), capture_output=True, text=True, check=True,
                               timeout=CHILD_TIMEOUT_S)
    return json.loads(completed.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="32x1,64x1,64x8", help="image size x batch, comma-separated")
    parser.add_argument("--spins", default="default,passive,2000,20000,100000",
                        help="'default' (libgomp's), 'passive' (OMP_WAIT_POLICY=PASSIVE alone) or a GOMP_SPINCOUNT "
                             "with PASSIVE")
    parser.add_argument("--passes", type=int, default=30, help="timed passes per setting and round (default 30)")
    parser.add_argument("--rounds", type=int, default=2, help="turns over the settings (default 2)")
    options = parser.parse_args(argv if argv is not None else [])
    spins = options.spins.split(",")
    print(f"\n## OpenMP waiting: ResNet-50 forward passes on torch's default threads, {PAUSE_S * 1e3:.0f} ms "
          f"between passes, {options.passes} passes x {options.rounds} rounds per setting")
    print("| images | setting | median ms (per round) | sleeps / pass | CPU ms / pass |")
    print("|---|---|---|---|---|")
    for size_batch in options.sizes.split(","):
        size, batch = (int(part) for part in size_batch.split("x"))
        results: dict[str, list[dict]] = defaultdict(list)
        for _ in range(options.rounds):
            for spin in spins:
                results[spin].append(timed_passes(spin, size, batch, options.passes))
        for spin in spins:
            rounds = results[spin]
            medians = " / ".join(f"{np.median(r['ms']):.1f}" for r in rounds)
            label = spin if spin in ("default", "passive") else f"passive, GOMP_SPINCOUNT={spin}"
            print(f"| {batch}×{size} px | {label} | {medians} | {np.mean([r['sleeps'] for r in rounds]):.0f} "
                  f"| {np.mean([r['cpu_ms'] for r in rounds]):.1f} |", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
