"""The search page in a real browser (Debian's chromium driven by Playwright) against `serve --prod`.

Uploads a photo, draws a crop with the keyboard, waits for the results, filters by category, clicks
"more like this", pages with "show more", and saves screenshots (also at phone width).
"""
from __future__ import annotations

import io
import re
from pathlib import Path
from urllib.parse import quote

import pytest
from PIL import Image

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]
README_SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "screenshots" / "search.png"
TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} is missing: install Debian's chromium (`apt-get install chromium`, as `make test` does)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("the playwright Python package is missing: pip install -e '.[dev]'")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield browser
        browser.close()


def query_photo(path: Path) -> Path:
    """A catalog photo saved as a shopper's PNG upload."""
    catalog_image = next(iter(sorted((path.parent / "catalog" / "img").glob("*/*.jpg"))))
    photo = path / "my photo.png"
    Image.open(catalog_image).save(photo)
    return photo


def test_upload_crop_filter_more_like_this_and_show_more(browser, prod_server, sample_artifacts, tmp_path):
    artifacts = Path(sample_artifacts[sample_artifacts.index("--artifacts") + 1])
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    page.set_default_timeout(TIMEOUT_MS)
    failed = []
    page.on("requestfailed", lambda request: failed.append(request.url))
    page.goto(prod_server + "/")
    assert page.title() == "Lookbook"

    page.set_input_files("#image", str(query_photo(artifacts)))
    page.wait_for_selector("[data-crop-stage] img[src^='blob:']")
    page.focus("[data-crop-stage]")
    page.keyboard.press("Enter")  # a crop rectangle over the middle 60% of the photo
    assert page.input_value("[data-crop-w]") == "0.6000"
    page.click("[data-submit]")
    page.wait_for_selector("[data-grid] .card")
    assert "cropped" in page.inner_text("[data-query-caption]")
    assert page.locator("[data-predictions] .prediction").count() >= 1
    assert page.inner_text("[data-caption]").startswith("“")
    assert page.locator("[data-grid] .card").count() == 12
    # Every result image really loaded (natural width > 0), from this server and no other.
    page.wait_for_function("[...document.querySelectorAll('[data-grid] img')].every(i => i.complete && i.naturalWidth > 0)")
    assert page.evaluate("document.activeElement.id") == "results-heading"
    page.screenshot(path=str(tmp_path / "search.png"), full_page=True, clip={"x": 0, "y": 0, "width": 1200, "height": 1700})

    # Only one category.
    category = page.inner_text("[data-grid] .card-category >> nth=0")
    page.select_option("[data-category]", category)
    page.wait_for_function(f"document.querySelector('[data-neighbours-heading]').textContent.includes('“{category}”')")
    categories = page.locator("[data-grid] .card-category").all_inner_texts()
    assert categories and set(categories) == {category}

    # "More like this" on the second result: a search by item id, no upload.
    page.select_option("[data-category]", "")
    page.wait_for_function("!document.querySelector('[data-neighbours-heading]').textContent.includes('“')")
    second_title = page.inner_text("[data-grid] .card-title >> nth=1")
    second_id = page.get_attribute("[data-grid] .more-like >> nth=1", "data-item-id")
    with page.expect_response(lambda response: "/similar?" in response.url) as answer:
        page.click("[data-grid] .more-like >> nth=1")
    assert answer.value.request.method == "GET" and answer.value.status == 200
    assert f"/api/items/{quote(second_id, safe='')}/similar?" in answer.value.url
    page.wait_for_function(f"document.querySelector('[data-query-caption]').textContent.startsWith('More like: ')")
    assert second_title in page.inner_text("[data-query-caption]")
    shown = [link.get_attribute("data-item-id") for link in page.locator("[data-grid] .more-like").all()]
    assert len(shown) == 12 and second_id not in shown  # the item itself is the query, not a result

    # "Show more" appends the next page.
    page.click("[data-more]")
    page.wait_for_function("document.querySelectorAll('[data-grid] .card').length > 12")
    assert page.locator("[data-grid] .card").count() == 24
    page.screenshot(path=str(tmp_path / "more-like-this.png"), full_page=True)

    # An error is shown on the page, and the page keeps working.
    page.set_input_files("#image", {"name": "notes.png", "mimeType": "image/png", "buffer": b"not really a png"})
    page.click("[data-submit]")
    page.wait_for_selector("[data-error]:not([hidden])")
    assert "is not an image Lookbook can read" in page.inner_text("[data-error-message]")
    assert not failed, f"requests failed: {failed}"

    save_readme_screenshot(tmp_path / "search.png")
    page.close()


def test_phone_width_layout_and_no_external_requests(browser, prod_server, sample_artifacts, tmp_path):
    artifacts = Path(sample_artifacts[sample_artifacts.index("--artifacts") + 1])
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    hosts = set()
    page.on("request", lambda request: hosts.add(re.sub(r"^(\w+://[^/]+).*", r"\1", request.url)))
    page.goto(prod_server + "/")
    assert page.is_visible("[data-camera-label]")  # the camera button shows on touch screens
    page.set_input_files("#image", str(query_photo(artifacts)))
    page.click("[data-submit]")
    page.wait_for_selector("[data-grid] .card")
    # Nothing wider than the phone's screen.
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    page.screenshot(path=str(tmp_path / "phone.png"), full_page=True)
    assert {host for host in hosts if host.startswith("http")} == {prod_server}  # no CDN, nothing external
    context.close()


def save_readme_screenshot(path: Path) -> None:
    """A small copy of the screenshot for the README (PNG, under 300 KB), written when missing (delete it to renew)."""
    if README_SCREENSHOT.exists():
        return
    README_SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    image = Image.open(path)
    image.thumbnail((900, 1300))
    buffer = io.BytesIO()
    image.convert("P", palette=Image.Palette.ADAPTIVE, colors=128).save(buffer, format="PNG", optimize=True)
    assert len(buffer.getvalue()) < 300_000
    README_SCREENSHOT.write_bytes(buffer.getvalue())
