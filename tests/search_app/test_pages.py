"""The search page's markup for its script, and the pages that work without JavaScript: "more like this", filters."""
from __future__ import annotations

import re

import pytest

from tests.search_app.conftest import CLASS_NAMES, PER_CLASS, RESULTS, encode, post_image


def test_the_page_offers_picker_camera_crop_and_category_filter_with_labels(client):
    page = client.get("/").get_data(as_text=True)
    assert re.search(r'<input[^>]+name="image"[^>]+capture="environment"', page)
    assert 'data-crop-stage tabindex="0"' in page and "arrow keys to move it" in page
    for field in ("crop_x", "crop_y", "crop_w", "crop_h"):
        assert f'name="{field}"' in page
    assert '<label for="category">' in page and '<select id="category" name="category"' in page
    assert all(f'<option value="{name}">' in page for name in CLASS_NAMES)
    assert 'role="status"' in page and 'role="alert"' in page and "<template data-card-template>" in page
    assert 'data-api="/api/search"' in page


def test_more_like_this_without_javascript_is_a_page(client):
    response = client.get("/items/teal-02")
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert "More like: Teal jumper no. 2 (teal)" in page
    cards = re.findall(r'<p class="card-title">([^<]*)</p>', page)
    assert len(cards) == RESULTS and "Teal jumper no. 2" not in cards
    assert page.count('class="more-like" href="/items/') == RESULTS


def test_more_like_this_page_with_a_category_and_unknown_ids(client):
    page = client.get("/items/teal-02?category=red&k=3").get_data(as_text=True)
    assert "most similar items in “red”" in page
    assert re.findall(r'<span class="tag">([^<]*)</span>', page) == ["red"] * 3
    missing = client.get("/items/teal-99")
    assert missing.status_code == 404 and "No catalog item has the id &#39;teal-99&#39;" in missing.get_data(as_text=True)
    bad = client.get("/items/teal-02?category=hats")
    assert bad.status_code == 400 and "Unknown category &#39;hats&#39;" in bad.get_data(as_text=True)


def test_the_form_post_honours_category_and_crop(client, catalog_images, embedder):
    response = post_image(client, "/search", encode(catalog_images[0]), category="green",
                          crop_x="0", crop_y="0", crop_w="0.5", crop_h="0.5")
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert set(re.findall(r'<span class="tag">([^<]*)</span>', page)) == {"green"}
    assert embedder.received[-1].size == (24, 24)
    assert len(re.findall(r'<p class="card-title">', page)) == PER_CLASS


@pytest.mark.parametrize("fields, message", [({"crop_x": "2", "crop_y": "0", "crop_w": "1", "crop_h": "1"},
                                              "Crop_x must be a fraction"), ({"k": "0"}, "K must be a whole number")])
def test_bad_form_fields_get_an_error_page(client, catalog_images, fields, message):
    response = post_image(client, "/search", encode(catalog_images[0]), **fields)
    assert response.status_code == 400 and response.mimetype == "text/html"
    assert message in response.get_data(as_text=True)
