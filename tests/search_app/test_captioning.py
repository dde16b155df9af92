"""The query's caption: the annotator when there is one, else neighbour consensus; attributes by kNN vote."""
from __future__ import annotations

import numpy as np
import pytest

from search_app import create_app
from search_app.captioning import CONSENSUS, GRU, CaptionMaker, display_words
from search_app.results import PredictedAttribute
from tests.search_app.conftest import encode, post_image

TITLES = ["Red Tee", "Red Striped Tee", "Navy Blouse", "Red Tee"]
ATTRIBUTES = np.array([[1, -1], [1, 1], [-1, -1], [1, -1]], dtype=np.int8)
D = np.array([[0.9, 0.8, 0.7, 0.6]], dtype=np.float32)
I = np.array([[1, 2, 0, 3]])


def test_consensus_caption_with_voted_attributes():
    maker = CaptionMaker(TITLES, True, attributes=ATTRIBUTES, attribute_names=["short sleeve", "striped"])
    caption = maker.describe(np.zeros((1, 4)), D, I)
    assert maker.method == CONSENSUS and caption.method == CONSENSUS
    assert caption.text == "Red Tee"  # repeated twice among the four: the most agreed-on title
    weights = D[0] + 1e-6
    assert caption.attributes == (
        PredictedAttribute("short sleeve", pytest.approx(float((weights[0] + weights[2] + weights[3]) / weights.sum()))),
        PredictedAttribute("striped", pytest.approx(float(weights[0] / weights.sum()))),
    )


def test_consensus_uses_only_the_first_k_neighbours():
    caption = CaptionMaker(TITLES, True, consensus_k=1).describe(np.zeros((1, 4)), D, I)
    assert caption.text == "Red Striped Tee" and caption.attributes == ()


def test_the_annotator_captions_when_given_and_sees_the_query_vector():
    seen = []

    def annotate(vectors):
        seen.append(vectors.copy())
        return ["navy long-sleeve blouse"]

    maker = CaptionMaker(TITLES, True, annotate=annotate)
    xq = np.full((1, 4), 0.5)
    caption = maker.describe(xq, D, I)
    assert maker.method == GRU and caption == type(caption)("Navy Long-sleeve Blouse", GRU, ())
    np.testing.assert_array_equal(seen[0], xq)
    assert display_words("red  t-shirt") == "Red T-shirt"


def test_no_titles_no_caption_even_with_an_annotator():
    maker = CaptionMaker(["", "", "", ""], False, annotate=lambda x: ["a caption"])
    assert maker.method is None and maker.describe(np.zeros((1, 4)), D, I) is None


def test_the_api_shows_method_and_attributes(config, make_engine, catalog_images, item_table):
    attributes = np.where(item_table.label[:, None] == np.arange(2)[None, :], 1, -1).astype(np.int8)
    maker = CaptionMaker(item_table.title, True, attributes=attributes, attribute_names=["reddish", "greenish"],
                         consensus_k=5)
    client = create_app(config, engine=make_engine(captions=maker)).test_client()
    answer = post_image(client, "/api/search", encode(catalog_images[1])).get_json()  # a red item
    assert answer["caption"]["method"] == "neighbour-consensus"
    assert answer["caption"]["text"].startswith("Red jumper")
    assert answer["caption"]["attributes"][0] == {"name": "reddish", "score": pytest.approx(1.0, abs=1e-6)}
    page = post_image(client, "/search", encode(catalog_images[1])).get_data(as_text=True)
    assert "reddish" in page and "agrees best with the titles" in page
    assert client.get("/healthz").get_json()["caption_method"] == "neighbour-consensus"
