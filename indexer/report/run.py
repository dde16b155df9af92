"""``manage.py evaluate`` as one call: evaluate, draw the pictures, write reports/<timestamp>/, compare.

The time of every stage goes into the report, so a slow part is visible where the numbers are.
"""
from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from config import EvaluateConfig, IndexConfig
from indexer.embeddings_file import EmbeddingsFile
from indexer.evaluation.drilldown import class_failures, worst_classes
from indexer.evaluation.protocol import Evaluation, EvaluationError, evaluate_knn
from indexer.report import plots
from indexer.report.baselines import matching_baselines
from indexer.report.compare import compare_reports
from indexer.report.failure_strips import failure_strip
from indexer.report.files import JSON_NAME, Picture, new_report_directory, read_report, write_report_files
from indexer.report.projection import sample_rows, tsne_map
from indexer.report.text import json_text

log = logging.getLogger(__name__)

NEIGHBOURS_SHOWN = 5


@dataclass(frozen=True)
class KnnReport:
    """What write_knn_report did: the evaluation, where its files are, stage times, and the comparison if asked."""

    evaluation: Evaluation
    directory: Path
    files: list[Path]
    timings: dict[str, float]
    comparison: dict[str, Any] | None


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-").lower() or "class"


def embedding_map_picture(evaluation: Evaluation, embeddings, max_points: int, seed: int) -> Picture | None:
    """The t-SNE map of (a sample of) the query embeddings, coloured by class; None when there are too few."""
    rows = sample_rows(evaluation.query_rows.size, max_points, seed)
    if rows.size < 3:
        return None
    points = tsne_map(embeddings[evaluation.query_rows[rows]], seed)
    title = f"t-SNE of {rows.size} of {evaluation.query_rows.size} query embeddings, coloured by true class"
    return Picture("embedding-map.png", title,
                   plots.embedding_map(points, evaluation.query_labels[rows], evaluation.class_names, title))


def failure_pictures(evaluation: Evaluation, load_image: Callable[[int], Any], classes: int,
                     per_class: int) -> list[Picture]:
    """One strip of failed queries and their neighbours for each of the worst classes."""
    pictures = []
    for number, label in enumerate(worst_classes(evaluation, classes), start=1):
        failures = class_failures(evaluation, label, per_class)
        if not failures:
            continue
        name = evaluation.class_names[label]
        caption = f"Failed queries of {name} (top-1 {100 * evaluation.classes[label].top1:.1f}%) and their " \
                  f"{NEIGHBOURS_SHOWN} nearest neighbours (green: same class)"
        pictures.append(Picture(f"failures-{number}-{_slug(name)}.png", caption,
                                failure_strip(failures, evaluation.class_names, load_image, NEIGHBOURS_SHOWN)))
    return pictures


def make_pictures(
    evaluation: Evaluation, embeddings, settings: EvaluateConfig, load_image: Callable[[int], Any] | None
) -> tuple[list[Picture], dict[str, float]]:
    """Every picture of the report, and the seconds each kind took."""
    timings, started = {}, time.perf_counter()
    pictures = [
        Picture("confusion.png", "Confusion matrix (rows: true class, columns: top-1 prediction)",
                plots.confusion_heatmap(evaluation.confusion, evaluation.class_names)),
        Picture("class-accuracy.png", "Top-1 and top-5 kNN accuracy per class",
                plots.class_accuracy_bars(evaluation.class_names, [row.top1 for row in evaluation.classes],
                                          [row.top5 for row in evaluation.classes], evaluation.macro["top1"])),
    ]
    if len(evaluation.sweep) > 1:
        pictures.append(Picture("accuracy-vs-k.png", "Accuracy versus k",
                                plots.accuracy_versus_k(evaluation.sweep, evaluation.k)))
    timings["charts"] = time.perf_counter() - started
    if settings.map_points:
        started = time.perf_counter()
        picture = embedding_map_picture(evaluation, embeddings, settings.map_points, settings.seed)
        pictures += [picture] if picture else []
        timings["embedding_map"] = time.perf_counter() - started
    if load_image is not None and settings.failure_classes:
        started = time.perf_counter()
        pictures += failure_pictures(evaluation, load_image, settings.failure_classes, settings.failures_per_class)
        timings["failure_strips"] = time.perf_counter() - started
    return pictures, timings


def write_knn_report(
    vectors: EmbeddingsFile,
    settings: EvaluateConfig,
    index: IndexConfig,
    k: int,
    reports_dir: str | Path,
    *,
    load_image: Callable[[int], Any] | None = None,
    compare_with: str | Path | None = None,
    baselines: dict[str, Any] | None = None,
) -> KnnReport:
    """Evaluate with the configured protocol, draw the pictures and write reports_dir/<timestamp>/.

    ``load_image(row)`` returns the catalog image of an embeddings row, for the failed-query strips
    (none are drawn without it); ``compare_with`` names an earlier report to compare with; ``baselines``
    (indexer.report.baselines.read_baselines) join the report when they share its protocol.
    """
    other = read_report(compare_with) if compare_with is not None else None  # a bad path fails before the work
    evaluation = evaluate_knn(vectors, settings.query_split, settings.index_splits, k, index.metric,
                              use_gpu=index.gpu, leave_one_out=settings.leave_one_out, k_sweep=settings.k_sweep,
                              map_at_r=settings.map_at_r)
    pictures, picture_timings = make_pictures(evaluation, vectors.embeddings, settings, load_image)
    timings = {**evaluation.timings, **picture_timings}
    directory = new_report_directory(reports_dir)
    comparison = None
    if other is not None:
        current = json.loads(json_text(evaluation.to_dict())) | {"source": str(directory / JSON_NAME)}
        comparison = compare_reports(current, other)
    files = write_report_files(evaluation, directory, pictures, timings, comparison,
                               matching_baselines(baselines, evaluation.protocol))
    log.info("report written to %s (%s)", directory,
             ", ".join(f"{stage} {seconds:.1f} s" for stage, seconds in timings.items()))
    return KnnReport(evaluation, directory, files, timings, comparison)


def rerun_evaluation(vectors: EmbeddingsFile, report: dict[str, Any], use_gpu: str = "off") -> Evaluation:
    """The Evaluation (with per-query arrays) behind a report, recomputed with the report's own protocol.

    EvaluationError when the embeddings no longer give the report's numbers (another model or catalog).
    """
    protocol = report["protocol"]
    evaluation = evaluate_knn(
        vectors, protocol["query_split"], tuple(protocol["index_splits"]), int(protocol["k"]), protocol["metric"],
        use_gpu=use_gpu, leave_one_out=protocol.get("mode") == "leave-one-out",
        k_sweep=tuple(row["k"] for row in report.get("k_sweep", [])),
        map_at_r=protocol.get("map_at_r", "").startswith("computed"),
    )
    recorded = report["overall"].get("top1")
    if protocol.get("checkpoint_sha256") != vectors.checkpoint_sha256 or (
            recorded is not None and abs(recorded - evaluation.top1) > 1e-9):
        raise EvaluationError(f"{vectors.source} does not reproduce the report {report.get('source', '')} "
                              f"(checkpoint {protocol.get('checkpoint_sha256', '?')[:12]} vs "
                              f"{vectors.checkpoint_sha256[:12]}, top-1 {recorded} vs {evaluation.top1})")
    return evaluation
