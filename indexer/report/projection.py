"""A 2-D map of embeddings for people to look at: t-SNE over a seeded sample of the rows.

scikit-learn's Barnes-Hut t-SNE keeps the neighbourhoods that kNN relies on, which is what an
analyst wants to see; its cost grows with the points, so at most ``max_points`` rows are drawn.
"""
from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger(__name__)

PCA_DIMENSIONS = 50  # t-SNE's neighbour search is faster and no worse on the leading components
ITERATIONS = 500


def sample_rows(count: int, max_points: int, seed: int = 0) -> np.ndarray:
    """At most max_points row numbers out of count, ascending, drawn with a fixed seed."""
    if max_points >= count:
        return np.arange(count)
    return np.sort(np.random.default_rng(seed).choice(count, max_points, replace=False))


def tsne_map(x: np.ndarray, seed: int = 0) -> np.ndarray:
    """n x 2 t-SNE coordinates of the rows of x (n >= 3)."""
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    x = np.asarray(x, dtype=np.float32)
    if x.shape[0] < 3:
        raise ValueError(f"a t-SNE map needs at least 3 points, got {x.shape[0]}")
    centred = x - x.mean(axis=0)
    if centred.shape[1] > PCA_DIMENSIONS:
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        centred = centred @ vt[:PCA_DIMENSIONS].T
    # Perplexity must stay below the number of points; 30 is the usual choice.
    perplexity = float(min(30.0, max(2.0, (x.shape[0] - 1) / 3)))
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed, max_iter=ITERATIONS)
    # One thread: on a busy 2-core machine the OpenMP gradient threads spin against each other
    # (2,000 points: 24 s with two threads, 9 s with one, measured here).
    with threadpool_limits(1):
        return tsne.fit_transform(centred).astype(np.float32)
