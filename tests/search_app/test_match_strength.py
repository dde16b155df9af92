"""A result's match: its similarity placed among the catalog's own neighbour similarities, so that results
whose cosine similarities all read 0.999 are told apart."""
from __future__ import annotations

import faiss
import numpy as np

from indexer.vector_store import FaissStore
from search_app.match_strength import MatchScale, match_label
from tests.search_app.conftest import encode, post_image


def crowded_catalog(count: int = 400, dimension: int = 32) -> np.ndarray:
    """Unit vectors all within a few thousandths of cosine similarity of one another, like a trained
    embedding's nearest items."""
    rng = np.random.default_rng(5)
    x = np.ones(dimension) + 0.03 * rng.standard_normal((count, dimension))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_the_scale_spreads_similarities_that_all_read_0_999():
    vectors = crowded_catalog()
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    scale = MatchScale.of_catalog(vectors, FaissStore(index, np.zeros(len(vectors), np.int64), 1).search, lambda D: D)
    D, _ = index.search(vectors[:1] * 0.999 + vectors[1:2] * 0.001, len(vectors))
    assert D[0, 0] > 0.999 and D[0, -1] > 0.995  # every item looks "similarity 0.99x"
    matches = [scale.percent(similarity) for similarity in D[0]]
    assert matches == sorted(matches, reverse=True) and matches[0] == 100 and matches[-1] == 0
    assert match_label(matches[0]) == "very close" and match_label(matches[-1]) == "loosely related"
    assert [match_label(p) for p in (90, 89, 60, 59, 25, 24, 0)] == [
        "very close", "close", "close", "similar", "similar", "loosely related", "loosely related"]
    assert MatchScale.of_catalog(vectors[:1], None, None) is None and match_label(None) is None


def test_results_carry_their_rank_and_match(make_engine, config, catalog_images):
    from search_app import create_app

    engine = make_engine(vectors=None)
    assert engine.match_scale is None  # nothing to measure the catalog with
    client = create_app(config, engine=make_engine(vectors=np.stack([engine.embed_image(image)
                                                                     for image in catalog_images]))).test_client()
    answer = post_image(client, "/api/search", encode(catalog_images[0]), k=5, offset=2).get_json()
    assert [r["rank"] for r in answer["results"]] == [3, 4, 5, 6, 7]
    matches = [r["match"] for r in answer["results"]]
    assert matches == sorted(matches, reverse=True) and all(0 <= m <= 100 for m in matches)
    assert [r["match_label"] for r in answer["results"]] == [match_label(m) for m in matches]
    best = post_image(client, "/api/search", encode(catalog_images[0])).get_json()["results"][0]
    page = post_image(client, "/search", encode(catalog_images[0])).get_data(as_text=True)
    assert f"#1 · {best['match_label']} ({best['match']})" in page
