"""SearchEngine over the drawn catalog: neighbours, the kNN vote against a hand-written reference, images, health."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from indexer.knn import EPSILON
from search_app.items import MAX_IMAGE_SIDE, MIN_IMAGE_SIDE, ItemTable, display_image
from search_app.results import NO_CAPTIONS
from tests.search_app.conftest import CLASS_NAMES, PER_CLASS, VOTE_K, embed_pixels


def reference_vote(xb: np.ndarray, labels: np.ndarray, xq: np.ndarray, k: int) -> dict[str, float]:
    """The similarity-weighted vote of the k nearest rows, computed by brute force, one neighbour at a time."""
    similarities = xb @ xq
    nearest = np.argsort(-similarities, kind="stable")[:k]
    votes: dict[str, float] = {}
    for row in nearest:
        weight = max(float(similarities[row]), 0.0) + EPSILON
        votes[CLASS_NAMES[labels[row]]] = votes.get(CLASS_NAMES[labels[row]], 0.0) + weight
    total = sum(votes.values())
    return {name: weight / total for name, weight in votes.items()}


@pytest.mark.parametrize("row", [0, 7, 29])
def test_a_catalog_image_finds_itself_first_with_its_class(engine, catalog_images, item_table, row):
    result = engine.search(catalog_images[row], n_results=6)
    assert len(result.neighbours) == 6
    first = result.neighbours[0]
    assert first.item_id == item_table.item_id[row]
    assert first.similarity == pytest.approx(1.0, abs=1e-5)
    assert first.category == CLASS_NAMES[item_table.label[row]]
    assert result.predictions[0].category == CLASS_NAMES[item_table.label[row]]
    similarities = [n.similarity for n in result.neighbours]
    assert similarities == sorted(similarities, reverse=True)


@pytest.mark.parametrize("k", [VOTE_K, 12])
def test_predictions_match_a_hand_computed_vote(make_engine, catalog_images, item_table, k):
    xb = np.stack([embed_pixels(image) for image in catalog_images])
    # A blend of two classes and, with k = 12, more neighbours than a class has: a split vote.
    query = Image.blend(catalog_images[2], catalog_images[PER_CLASS + 1], 0.5)
    expected = reference_vote(xb, item_table.label, embed_pixels(query), k)
    top5 = dict(sorted(expected.items(), key=lambda pair: -pair[1])[:5])
    result = make_engine(k=k).search(query, n_results=3)
    assert {p.category: p.score for p in result.predictions} == pytest.approx(top5, abs=1e-5)
    scores = [p.score for p in result.predictions]
    assert scores == sorted(scores, reverse=True)
    if k == 12:
        assert len(scores) >= 2 and scores[0] < 0.9


def test_more_results_than_the_vote_uses_and_more_than_the_catalog_holds(engine, catalog_images):
    assert len(engine.search(catalog_images[0], n_results=12).neighbours) == 12
    everything = engine.search(catalog_images[0], n_results=500).neighbours
    assert len(everything) == engine.count == len(catalog_images)
    assert len({n.item_id for n in everything}) == engine.count


def test_an_l2_index_reports_the_same_cosine_similarities(make_engine, catalog_images):
    query = Image.blend(catalog_images[3], catalog_images[20], 0.3)
    by_ip = make_engine("ip").search(query, n_results=10)
    by_l2 = make_engine("l2").search(query, n_results=10)
    assert [n.item_id for n in by_l2.neighbours] == [n.item_id for n in by_ip.neighbours]
    assert [n.similarity for n in by_l2.neighbours] == pytest.approx([n.similarity for n in by_ip.neighbours],
                                                                     abs=1e-4)
    assert by_l2.predictions[0].category == by_ip.predictions[0].category


def test_caption_is_the_neighbours_consensus_or_none_without_titles(make_engine, catalog_images, item_table):
    with_titles = make_engine().search(catalog_images[11], n_results=4)
    # Of the 15 nearest titles, those of the other blue jumpers agree most: "Blue jumper no. n".
    assert with_titles.caption.text in item_table.title[10:15].tolist()
    assert with_titles.caption.method == "neighbour-consensus"
    assert with_titles.caption_note is None
    without = make_engine(has_titles=False).search(catalog_images[11], n_results=4)
    assert without.caption is None
    assert without.caption_note == NO_CAPTIONS


def test_row_of_knows_every_item_and_refuses_others(engine, item_table):
    assert [engine.row_of(str(i)) for i in item_table.item_id] == list(range(len(item_table)))
    for unknown in ("nope", "../config.py", "red-00 ", ""):
        with pytest.raises(KeyError):
            engine.row_of(unknown)


def test_item_images_are_jpegs_enlarged_for_the_page(engine, catalog_images):
    image = Image.open(io.BytesIO(engine.item_image_jpeg("blue-03")))
    assert image.format == "JPEG" and image.mode == "RGB"
    assert min(image.size) >= MIN_IMAGE_SIDE
    # The enlarged JPEG still shows the item's colour.
    centre_colour = np.asarray(image.resize((1, 1), Image.Resampling.BOX)).reshape(3)
    original = np.asarray(catalog_images[2 * PER_CLASS + 3].resize((1, 1), Image.Resampling.BOX)).reshape(3)
    assert np.abs(centre_colour.astype(int) - original.astype(int)).max() < 12


def test_display_image_shrinks_big_images_and_keeps_mid_sized_ones():
    big = display_image(Image.new("L", (2000, 1000), 90))
    assert big.mode == "RGB" and big.size == (MAX_IMAGE_SIDE, MAX_IMAGE_SIDE // 2)
    assert display_image(Image.new("RGB", (300, 200))).size == (300, 200)
    assert display_image(Image.new("RGB", (28, 28))).size == (168, 168)


def test_health_describes_what_is_served(engine):
    health = engine.health()
    assert health["model_loaded"] is True and health["index_loaded"] is True
    assert health["items"] == len(CLASS_NAMES) * PER_CLASS
    assert health["classes"] == len(CLASS_NAMES)
    assert health["embedding_size"] == 192
    assert health["catalog_kind"] == "test-colours"
    assert health["metric"] == "ip" and health["k"] == VOTE_K


def test_an_index_that_does_not_match_the_items_is_refused(make_engine, item_table):
    half = ItemTable(item_table.item_id[:10], item_table.label[:10], item_table.title[:10], item_table.split[:10])
    with pytest.raises(ValueError, match="30 vectors but the item table 10"):
        make_engine(items=half)


def test_a_query_vector_of_the_wrong_size_is_an_error(make_engine, catalog_images):
    engine = make_engine(embed_image=lambda image: np.ones(5, dtype=np.float32))
    with pytest.raises(ValueError, match="dimension 5 .* dimension 192"):
        engine.search(catalog_images[0], n_results=3)


def test_concurrent_searches_through_micro_batches_match_one_at_a_time(make_engine, catalog_images):
    """Queries that share a model pass and an index scan get what they would have got alone, pages and filters too."""
    from concurrent.futures import ThreadPoolExecutor

    from search_app.batching import QueryEmbedder

    batches: list[int] = []

    def embed_many(vectors):
        batches.append(len(vectors))
        return np.stack(vectors)

    alone = make_engine()
    together = make_engine(embed_image=QueryEmbedder(prepare=embed_pixels, embed=embed_many),
                           max_batch=8, batch_wait_ms=500)
    requests = [(row, 3 + row % 4, row % 3, CLASS_NAMES[row % len(CLASS_NAMES)] if row % 2 else None)
                for row in range(0, len(catalog_images), 2)]

    def ask(engine, request):
        row, n_results, offset, category = request
        with engine.incoming_query(with_image=True):
            result = engine.search(catalog_images[row], n_results, category=category, offset=offset)
        return ([n.item_id for n in result.neighbours], [round(n.similarity, 5) for n in result.neighbours],
                [(p.category, round(p.score, 5)) for p in result.predictions], result.available)

    try:
        with ThreadPoolExecutor(8) as pool:
            shared = list(pool.map(lambda request: ask(together, request), requests))
    finally:
        together.close()
    assert shared == [ask(alone, request) for request in requests]
    assert max(batches) > 1 and sum(batches) == len(requests)
    assert together.health()["batching"]["largest_batch"] == max(batches)


def test_an_ivf_index_serves_more_like_this_category_filters_and_deep_pages_in_full(make_engine, catalog_images):
    import faiss

    xb = np.stack([embed_pixels(image) for image in catalog_images])
    quantizer = faiss.IndexFlatIP(xb.shape[1])
    ivf = faiss.IndexIVFFlat(quantizer, xb.shape[1], 6, faiss.METRIC_INNER_PRODUCT)
    ivf.cp.min_points_per_centroid = 1
    ivf.train(xb)
    ivf.add(xb)
    ivf.nprobe = 1  # one cell of six: about five items, fewer than any page below asks for
    approximate, exact = make_engine(index=ivf, vectors=xb), make_engine()
    # An IVF index cannot give a vector back; "more like this" takes it from the embeddings.
    similar = approximate.search_item("red-00", n_results=8)
    assert [n.item_id for n in similar.neighbours] == [n.item_id for n in exact.search_item("red-00", 8).neighbours]
    for engine_result in (approximate.search_item("blue-01", n_results=4, category="green"),
                          approximate.search(catalog_images[3], n_results=5, category="teal")):
        category = engine_result.category
        assert len(engine_result.neighbours) == min(PER_CLASS, 5 if category == "teal" else 4)
        assert all(n.category == category for n in engine_result.neighbours)
    deep = approximate.search(catalog_images[0], n_results=10, offset=15)
    assert [n.item_id for n in deep.neighbours] == [n.item_id for n in exact.search(catalog_images[0], 10, offset=15).neighbours]


def test_vectors_that_do_not_match_the_index_are_refused(make_engine, catalog_images):
    with pytest.raises(ValueError, match="vectors are 3 x 2 but the index holds 30 x"):
        make_engine(vectors=np.zeros((3, 2), dtype=np.float32))
