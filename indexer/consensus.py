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


def title_similarity(a: Sequence[str], b: Sequence[str], max_n: int = MAX_N) -> float:
    """Mean cosine similarity of n-gram counts for n = 1..max_n, over the orders that either title has."""
    values = []
    for n in range(1, max_n + 1):
        left, right = ngram_counts(a, n), ngram_counts(b, n)
        if not left and not right:
            continue  # neither title is that long: this order says nothing
        dot = sum(count * right[gram] for gram, count in left.items())
        norm = math.sqrt(sum(c * c for c in left.values())) * math.sqrt(sum(c * c for c in right.values()))
        values.append(dot / norm if norm else 0.0)
    return float(np.mean(values)) if values else 0.0


def consensus_choice(titles: Sequence[str], max_n: int = MAX_N) -> int:
    """Position of the title with the highest mean similarity to the other titles; ties go to the nearer; -1 if none.

    Empty titles take no part. Repeated titles count once per neighbour, so agreement adds up.
    """
    present = [position for position, title in enumerate(titles) if title.strip()]
    if not present:
        return -1
    tokens = {position: tokenize(titles[position]) for position in present}
    best, best_score = present[0], -1.0
    for position in present:
        others = [title_similarity(tokens[position], tokens[other], max_n) for other in present if other != position]
        score = float(np.mean(others)) if others else 0.0
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
