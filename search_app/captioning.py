"""The query's caption and attributes: the GRU annotator when one was trained for this embedder, else neighbour consensus."""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from indexer.captions.attribute_voting import top_attributes, vote_attributes
from indexer.captions.consensus import TitleGrams, consensus_captions
from search_app.results import Caption, PredictedAttribute

# Caption.method values.
GRU = "gru-annotator"
CONSENSUS = "neighbour-consensus"
DEFAULT_CONSENSUS_K = 15
DEFAULT_ATTRIBUTES_SHOWN = 5


class CaptionMaker:
    """Captions and attributes for queries, from their nearest catalog items or the annotator."""

    def __init__(
        self,
        titles: Sequence[str],
        has_titles: bool,
        *,
        annotate: Callable[[np.ndarray], list[str]] | None = None,
        attributes: np.ndarray | None = None,
        attribute_names: Sequence[str] = (),
        consensus_k: int = DEFAULT_CONSENSUS_K,
        attributes_shown: int = DEFAULT_ATTRIBUTES_SHOWN,
    ) -> None:
        if attributes is not None and attributes.shape != (len(titles), len(attribute_names)):
            raise ValueError(f"attributes of shape {attributes.shape} for {len(titles)} items and "
                             f"{len(attribute_names)} attribute names")
        self.titles = [str(title) for title in titles]
        self.title_grams = TitleGrams()  # the neighbours' titles' n-grams, kept from one search to the next
        self.has_titles = has_titles
        self.annotate = annotate if has_titles else None
        self.attributes = attributes
        self.attribute_names = list(attribute_names)
        self.consensus_k = consensus_k
        self.attributes_shown = attributes_shown

    @property
    def method(self) -> str | None:
        """How captions are made here; None when the catalog has no titles."""
        if not self.has_titles:
            return None
        return GRU if self.annotate is not None else CONSENSUS

    @property
    def depth(self) -> int:
        """How many neighbours describe() wants to see."""
        return self.consensus_k

    def describe(self, xq: np.ndarray, D: np.ndarray, I: np.ndarray, metric: str = "ip") -> Caption | None:
        """The caption of one query (xq: 1 x D) from its neighbours (D, I: 1 x k, nearest first); None without titles."""
        if not self.has_titles:
            return None
        D, I = D[:, :self.consensus_k], I[:, :self.consensus_k]
        if self.annotate is not None:
            text, method = display_words(self.annotate(np.asarray(xq, dtype=np.float32))[0]), GRU
        else:
            text, method = consensus_captions(I, self.titles, grams=self.title_grams)[0], CONSENSUS
        if not text:
            return None
        return Caption(text, method, self._attributes(D, I, metric))

    def _attributes(self, D: np.ndarray, I: np.ndarray, metric: str) -> tuple[PredictedAttribute, ...]:
        if self.attributes is None or not self.attribute_names or self.attributes_shown == 0:
            return ()
        columns, scores = top_attributes(vote_attributes(D, I, self.attributes, metric), self.attributes_shown)
        return tuple(PredictedAttribute(self.attribute_names[c], float(s))
                     for c, s in zip(columns[0].tolist(), scores[0].tolist()) if s > 0)


def display_words(text: str) -> str:
    """The annotator's lower-case words with capitals, as titles are written: 'red striped tee' -> 'Red Striped Tee'."""
    return " ".join(word[:1].upper() + word[1:] for word in text.split())
