"""The evaluation report's charts as PNG bytes: confusion heatmap, per-class bars, accuracy versus k, t-SNE map.

Figures are built with matplotlib's object API on the Agg canvas: no pyplot state, no display needed.
"""
from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

DPI = 110
# Counts are written into the heatmap's cells only while they stay legible.
MAX_ANNOTATED_CLASSES = 25


def figure(width: float, height: float) -> Figure:
    """A blank figure on an Agg canvas."""
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def png_bytes(fig: Figure) -> bytes:
    """The figure as PNG bytes."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def _short(name: str, length: int = 18) -> str:
    return name if len(name) <= length else name[:length - 1] + "…"


def confusion_heatmap(confusion: np.ndarray, class_names: Sequence[str]) -> bytes:
    """Rows = true class, columns = top-1 prediction; colour = share of the row's queries, cells show counts."""
    confusion = np.asarray(confusion)
    size = len(class_names)
    totals = confusion.sum(axis=1, keepdims=True)
    shares = np.divide(confusion, totals, out=np.zeros(confusion.shape, dtype=float), where=totals > 0)
    side = min(4 + 0.45 * size, 16)
    fig = figure(side + 1.2, side)
    ax = fig.add_subplot()
    image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    names = [_short(name) for name in class_names]
    ax.set_xticks(range(size), names, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(size), names, fontsize=8)
    ax.set_xlabel("predicted class (top-1)")
    ax.set_ylabel("true class")
    ax.set_title("Confusion matrix (colour: share of the true class's queries)")
    if size <= MAX_ANNOTATED_CLASSES:
        for (row, column), count in np.ndenumerate(confusion):
            if count:
                ax.text(column, row, str(count), ha="center", va="center", fontsize=7,
                        color="white" if shares[row, column] > 0.5 else "black")
    fig.colorbar(image, ax=ax, shrink=0.8)
    return png_bytes(fig)


def class_accuracy_bars(class_names: Sequence[str], top1: Sequence[float | None], top5: Sequence[float | None],
                        macro_top1: float) -> bytes:
    """Horizontal bars per class, worst top-1 at the top, top-5 behind; classes without queries left out."""
    rows = [(name, a, b) for name, a, b in zip(class_names, top1, top5) if a is not None]
    rows.sort(key=lambda row: (row[1], row[0]))
    fig = figure(7.5, 1.2 + 0.32 * max(len(rows), 1))
    ax = fig.add_subplot()
    positions = np.arange(len(rows))
    ax.barh(positions, [100 * (row[2] or 0) for row in rows], color="#c6dbef", label="top-5")
    ax.barh(positions, [100 * row[1] for row in rows], color="#2171b5", label="top-1")
    for position, (_, value, _) in zip(positions, rows):
        ax.text(100 * value + 0.5, position, f"{100 * value:.1f}", va="center", fontsize=7)
    if not np.isnan(macro_top1):
        ax.axvline(100 * macro_top1, color="#cb181d", linestyle="--", label=f"macro top-1 {100 * macro_top1:.1f}%")
    ax.set_yticks(positions, [_short(row[0], 28) for row in rows], fontsize=8)
    ax.set_xlim(0, 105)
    ax.set_xlabel("kNN accuracy (%)")
    ax.set_title("Accuracy per class, worst first")
    ax.legend(loc="lower right", fontsize=8)
    return png_bytes(fig)


def accuracy_versus_k(sweep: Sequence[dict[str, float]], chosen_k: int) -> bytes:
    """Top-1 / top-5 (micro and macro), precision@k and recall@k against k, on a log axis."""
    ks = [row["k"] for row in sweep]
    fig = figure(7, 4.2)
    ax = fig.add_subplot()
    styles = {"top1": ("top-1", "-", "o"), "macro_top1": ("macro top-1", "--", "o"), "top5": ("top-5", "-", "s"),
              "precision_at_k": ("precision@k", ":", "^"), "recall_at_k": ("recall@k (hit rate)", ":", "v")}
    for key, (label, line, marker) in styles.items():
        ax.plot(ks, [100 * row[key] for row in sweep], linestyle=line, marker=marker, label=label)
    ax.axvline(chosen_k, color="grey", linewidth=0.8)
    ax.set_xscale("log")
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.set_xlabel("k (neighbours)")
    ax.set_ylabel("%")
    ax.set_title(f"Accuracy versus k (the report uses k = {chosen_k})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return png_bytes(fig)


def embedding_map(points: np.ndarray, labels: np.ndarray, class_names: Sequence[str], title: str) -> bytes:
    """A 2-D scatter of the embeddings, one colour per class."""
    fig = figure(8, 6.5)
    ax = fig.add_subplot()
    palette = [f"C{i}" for i in range(10)] if len(class_names) <= 10 else None
    colours = np.linspace(0, 1, max(len(class_names), 1))
    for label in np.unique(labels):
        chosen = labels == label
        colour = palette[label] if palette else [_colour_map()(colours[label])]
        ax.scatter(points[chosen, 0], points[chosen, 1], s=4, alpha=0.7, c=colour, label=_short(class_names[label]))
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title)
    if len(class_names) <= 30:
        ax.legend(markerscale=3, fontsize=7, loc="center left", bbox_to_anchor=(1, 0.5))
    return png_bytes(fig)


def _colour_map():
    from matplotlib import colormaps

    return colormaps["turbo"]
