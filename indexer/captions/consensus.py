"""Neighbour consensus captions (Devlin et al., 2015): of the k nearest items' titles, the one most like the others.

No training: a strong baseline, and the caption whenever no GRU annotator was trained. Similarity
of two titles is the mean, over n = 1..max_n, of the cosine similarity of their n-gram counts.
"""
from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from indexer.captions.metrics import tokenize

MAX_N = 2


def ngram_counts(tokens: Sequence[str], n: int) -> Counter:
    """How often each n-gram occurs in the token list."""
    return Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


class UnitGrams(NamedTuple):
    """A title's n-grams for n = 1..max_n, each order's counts scaled to a unit vector. N-grams of different
    orders never meet, so one dot product over the merged weights sums the orders' cosines."""

    weights: dict[tuple[str, ...], float]
    orders: int  # how many orders the title is long enough for (its shorter orders all are)


def unit_grams(tokens: Sequence[str], max_n: int = MAX_N) -> UnitGrams:
    """What unit_similarity needs of one title."""
    weights: dict[tuple[str, ...], float] = {}
    for n in range(1, max_n + 1):
        counts = ngram_counts(tokens, n)
        norm = math.sqrt(sum(count * count for count in counts.values()))
        weights.update((gram, count / norm) for gram, count in counts.items())
    return UnitGrams(weights, min(len(tokens), max_n))


def unit_similarity(a: UnitGrams, b: UnitGrams) -> float:
    """title_similarity of two titles' unit grams: an order that only one title is long enough for counts 0."""
    orders = max(a.orders, b.orders)
    if not orders:
        return 0.0  # neither title has a word
    small, large = (a.weights, b.weights) if len(a.weights) <= len(b.weights) else (b.weights, a.weights)
    return sum(weight * large.get(gram, 0.0) for gram, weight in small.items()) / orders


def title_similarity(a: Sequence[str], b: Sequence[str], max_n: int = MAX_N) -> float:
    """Mean cosine similarity of n-gram counts for n = 1..max_n, over the orders that either title has."""
    return unit_similarity(unit_grams(a, max_n), unit_grams(b, max_n))


class TitleGrams:
    """Titles' unit grams, made once per title and kept.

    The web app captions every search from its neighbours' titles, and the same catalog titles come back
    search after search: tokenising and counting the 15 titles afresh was most of the caption's time.
    What is kept grows to the catalog's distinct titles at most (only neighbours' titles are asked for),
    a small dictionary each. Request threads share one: two
    threads making the same title's grams at once make equal values, so either may stay.
    """

    def __init__(self, max_n: int = MAX_N) -> None:
        self.max_n = max_n
        self._kept: dict[str, UnitGrams] = {}

    def of(self, title: str) -> UnitGrams:
        """The title's unit grams."""
        kept = self._kept.get(title)
        if kept is None:
            kept = self._kept[title] = unit_grams(tokenize(title), self.max_n)
        return kept


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
    # Each title's similarity to the others, from the grams' postings: only titles that share a gram are
    # like each other at all, and a title's repeats each count; faster than a matrix product over gram
    # vectors or comparing each pair's dictionaries (docs/experiments.md).
    repeats = Counter(titles[position] for position in present)
    kept = [grams.of(title) for title in repeats]
    counts = list(repeats.values())
    holders: dict[tuple[str, ...], list[tuple[int, float]]] = {}
    for i, unit in enumerate(kept):
        for gram, weight in unit.weights.items():
            holders.setdefault(gram, []).append((i, weight))
    dots: dict[tuple[int, int], float] = {}
    for holding in holders.values():
        for place, (i, left) in enumerate(holding):
            for j, right in holding[place + 1:]:
                dots[i, j] = dots.get((i, j), 0.0) + left * right
    # A title is like itself (1), unless it has no words (0).
    totals = [(count - 1) * (1.0 if unit.orders else 0.0) for count, unit in zip(counts, kept)]
    for (i, j), dot in dots.items():
        similarity = dot / max(kept[i].orders, kept[j].orders)
        totals[i] += counts[j] * similarity
        totals[j] += counts[i] * similarity
    others = len(present) - 1
    score_of = {title: total / others if others else 0.0 for title, total in zip(repeats, totals)}
    best, best_score = present[0], -1.0
    for position in present:
        score = score_of[titles[position]]
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
