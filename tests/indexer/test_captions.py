"""Neighbour consensus, caption metrics, attribute voting and the caption evaluation, against hand-computed values."""
from __future__ import annotations

import json
import math
import threading

import h5py
import numpy as np
import pytest

from embedder.captioner.vocabulary import tokenize as vocabulary_tokenize
from indexer.captions.attribute_voting import precision_at_n, top_attributes, vote_attributes
from indexer.captions.consensus import TitleGrams, consensus_captions, consensus_choice, title_similarity
from indexer.captions.evaluation import caption_table, evaluate_captions, write_caption_report
from indexer.captions.metrics import (
    caption_scores,
    category_word_hits,
    colour_word_hits,
    colours_in,
    mentions,
    tokenize,
)
from indexer.embeddings_file import EmbeddingsFileError, read_embeddings
from indexer.evaluation.protocol import EvaluationError
from tests.indexer.conftest import unit_rows, write_embeddings


def test_both_packages_tokenise_alike():
    text = "Men's Navy-Blue T-Shirt, Slim Fit (Pack of 2) — ÉTÉ"
    assert tokenize(text) == vocabulary_tokenize(text) == ["men's", "navy-blue", "t-shirt", "slim", "fit", "pack",
                                                           "of", "2", "t"]


def test_title_similarity_by_hand():
    # unigrams: {red, tee} . {red, striped, tee} = 2, norms sqrt 2 and sqrt 3 -> 2 / sqrt 6
    # bigrams: {red tee} . {red striped, striped tee} = 0
    assert title_similarity(["red", "tee"], ["red", "striped", "tee"]) == pytest.approx((2 / math.sqrt(6) + 0) / 2)
    assert title_similarity(["tee"], ["tee"]) == 1.0  # no bigrams in either: only unigrams count
    assert title_similarity(["tee"], ["navy", "blouse"]) == 0.0


def test_consensus_choice_equals_the_hand_computed_one():
    titles = ["Red Tee", "Red Striped Tee", "Navy Blouse", "Red Tee"]
    s = title_similarity
    red_tee, striped, blouse = ["red", "tee"], ["red", "striped", "tee"], ["navy", "blouse"]
    means = [
        (s(red_tee, striped) + s(red_tee, blouse) + s(red_tee, red_tee)) / 3,  # 0.4082 + 0 + 1 -> 0.4694
        (s(striped, red_tee) * 2 + s(striped, blouse)) / 3,  # 0.2722
        0.0,
        (s(red_tee, red_tee) + s(red_tee, striped) + s(red_tee, blouse)) / 3,  # ties with row 0: the nearer wins
    ]
    assert means[0] == pytest.approx((1 + 1 / math.sqrt(6)) / 3)
    assert int(np.argmax(means)) == 0 == consensus_choice(titles)
    # Without the repeated title, "Red Tee" and "Red Striped Tee" tie (similarity is symmetric): the nearer wins.
    assert consensus_choice(titles[:3]) == 0 and consensus_choice(titles[1::-1]) == 0
    # Red Striped Tee: (0 + 0.408 + 0.762) / 3 = 0.390; Red Tee: (0 + 0.408 + 0.25) / 3; Striped Tee: (0 + 0.762 + 0.25) / 3.
    assert consensus_choice(["Navy Blouse", "Red Tee", "Red Striped Tee", "Striped Tee"]) == 2
    assert consensus_choice(["", "Navy Blouse"]) == 1 and consensus_choice(["", " "]) == -1


def test_consensus_choice_equals_comparing_every_pair_of_neighbours():
    # consensus_choice compares each pair of distinct titles once; the plain definition compares them all.
    def reference(titles: list[str]) -> int:
        present = [position for position, title in enumerate(titles) if title.strip()]
        best, best_score = (present[0] if present else -1), -1.0
        for position in present:
            others = [title_similarity(tokenize(titles[position]), tokenize(titles[other]))
                      for other in present if other != position]
            score = sum(others) / len(others) if others else 0.0
            if score > best_score + 1e-12:
                best, best_score = position, score
        return best

    rng = np.random.default_rng(3)
    words = ["red", "navy", "striped", "floral", "tee", "blouse", "lace", "crop", "top", "--"]
    for _ in range(300):
        pool = [" ".join(rng.choice(words, size=rng.integers(0, 6))) for _ in range(5)]
        titles = [str(rng.choice(pool)) for _ in range(int(rng.integers(1, 16)))]
        assert consensus_choice(titles) == reference(titles), titles


def test_title_grams_kept_between_calls_and_shared_by_threads_give_the_same_choices():
    rng = np.random.default_rng(4)
    words = ["red", "navy", "striped", "floral", "tee", "blouse", "lace", "crop", "top", "v-neck"]
    catalog = [" ".join(rng.choice(words, size=rng.integers(0, 6))) for _ in range(200)]
    I = rng.integers(-1, len(catalog), size=(400, 15))
    expected = [consensus_captions(I[row:row + 1], catalog)[0] for row in range(len(I))]  # fresh grams each time
    shared = TitleGrams()
    answers: dict[int, str] = {}

    def caption_rows(rows: range) -> None:
        for row in rows:
            answers[row] = consensus_captions(I[row:row + 1], catalog, grams=shared)[0]

    # Four threads making and reading the same titles' grams at once.
    threads = [threading.Thread(target=caption_rows, args=(range(start, len(I), 4),)) for start in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [answers[row] for row in range(len(I))] == expected == consensus_captions(I, catalog, grams=shared)
    with pytest.raises(ValueError, match="orders up to 3"):
        consensus_choice(["Red Tee"], max_n=2, grams=TitleGrams(max_n=3))


def test_consensus_captions_follow_the_neighbour_rows():
    titles = ["Red Tee", "Red Striped Tee", "Navy Blouse", "Red Tee", ""]
    I = np.array([[2, 1, 0, 3], [2, -1, -1, -1], [4, -1, -1, -1]])
    assert consensus_captions(I, titles) == ["Red Tee", "Navy Blouse", ""]


def test_caption_scores_match_pycocoevalcap_by_hand():
    scores = caption_scores(["a red striped tee", "navy blouse"], ["A red tee", "Navy blouse"])
    # 5 candidate words, all in the references: BLEU-1 precision 1, brevity penalty exp(1 - 6/5).
    assert scores["bleu1"] == pytest.approx(math.exp(1 - 6 / 5), abs=1e-6)
    assert scores["bleu2"] == pytest.approx(math.exp(1 - 6 / 5) * math.sqrt(2 / 3), abs=1e-6)
    perfect = caption_scores(["red tee", "navy blouse", "black jeans"], ["Red Tee", "navy blouse", "Black jeans"])
    # CIDEr-D: 10 x the mean over n = 1..4 of the tf-idf cosine; two-word captions have no 3- or 4-grams: 10 x 2/4.
    assert perfect["bleu1"] == pytest.approx(1.0) and perfect["cider_d"] == pytest.approx(5.0)
    assert caption_scores(["red tee"], ["green coat"])["cider_d"] == 0.0


def test_category_and_colour_words():
    assert mentions(tokenize("Roadster Men Red Tshirt"), "Tshirts") and mentions(["dress"], "Dresses")
    assert not mentions(["red", "tee"], "Blouse") and mentions(["ankle", "boots"], "Ankle boot")
    assert colours_in(tokenize("Navy Blue Striped Shirt")) == {"navy blue"}
    assert colours_in(tokenize("Light Wash Jeans, Red Stitching")) == {"light wash", "red"}
    references = ["Red Striped Tee", "Navy Blouse", "Sheer Top", "Black Jeans"]
    candidates = ["Red Tee", "Navy Blue Blouse", "Red Top", "Grey Jeans"]
    assert category_word_hits(references, candidates, ["Tee", "Blouse", "Blouse", "Jeans"]) == (3, 3)
    assert colour_word_hits(references, candidates) == (1, 3)


def test_attribute_voting_by_hand():
    attributes = np.array([[1, -1, 0], [1, 1, -1], [-1, 1, 1]], dtype=np.int8)
    D = np.array([[0.9, 0.6, 0.3], [0.5, 0.0, 0.0]], dtype=np.float32)
    I = np.array([[0, 1, 2], [2, -1, -1]])
    scores = vote_attributes(D, I, attributes)
    w = np.array([0.9, 0.6, 0.3]) + 1e-6
    np.testing.assert_allclose(scores[0], [(w[0] + w[1]) / w.sum(), (w[1] + w[2]) / w.sum(), w[2] / w.sum()], rtol=1e-5)
    np.testing.assert_allclose(scores[1], [0, 1, 1])
    columns, _ = top_attributes(scores, 2)
    assert columns.tolist() == [[0, 1], [1, 2]]
    truth = np.array([[1, -1, -1], [-1, -1, 1]])
    assert precision_at_n(scores, truth, 1) == pytest.approx(0.5)


def titled_file(tmp_path):
    """Two tight clusters (red tees, navy blouses), train and test, with short/long sleeve attributes."""
    rng = np.random.default_rng(0)
    titles = ["Red Tee", "Red Tee", "Navy Blouse", "Navy Blouse", "Red Tee", "Navy Blouse"]
    splits = ["train", "train", "train", "train", "test", "test"]
    centres = unit_rows(rng, 2, 8)
    vectors = centres[[0, 0, 1, 1, 0, 1]] + 0.01 * rng.standard_normal((6, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    path = write_embeddings(tmp_path / "embeddings.h5", vectors, [0, 0, 1, 1, 0, 1], splits, ["Tee", "Blouse", "Coat"],
                            titles=titles, attrs={"has_titles": True})
    with h5py.File(path, "a") as handle:
        handle["attributes"] = np.array([[1, -1]] * 2 + [[-1, 1]] * 2 + [[1, -1], [-1, 1]], dtype=np.int8)
        handle.attrs["attribute_names"] = json.dumps(["short sleeve", "long sleeve"])
        handle.attrs["attribute_kinds"] = json.dumps(["part", "part"])
    return path


def test_evaluate_captions_scores_both_methods_and_writes_reports(tmp_path):
    vectors = read_embeddings(titled_file(tmp_path))
    assert vectors.attribute_names == ["short sleeve", "long sleeve"] and vectors.attributes.shape == (6, 2)
    seen = []

    def annotate(x):
        seen.append(x.shape)
        return ["red tee", "navy tee"]

    evaluation = evaluate_captions(vectors, "test", ("train",), k=2, annotate=annotate, use_gpu="off")
    assert seen == [(2, 8)]
    consensus, gru = evaluation.methods
    assert consensus.method == "consensus" and consensus.scores["bleu1"] == pytest.approx(1.0)
    assert consensus.category_word == (2, 2) and consensus.colour_word == (2, 2)
    assert gru.category_word == (1, 2) and gru.colour_word == (2, 2)
    assert evaluation.attributes["precision_at_5"] == pytest.approx(0.5)  # 1 of the 2 shown is right
    assert "consensus" in caption_table(evaluation) and "gru" in caption_table(evaluation)
    json_path, md_path = write_caption_report(evaluation, tmp_path)
    data = json.loads(json_path.read_text())
    assert data["methods"][1]["category_word"] == {"right": 1, "measured": 2, "rate": 0.5}
    assert "| gru |" in md_path.read_text() or "| consensus |" in md_path.read_text()


def test_evaluate_captions_refuses_a_catalog_without_titles(embeddings_path):
    with pytest.raises(EvaluationError, match="no titles"):
        evaluate_captions(read_embeddings(embeddings_path), "test", ("train",), k=3, use_gpu="off")


def test_attributes_dataset_without_names_is_an_error(tmp_path):
    path = titled_file(tmp_path)
    with h5py.File(path, "a") as handle:
        del handle.attrs["attribute_names"]
    with pytest.raises(EmbeddingsFileError, match="attribute_names"):
        read_embeddings(path)
