"""What a search produces: predicted categories, a caption, the nearest catalog items, timings and paging."""
from __future__ import annotations

from dataclasses import dataclass

NO_CAPTIONS = "this catalog has no captions"


@dataclass(frozen=True)
class Prediction:
    """One predicted category and its share of the neighbours' vote (0..1)."""

    category: str
    score: float


@dataclass(frozen=True)
class Neighbour:
    """One catalog item near the query."""

    item_id: str
    title: str
    category: str
    similarity: float  # cosine similarity of the L2-normalised vectors, 1 = identical
    # The share (0-100) of catalog items' similarities to their nearest neighbours below this one's;
    # None where the catalog gave no scale (search_app.match_strength).
    match: int | None = None


@dataclass(frozen=True)
class PredictedAttribute:
    """An attribute of the query and the weighted share of its nearest items labelled with it (0..1)."""

    name: str
    score: float


@dataclass(frozen=True)
class Caption:
    """A sentence describing the query, how it was made, and the query's most likely attributes."""

    text: str
    method: str  # "gru-annotator" or "neighbour-consensus" (search_app/captioning.py)
    attributes: tuple[PredictedAttribute, ...] = ()


@dataclass(frozen=True)
class SearchResult:
    """Everything one query produced."""

    predictions: list[Prediction]
    caption: Caption | None
    neighbours: list[Neighbour]
    embed_ms: float
    search_ms: float
    # Paging: neighbours are ranks offset+1 .. offset+len(neighbours) of `available` items that can be shown.
    offset: int = 0
    available: int = 0
    category: str | None = None  # the category the neighbours were restricted to, if any

    @property
    def caption_note(self) -> str | None:
        """Why there is no caption, for people; None when there is one."""
        return NO_CAPTIONS if self.caption is None else None

    @property
    def has_more(self) -> bool:
        """Whether another page of neighbours exists after this one."""
        return self.offset + len(self.neighbours) < self.available
