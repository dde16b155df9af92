"""Neighbour consensus captions (Devlin et al., 2015): of the k nearest items' titles, the one most like the others.

No training: a strong baseline, and the caption whenever no GRU annotator was trained. Similarity
of two titles is the mean, over n = 1..max_n, of the cosine similarity of their n-gram counts.
"""
from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import numpy as np

from indexer.caption_metrics import tokenize

MAX_N = 2


def ngram_counts(tokens: Sequence[str], n: int) -> Counter:
    """How often each n-gram occurs in the token list."""
    return Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


# A title's n-gram counts for n = 1..max_n, each with its Euclidean norm.
GramProfile = list[tuple[Counter, float]]


def gram_profile(tokens: Sequence[str], max_n: int = MAX_N) -> GramProfile:
    """What title_similarity needs of one title, computed once however many titles it is compared with."""
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


def consensus_choice(titles: Sequence[str], max_n: int = MAX_N) -> int:
    """Position of the title with the highest mean similarity to the other titles; ties go to the nearer; -1 if none.

    Empty titles take no part. Repeated titles count once per neighbour, so agreement adds up.
    """
    present = [position for position, title in enumerate(titles) if title.strip()]
    if not present:
        return -1
    # Each distinct title is profiled once and each pair of distinct titles compared once: the web app
    # captions every search this way, and comparing the 15 neighbours' titles afresh for each of the
    # 210 ordered pairs was most of a 224-px request's own Python work.
    distinct = list(dict.fromkeys(titles[position] for position in present))
    profiles = [gram_profile(tokenize(title), max_n) for title in distinct]
    similarity = np.ones((len(distinct), len(distinct)))
    for i in range(len(distinct)):
        for j in range(i + 1, len(distinct)):
            similarity[i, j] = similarity[j, i] = profile_similarity(profiles[i], profiles[j])
    for i, profile in enumerate(profiles):  # a title with no tokens is like nothing, itself included
        if not any(counts for counts, _ in profile):
            similarity[i, i] = 0.0
    of_title = {title: number for number, title in enumerate(distinct)}
    numbers = [of_title[titles[position]] for position in present]
    best, best_score = present[0], -1.0
    for place, position in enumerate(present):
        others = [similarity[numbers[place], numbers[other]] for other in range(len(present)) if other != place]
        score = sum(others) / len(others) if others else 0.0
        if score > best_score + 1e-12:
            best, best_score = position, score
    return best


def consensus_captions(I: np.ndarray, titles: Sequence[str], max_n: int = MAX_N) -> list[str]:
    """Per query (a row of neighbour rows ``I``, -1 for none), the consensus among those neighbours' titles; '' if none."""
    captions = []
    for row in np.asarray(I):
        neighbours = [titles[int(item)] for item in row if item >= 0]
        choice = consensus_choice(neighbours, max_n)
        captions.append(neighbours[choice] if choice >= 0 else "")
    return captions
