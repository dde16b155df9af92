"""Neighbour consensus captions (Devlin et al., 2015): of the k nearest items' titles, the one most like the others.

No training: a strong baseline, and the caption whenever no GRU annotator was trained. Similarity
of two titles is the mean, over n = 1..max_n, of the cosine similarity of their n-gram counts.
"""
from __future__ import annotations

import math
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from indexer.caption_metrics import tokenize

MAX_N = 2


def ngram_counts(tokens: Sequence[str], n: int) -> Counter:
    """How often each n-gram occurs in the token list."""
    return Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


# A title's n-gram counts for n = 1..max_n, each with its Euclidean norm.
GramProfile = list[tuple[Counter, float]]


def gram_profile(tokens: Sequence[str], max_n: int = MAX_N) -> GramProfile:
    """What title_similarity needs of one title."""
    profile = []
    for n in range(1, max_n + 1):
        counts = ngram_counts(tokens, n)
        profile.append((counts, math.sqrt(sum(c * c for c in counts.values()))))
    return profile


def profile_similarity(a: GramProfile, b: GramProfile) -> float:
    """title_similarity of two titles' gram profiles."""
    values = []
    for (left, left_norm), (right, right_norm) in zip(a, b):
        if not left and not right:
            continue  # neither title is that long: this order says nothing
        if len(left) > len(right):
            left, right = right, left
        dot = sum(count * right.get(gram, 0) for gram, count in left.items())
        norm = left_norm * right_norm
        values.append(dot / norm if norm else 0.0)
    return sum(values) / len(values) if values else 0.0


def title_similarity(a: Sequence[str], b: Sequence[str], max_n: int = MAX_N) -> float:
    """Mean cosine similarity of n-gram counts for n = 1..max_n, over the orders that either title has."""
    return profile_similarity(gram_profile(a, max_n), gram_profile(b, max_n))


@dataclass(frozen=True)
class UnitGrams:
    """A title's n-grams for n = 1..max_n: their numbers, and their counts scaled to a unit vector within each
    order (the numbers of different orders never meet, so one dot product sums the orders' cosines)."""

    numbers: np.ndarray  # int64
    weights: np.ndarray  # float64
    orders: np.ndarray  # bool, max_n: which orders the title is long enough for


class TitleGrams:
    """Titles' n-gram counts as unit vectors over gram numbers, made once per title and kept.

    The web app captions every search from its neighbours' titles, and the same catalog titles come back
    search after search: profiling the 15 titles and comparing their pairs in Python dictionaries was
    most of a millisecond of every request's GIL-held work; with the vectors kept, the pairs are one small
    matrix product. What is kept grows to the catalog's distinct titles at most (only neighbours' titles are
    asked for), ~1.3 KB each with the gram numbers (20,000 random 3-7-word titles: 27 MB, tracemalloc).
    Request threads share one TitleGrams.
    """

    def __init__(self, max_n: int = MAX_N) -> None:
        self.max_n = max_n
        self._numbers: dict[tuple[str, ...], int] = {}
        self._kept: dict[str, UnitGrams] = {}
        self._lock = threading.Lock()  # gram numbers are handed out one title at a time

    def of(self, title: str) -> UnitGrams:
        """The title's unit gram vectors."""
        kept = self._kept.get(title)
        if kept is None:
            with self._lock:
                kept = self._kept.get(title)
                if kept is None:
                    kept = self._kept[title] = self._unit_grams(tokenize(title))
        return kept

    def _unit_grams(self, tokens: list[str]) -> UnitGrams:
        numbers, weights = [], []
        for n in range(1, self.max_n + 1):
            counts = ngram_counts(tokens, n)
            numbers += [self._numbers.setdefault(gram, len(self._numbers)) for gram in counts]
            norm = math.sqrt(sum(count * count for count in counts.values()))
            weights += [count / norm for count in counts.values()]
        return UnitGrams(np.array(numbers, dtype=np.int64), np.array(weights, dtype=np.float64),
                         np.array([len(tokens) >= n for n in range(1, self.max_n + 1)]))

    def similarities(self, titles: Sequence[str]) -> np.ndarray:
        """title_similarity of every pair of the titles (m x m); on the diagonal 1, or 0 for a title without words."""
        kept = [self.of(title) for title in titles]
        m = len(kept)
        lengths = np.fromiter((each.numbers.size for each in kept), dtype=np.int64, count=m)
        grams, columns = np.unique(np.concatenate([each.numbers for each in kept]), return_inverse=True)
        unit = np.zeros((m, grams.size))
        unit[np.repeat(np.arange(m), lengths), columns.ravel()] = np.concatenate([each.weights for each in kept])
        has = np.stack([each.orders for each in kept])
        # An order counts for a pair when either title is long enough for it.
        orders = (has[:, None, :] | has[None, :, :]).sum(axis=2)
        return np.divide(unit @ unit.T, orders, out=np.zeros((m, m)), where=orders > 0)


def consensus_choice(titles: Sequence[str], max_n: int = MAX_N, grams: TitleGrams | None = None) -> int:
    """Position of the title with the highest mean similarity to the other titles; ties go to the nearer; -1 if none.

    Empty titles take no part. Repeated titles count once per neighbour, so agreement adds up.
    ``grams`` (of the same max_n) keeps titles' n-grams from one call to the next.
    """
    if grams is not None and grams.max_n != max_n:
        raise ValueError(f"grams of orders up to {grams.max_n} for a consensus of orders up to {max_n}")
    present = [position for position, title in enumerate(titles) if title.strip()]
    if not present:
        return -1
    grams = grams if grams is not None else TitleGrams(max_n)
    # Each distinct title is compared once with each other; repeats take their rows.
    distinct = list(dict.fromkeys(titles[position] for position in present))
    of_title = {title: number for number, title in enumerate(distinct)}
    numbers = [of_title[titles[position]] for position in present]
    similarity = grams.similarities(distinct)[np.ix_(numbers, numbers)]
    others = len(present) - 1
    scores = ((similarity.sum(axis=1) - similarity.diagonal()) / others).tolist() if others else [0.0]
    best, best_score = present[0], -1.0
    for position, score in zip(present, scores):
        if score > best_score + 1e-12:
            best, best_score = position, score
    return best


def consensus_captions(I: np.ndarray, titles: Sequence[str], max_n: int = MAX_N,
                       grams: TitleGrams | None = None) -> list[str]:
    """Per query (a row of neighbour rows ``I``, -1 for none), the consensus among those neighbours' titles; '' if none.

    ``grams`` keeps the titles' n-grams between calls (one is made for this call without it)."""
    grams = grams if grams is not None else TitleGrams(max_n)
    captions = []
    for row in np.asarray(I):
        neighbours = [titles[int(item)] for item in row if item >= 0]
        choice = consensus_choice(neighbours, max_n, grams)
        captions.append(neighbours[choice] if choice >= 0 else "")
    return captions
