"""Caption quality: BLEU-1..4 and CIDEr-D (pycocoevalcap's scorers), and whether the category and colour words are right.

pycocoevalcap's BLEU and CIDEr-D scorers are pure Python; only its tokenizer, METEOR and SPICE need
Java, and none of those is used: captions are tokenised here, as the annotator tokenises titles.
"""
from __future__ import annotations

import contextlib
import io
import re
from collections.abc import Sequence

# The same pattern as embedder/captioner/vocabulary.py (a test holds them together): lower-case words,
# hyphens and apostrophes inside a word keep it whole.
WORD = re.compile(r"[a-z0-9]+(?:['-][a-z0-9]+)*")
# Colour names of the catalogs (Fashion Product Images' baseColour values, DeepFashion titles, the samples).
COLOURS = (
    "beige", "black", "blue", "bronze", "brown", "burgundy", "camel", "charcoal", "coffee brown", "copper", "cream",
    "fluorescent green", "gold", "green", "grey", "grey melange", "gray", "indigo", "khaki", "lavender",
    "light wash", "lime green", "magenta", "maroon", "mauve", "mushroom brown", "mustard", "navy", "navy blue",
    "off white", "olive", "orange", "peach", "pink", "purple", "red", "rose", "rust", "sea green", "silver",
    "steel", "tan", "taupe", "teal", "turquoise blue", "violet", "white", "yellow",
)
METRIC_NAMES = ("bleu1", "bleu2", "bleu3", "bleu4", "cider_d")


def tokenize(text: str) -> list[str]:
    """'Red Striped T-Shirt, Slim' -> ['red', 'striped', 't-shirt', 'slim']."""
    return WORD.findall(text.lower())


def caption_scores(references: Sequence[str], candidates: Sequence[str]) -> dict[str, float]:
    """Corpus BLEU-1..4 and CIDEr-D of candidate i against reference i (one reference each)."""
    if len(references) != len(candidates):
        raise ValueError(f"{len(references)} references but {len(candidates)} candidates")
    if not references:
        raise ValueError("no captions to score")
    from pycocoevalcap.bleu.bleu import Bleu  # imported here: the package is large and only evaluation needs it
    from pycocoevalcap.cider.cider import Cider

    gts = {i: [" ".join(tokenize(text))] for i, text in enumerate(references)}
    res = {i: [" ".join(tokenize(text))] for i, text in enumerate(candidates)}
    # The scorers print their statistics; library code does not print.
    with contextlib.redirect_stdout(io.StringIO()):
        bleu, _ = Bleu(4).compute_score(gts, res)
        cider, _ = Cider().compute_score(gts, res)
    return {**{f"bleu{n}": float(bleu[n - 1]) for n in range(1, 5)}, "cider_d": float(cider)}


def _stems(word: str) -> set[str]:
    """A word and its singular guesses, so that 'Tshirts' (a class) matches 'tshirt' (a title)."""
    word = word.replace("-", "")
    stems = {word}
    if word.endswith("s"):
        stems.add(word[:-1])
    if word.endswith("es"):
        stems.add(word[:-2])
    return stems


def mentions(tokens: Sequence[str], name: str) -> bool:
    """Whether every word of ``name`` (a category) appears among ``tokens``, singular or plural."""
    have = set().union(*(_stems(token) for token in tokens)) if tokens else set()
    wanted = tokenize(name)
    return bool(wanted) and all(_stems(word) & have for word in wanted)


def colours_in(tokens: Sequence[str]) -> frozenset[str]:
    """The colour names in a caption, longest first ('navy blue' is one colour, not two)."""
    found, position = set(), 0
    longest = max(len(colour.split()) for colour in COLOURS)
    names = set(COLOURS)
    while position < len(tokens):
        for size in range(longest, 0, -1):
            phrase = " ".join(tokens[position:position + size])
            if len(tokens) - position >= size and phrase in names:
                found.add(phrase)
                position += size
                break
        else:
            position += 1
    return frozenset(found)


def category_word_hits(references: Sequence[str], candidates: Sequence[str],
                       categories: Sequence[str]) -> tuple[int, int]:
    """(right, measured): over items whose reference names their category, how many captions name it too."""
    right = measured = 0
    for reference, candidate, category in zip(references, candidates, categories, strict=True):
        if mentions(tokenize(reference), category):
            measured += 1
            right += mentions(tokenize(candidate), category)
    return right, measured


def colour_word_hits(references: Sequence[str], candidates: Sequence[str]) -> tuple[int, int]:
    """(right, measured): over items whose reference names a colour, how many captions name the same colour(s)."""
    right = measured = 0
    for reference, candidate in zip(references, candidates, strict=True):
        wanted = colours_in(tokenize(reference))
        if wanted:
            measured += 1
            right += colours_in(tokenize(candidate)) == wanted
    return right, measured
