"""Pictures of failed queries: one row per query, the query image and then its nearest neighbours.

Images come from a caller-supplied ``load_image(row)`` (embeddings row -> PIL image or array): the
indexer never opens catalogs itself (that is ``embedder``'s job, and indexer must not import it).
An image that cannot be loaded becomes a grey tile marked "unreadable"; the strip is still drawn.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from indexer.evaluation.drilldown import Failure
from indexer.report.plots import figure, png_bytes

log = logging.getLogger(__name__)

TILE_INCHES = 1.25
RIGHT, WRONG = "#238b45", "#cb181d"


def _pixels(load_image: Callable[[int], Any], row: int) -> np.ndarray | None:
    try:
        pixels = np.asarray(load_image(row))
    except Exception as error:  # noqa: BLE001 - any unreadable image must leave a gap, not end the report
        log.warning("catalog image of embeddings row %d could not be loaded: %s", row, error)
        return None
    if pixels.ndim not in (2, 3) or pixels.size == 0:
        log.warning("catalog image of embeddings row %d has shape %s; left out", row, pixels.shape)
        return None
    return pixels


def _tile(ax, pixels: np.ndarray | None, caption: str, colour: str) -> None:
    if pixels is None:
        ax.imshow(np.full((8, 8), 0.85), cmap="gray", vmin=0, vmax=1)
        ax.text(3.5, 3.5, "unreadable", ha="center", va="center", fontsize=7)
    else:
        ax.imshow(pixels, cmap="gray" if pixels.ndim == 2 else None)
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_edgecolor(colour)
        spine.set_linewidth(2.5)
    ax.set_title(caption, fontsize=7, color=colour)


def failure_strip(
    failures: Sequence[Failure],
    class_names: Sequence[str],
    load_image: Callable[[int], Any],
    neighbours: int = 5,
    title: str = "",
) -> bytes:
    """PNG: each failed query (framed red, with its wrong prediction) followed by its nearest neighbours.

    A neighbour framed green is of the query's class, red of another; its caption gives the class and
    the faiss distance (the similarity for inner-product indexes).
    """
    if not failures:
        raise ValueError("no failed queries to draw")
    columns = 1 + neighbours
    fig = figure(TILE_INCHES * columns, TILE_INCHES * 1.2 * len(failures) + 0.4)
    axes = fig.subplots(len(failures), columns, squeeze=False)
    for line, failure in zip(axes, failures):
        predicted = class_names[failure.predicted] if failure.predicted >= 0 else "no vote"
        _tile(line[0], _pixels(load_image, failure.query_row),
              f"query: {class_names[failure.true][:14]}\n→ {predicted[:14]} ({100 * failure.vote_share:.0f}%)", WRONG)
        shown = list(zip(failure.neighbour_rows, failure.neighbour_labels, failure.neighbour_distances))[:neighbours]
        for ax, (row, label, distance) in zip(line[1:], shown):
            colour = RIGHT if label == failure.true else WRONG
            _tile(ax, _pixels(load_image, row), f"{class_names[label][:14]}\n{distance:.3f}", colour)
        for ax in line[1 + len(shown):]:
            ax.set_axis_off()
    if title:
        fig.suptitle(title, fontsize=9)
    return png_bytes(fig)
