"""Catalog updates: build-index after 1 % of a catalog changed (images replaced, products added and removed)
against rebuilding it whole (`build-index --force`), side by side on the same catalog in one run.

Each round changes another share of the generated DeepFashion-layout catalog (a third of it replaced
images, a third new products, a third removed ones), times `build-index` (which embeds only what
changed), then `build-index --force` over the same catalog, both as fresh processes.

    python -m benchmarks.bench_updates [--items 10000] [--image-size 64] [--changed 0.01] [--rounds 2] [--index ivf]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from benchmarks.common import machine_line, manage, run_child
from benchmarks.deepfashion_layout import image_name, list_only, make_jpeg, read_listing, write_catalog

TIMEOUT_S = 3600


def build(artifacts_settings: list[str], *more: str) -> tuple[float, dict]:
    """Seconds of one `build-index` process and its build report."""
    run = run_child(manage(*artifacts_settings, "build-index", *more), TIMEOUT_S)
    if run.returncode != 0:
        raise RuntimeError(f"build-index failed:\n{run.output[-3000:]}")
    settings = dict(zip(artifacts_settings[::2], artifacts_settings[1::2]))
    report = json.loads((Path(settings["--artifacts"]) / "build-report.json").read_text())
    return run.seconds, report


def change(root: Path, listing: dict, listed: list[str], hidden: list[str], share: float,
           rng: np.random.Generator) -> tuple[list[str], list[str], int]:
    """Replace, add and remove a third of ``share`` of the catalog each; the new (listed, hidden) names."""
    count = max(3, round(share * len(listed)))
    third = count // 3
    order = rng.permutation(len(listed))
    replaced = [listed[i] for i in order[:third]]
    removed = {listed[i] for i in order[third:2 * third]}
    added, hidden = hidden[:count - 2 * third], hidden[count - 2 * third:]
    for name in replaced:
        path = root / name
        stat = path.stat()
        path.write_bytes(make_jpeg(rng)[0])
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    listed = [name for name in listed if name not in removed] + added
    list_only(root, listing, listed)
    return listed, hidden, count


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--changed", type=float, default=0.01, help="the share of the catalog changed each round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--index", default="ivf", help="index.kind (ivf shows whether its cells are kept)")
    args = parser.parse_args(argv or [])
    rng = np.random.default_rng(0)
    spare = args.rounds * max(3, round(args.changed * args.items))
    print(f"\n## updates: {args.items} generated DeepFashion-layout images at {args.image_size} px, "
          f"{args.changed:.1%} changed a round, index {args.index}; {machine_line()}")
    with tempfile.TemporaryDirectory() as directory:
        root = write_catalog(Path(directory) / "catalog", args.items + spare)
        listing = read_listing(root)
        names = [image_name(number) for number in range(args.items + spare)]
        listed, hidden = names[:args.items], names[args.items:]
        list_only(root, listing, listed)
        settings = ["--catalog", "deepfashion", "--root", str(root), "--weights", "none",
                    "--artifacts", str(Path(directory) / "artifacts")]
        for setting in ("catalog.subset=all", f"embedder.image_size={args.image_size}", "embedder.workers=0",
                        f"index.kind={args.index}"):
            settings += ["--set", setting]
        seconds, report = build(settings)
        print(f"\nfirst build: {seconds:.1f} s, {report['embeddings']['images_embedded']} images embedded\n")
        print("| round | items | changed | update s | images embedded | index s (cells) | rebuild s "
              "| images embedded | update ÷ rebuild |\n|---|---|---|---|---|---|---|---|---|")
        for turn in range(1, args.rounds + 1):
            listed, hidden, count = change(root, listing, listed, hidden, args.changed, rng)
            update_s, update = build(settings)
            rebuild_s, rebuild = build(settings, "--force")
            cells = update["index"]["parameters"].get("cells", update["index"]["kind"])
            print(f"| {turn} | {len(listed)} | {count} (+{update['embeddings']['added']} "
                  f"~{update['embeddings']['changed']} -{update['embeddings']['removed']}) | {update_s:.1f} "
                  f"| {update['embeddings']['images_embedded']} | {update['index']['seconds']:.2f} ({cells}) "
                  f"| {rebuild_s:.1f} | {rebuild['embeddings']['images_embedded']} | {update_s / rebuild_s:.3f} |")


if __name__ == "__main__":
    main(sys.argv[1:])
