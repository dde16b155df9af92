"""Caption quality on a held-out split, for neighbour consensus and (when given) the GRU annotator; captions.json/.md.

Each query item's own title is the reference. Consensus captions come from the titles of its k
nearest items in the index splits; the annotator captions its stored vector. The annotator arrives
as a plain function (vectors -> captions) so that this package never needs torch.
"""
from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from indexer.captions.attribute_voting import precision_at_n, vote_attributes
from indexer.captions.consensus import consensus_captions
from indexer.captions.metrics import METRIC_NAMES, caption_scores, category_word_hits, colour_word_hits
from indexer.embeddings_file import EmbeddingsFile
from indexer.evaluation.protocol import EvaluationError, query_neighbours
from indexer.index import write_atomically

log = logging.getLogger(__name__)

JSON_NAME = "captions.json"
MARKDOWN_NAME = "captions.md"
EXAMPLES = 12
ATTRIBUTES_AT = 5
Annotator = Callable[[np.ndarray], list[str]]


@dataclass(frozen=True)
class MethodResult:
    """One captioning method's scores on the queries."""

    method: str
    scores: dict[str, float]  # bleu1..bleu4, cider_d
    category_word: tuple[int, int]  # (right, measured)
    colour_word: tuple[int, int]


@dataclass(frozen=True)
class CaptionEvaluation:
    """The protocol, each method's scores, and a few example captions."""

    protocol: dict[str, Any]
    methods: list[MethodResult]
    examples: list[dict[str, str]]
    attributes: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: rates as fractions alongside the counts."""
        methods = []
        for result in self.methods:
            row = asdict(result)
            for key in ("category_word", "colour_word"):
                right, measured = getattr(result, key)
                row[key] = {"right": right, "measured": measured, "rate": _rate(right, measured)}
            methods.append(row)
        return {"protocol": self.protocol, "methods": methods, "attributes": self.attributes,
                "examples": self.examples}


def evaluate_captions(
    vectors: EmbeddingsFile,
    query_split: str,
    index_splits: tuple[str, ...],
    k: int,
    metric: str = "ip",
    *,
    annotate: Annotator | None = None,
    use_gpu: str = "auto",
) -> CaptionEvaluation:
    """BLEU-1..4, CIDEr-D and category / colour word accuracy of consensus (and annotator) captions of a split."""
    if not vectors.has_titles:
        raise EvaluationError(f"{vectors.source}: the {vectors.catalog_kind} catalog has no titles, so no captions")
    query_rows = np.flatnonzero((vectors.split == query_split) & (np.char.str_len(vectors.title) > 0))
    index_rows = vectors.rows_in(tuple(index_splits))
    if query_rows.size == 0 or index_rows.size == 0:
        raise EvaluationError(f"{vectors.source}: no titled {query_split} item to caption, or nothing in "
                              f"{', '.join(index_splits)} to caption from")
    D, I = query_neighbours(vectors, query_rows, index_rows, k, metric, use_gpu)
    titles = vectors.title.tolist()
    references = [titles[row] for row in query_rows]
    categories = [vectors.class_names[label] for label in vectors.label[query_rows]]
    captions = {"consensus": consensus_captions(I, titles)}
    if annotate is not None:
        captions["gru"] = list(annotate(vectors.embeddings[query_rows]))
    log.info("scoring captions of %d %s items (%s)", query_rows.size, query_split, ", ".join(captions))
    methods = [
        MethodResult(method, caption_scores(references, texts), category_word_hits(references, texts, categories),
                     colour_word_hits(references, texts))
        for method, texts in captions.items()
    ]
    protocol = {
        "embeddings_file": str(vectors.source), "checkpoint_sha256": vectors.checkpoint_sha256,
        "query_split": query_split, "index_splits": list(index_splits), "queries": int(query_rows.size),
        "consensus_k": k, "metric": metric, "references": "each query item's own title",
        "scorers": "pycocoevalcap BLEU (corpus, closest reference length) and CIDEr-D",
    }
    picks = np.linspace(0, query_rows.size - 1, min(EXAMPLES, query_rows.size)).astype(int)
    examples = [{"item_id": str(vectors.item_id[query_rows[i]]), "reference": references[i],
                 **{method: texts[i] for method, texts in captions.items()}} for i in picks]
    return CaptionEvaluation(protocol, methods, examples, _attribute_summary(vectors, query_rows, D, I, metric))


def _attribute_summary(vectors: EmbeddingsFile, query_rows: np.ndarray, D: np.ndarray, I: np.ndarray,
                       metric: str) -> dict[str, Any]:
    if vectors.attributes is None or vectors.attributes.shape[1] == 0:
        return {}
    scores = vote_attributes(D, I, vectors.attributes, metric)
    truth = vectors.attributes[query_rows]
    return {"method": "kNN attribute voting", "attributes": len(vectors.attribute_names),
            f"precision_at_{ATTRIBUTES_AT}": precision_at_n(scores, truth, ATTRIBUTES_AT),
            "queries_with_attributes": int((truth == 1).any(axis=1).sum())}


def _rate(right: int, measured: int) -> float | None:
    return right / measured if measured else None


def _percent(value: float | None) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.1f}%"


def _word_cell(pair: tuple[int, int]) -> str:
    right, measured = pair
    return f"{_percent(_rate(right, measured))} ({right}/{measured})"


def caption_table(evaluation: CaptionEvaluation) -> str:
    """The methods' scores as aligned plain text, then attribute voting when measured."""
    header = ("method", *(name.replace("_", "-").upper() for name in METRIC_NAMES), "category word", "colour word")
    rows = [(r.method, *(f"{r.scores[name]:.3f}" for name in METRIC_NAMES), _word_cell(r.category_word),
             _word_cell(r.colour_word)) for r in evaluation.methods]
    widths = [max(len(line[i]) for line in (header, *rows)) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths)) for line in (header, *rows)]
    lines.insert(1, "-" * len(lines[0]))
    p = evaluation.protocol
    lines.insert(0, f"Captions of {p['queries']} {p['query_split']} items (reference: their own title)")
    if evaluation.attributes:
        a = evaluation.attributes
        lines.append(f"Attributes ({a['method']}, {a['attributes']} attributes): precision@{ATTRIBUTES_AT} "
                     f"{_percent(a[f'precision_at_{ATTRIBUTES_AT}'])} over {a['queries_with_attributes']} queries")
    return "\n".join(lines)


def caption_markdown(evaluation: CaptionEvaluation) -> str:
    """The evaluation as Markdown: protocol, scores per method, attributes, examples."""
    lines = ["# Caption evaluation", "", "## Protocol", ""]
    lines += [f"- **{key}**: {', '.join(map(str, value)) if isinstance(value, list) else value}"
              for key, value in evaluation.protocol.items()]
    names = [name.replace("_", "-").upper() for name in METRIC_NAMES]
    lines += ["", "## Scores", "", f"| method | {' | '.join(names)} | category word | colour word |",
              "|---|" + "---:|" * (len(names) + 2)]
    lines += [f"| {r.method} | " + " | ".join(f"{r.scores[name]:.3f}" for name in METRIC_NAMES)
              + f" | {_word_cell(r.category_word)} | {_word_cell(r.colour_word)} |" for r in evaluation.methods]
    if evaluation.attributes:
        lines += ["", "## Attributes", ""] + [f"- **{key}**: {value}" for key, value in evaluation.attributes.items()]
    methods = [r.method for r in evaluation.methods]
    lines += ["", "## Examples", "", "| item | reference | " + " | ".join(methods) + " |",
              "|---|---|" + "---|" * len(methods)]
    lines += ["| " + " | ".join(str(example.get(key, "")).replace("|", "\\|")
                                for key in ("item_id", "reference", *methods)) + " |" for example in evaluation.examples]
    return "\n".join(lines) + "\n"


def write_caption_report(evaluation: CaptionEvaluation, directory: str | Path) -> tuple[Path, Path]:
    """Write captions.json and captions.md into ``directory``, each atomically; returns their paths."""
    directory = Path(directory)
    json_path, md_path = directory / JSON_NAME, directory / MARKDOWN_NAME
    data = _finite(evaluation.to_dict())
    text = json.dumps(data, indent=2, allow_nan=False) + "\n"
    write_atomically(json_path, lambda temporary: temporary.write_text(text, encoding="utf-8"))
    markdown = caption_markdown(evaluation)
    write_atomically(md_path, lambda temporary: temporary.write_text(markdown, encoding="utf-8"))
    log.info("wrote %s and %s", json_path, md_path)
    return json_path, md_path


def _finite(value: Any) -> Any:
    """NaN is not JSON: write it as null."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value
