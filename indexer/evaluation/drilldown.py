"""Looking into one class of an Evaluation: its failed queries and their neighbours, and its confusions."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from indexer.evaluation.protocol import Evaluation


@dataclass(frozen=True)
class Failure:
    """A query whose top-1 prediction is wrong, with the neighbours that voted."""

    query_row: int  # row in the embeddings file
    true: int
    predicted: int  # -1 when no class got a vote
    vote_share: float  # the wrong winner's share of the vote
    neighbour_rows: list[int]  # nearest first, file rows
    neighbour_labels: list[int]
    neighbour_distances: list[float]  # faiss distances (inner products for "ip")


def class_index(evaluation: Evaluation, name_or_index: str | int) -> int:
    """The class number of a class name (or number); ValueError listing the names when it is unknown."""
    if isinstance(name_or_index, (int, np.integer)) and 0 <= int(name_or_index) < len(evaluation.class_names):
        return int(name_or_index)
    if name_or_index in evaluation.class_names:
        return evaluation.class_names.index(name_or_index)
    raise ValueError(f"unknown class {name_or_index!r}; the classes are {', '.join(evaluation.class_names)}")


def worst_classes(evaluation: Evaluation, n: int) -> list[int]:
    """The n classes with queries and the lowest top-1 accuracy, worst first (ties in class order)."""
    scored = [(row.top1, number) for number, row in enumerate(evaluation.classes) if row.top1 is not None]
    return [number for _, number in sorted(scored)[:n]]


def class_failures(evaluation: Evaluation, name_or_index: str | int, limit: int | None = None) -> list[Failure]:
    """The class's misclassified queries, most confident mistakes first, with their k voting neighbours."""
    label = class_index(evaluation, name_or_index)
    k = evaluation.k
    wrong = np.flatnonzero((evaluation.query_labels == label) & (evaluation.predictions[:, 0] != label))
    # Most confident mistakes first; a stable sort keeps file order among equal shares.
    wrong = wrong[np.argsort(-evaluation.prediction_scores[wrong, 0], kind="stable")][:limit]
    labels = evaluation.row_labels
    failures = []
    for position in wrong.tolist():
        rows = evaluation.neighbours[position, :k]
        rows = rows[rows >= 0]
        failures.append(Failure(
            query_row=int(evaluation.query_rows[position]), true=label,
            predicted=int(evaluation.predictions[position, 0]),
            vote_share=float(evaluation.prediction_scores[position, 0]),
            neighbour_rows=rows.tolist(), neighbour_labels=labels[rows].tolist(),
            neighbour_distances=evaluation.distances[position, :rows.size].tolist(),
        ))
    return failures


def class_confusions(evaluation: Evaluation, name_or_index: str | int) -> dict[str, list[tuple[str, int]]]:
    """What the class's queries were taken for, and which classes were taken for it, largest counts first."""
    label = class_index(evaluation, name_or_index)
    names = evaluation.class_names

    def ranked(counts: np.ndarray) -> list[tuple[str, int]]:
        order = np.argsort(-counts, kind="stable")
        return [(names[c], int(counts[c])) for c in order if counts[c] > 0 and c != label]

    return {"predicted_as": ranked(evaluation.confusion[label]), "mistaken_for_it": ranked(evaluation.confusion[:, label])}

