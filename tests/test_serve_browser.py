"""The web page in a real browser (Debian's Chromium, driven by Playwright) against a real `imgsearch serve`
process over an index of sample_photos: search, see thumbnails, click one, more like it, search by upload.

Without /usr/bin/chromium the test is skipped, unless IMGSEARCH_REQUIRE_BROWSER=1 (CI) makes that a failure.
Without the playwright package, a declared (dev) dependency, it fails.
A screenshot of the results is saved as tests/artifacts/serve-results.png.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from imgsearch.library import Library
from tests.conftest import REPO, SAMPLE_COUNT, SAMPLE_PHOTOS, serving

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = REPO / "tests" / "artifacts"
TOKEN = "browser-t0ken"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _browser_or_skip() -> None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError as e:  # declared in pyproject.toml's dev extra, as pytest is: missing is a failure
        pytest.fail(f"the playwright package, a dev dependency of imgsearch, cannot be imported: {e}")
    if not os.path.exists(CHROMIUM):
        missing = f"{CHROMIUM} is not installed (apt-get install chromium)"
        if os.environ.get("IMGSEARCH_REQUIRE_BROWSER") == "1":
            pytest.fail(missing)
        pytest.skip(missing)


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_model) -> Iterator[str]:
    """The URL (with its token) of a real server over an index of sample_photos."""
    _browser_or_skip()
    home = tmp_path_factory.mktemp("browser") / "home"
    Library(home, model=tiny_model).index([SAMPLE_PHOTOS])
    env = {**os.environ, "IMGSEARCH_HOME": str(home), "IMGSEARCH_TOKEN": TOKEN}
    with serving(env) as url:
        yield url


def _thumbnails_loaded(page, at_least: int) -> None:
    page.wait_for_function(
        """n => {
            const imgs = [...document.querySelectorAll('#results img')];
            return imgs.length >= n && imgs.slice(0, n).every(i => i.complete && i.naturalWidth > 0);
        }""",
        arg=at_least,
        timeout=20_000,
    )


def test_search_click_more_like_this_and_upload(server: str):
    from playwright.sync_api import expect, sync_playwright

    base = server.split("?")[0]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            requests: list[str] = []
            errors: list[str] = []
            page.on("request", lambda r: requests.append(r.url))
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(server)
            expect(page.locator("#status")).to_contain_text(f"{SAMPLE_COUNT} images indexed")

            # type a query, see a grid of real thumbnails
            page.fill("#q", "a cat sitting on a sofa")
            page.keyboard.press("Enter")
            expect(page.locator("#heading")).to_contain_text("a cat sitting on a sofa")
            _thumbnails_loaded(page, 12)
            assert page.locator("#results li").count() == SAMPLE_COUNT  # fewer than a page: all of them
            expect(page.locator("#drop")).to_be_hidden()
            expect(page.locator("#more")).to_be_hidden()  # nothing more to load
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "serve-results.png"))

            # keyboard only: focus a result, Enter opens it, Escape closes it
            page.locator("#results button").first.focus()
            page.keyboard.press("Enter")
            expect(page.locator("#viewer")).to_be_visible()
            page.keyboard.press("Escape")
            expect(page.locator("#viewer")).to_be_hidden()

            # click one: the viewer shows it; "more like this" leaves it out
            third = page.locator("#results button").nth(2)
            clicked_id, clicked_path = third.get_attribute("data-id"), third.get_attribute("title")
            third.click()
            expect(page.locator("#viewer-title")).to_have_text(clicked_path or "")
            page.wait_for_function("() => document.querySelector('#viewer-img').naturalWidth > 0")
            page.click("#like")
            expect(page.locator("#heading")).to_contain_text("Like " + Path(clicked_path or "").name)
            _thumbnails_loaded(page, 8)
            ids = page.locator("#results button").evaluate_all("bs => bs.map(b => b.dataset.id)")
            assert len(ids) == SAMPLE_COUNT - 1 and clicked_id not in ids

            # search by example: upload a photo, it comes first (the same bytes)
            page.set_input_files("#file", str(SAMPLE_PHOTOS / "dogs-at-window.jpg"))
            expect(page.locator("#heading")).to_contain_text("dogs-at-window.jpg")
            _thumbnails_loaded(page, 4)
            first = page.locator("#results button").first.get_attribute("title") or ""
            assert first.endswith("/dogs-at-window.jpg")

            assert not errors, errors
            assert requests and all(url.startswith(base) for url in requests), "only this server is asked"
        finally:
            browser.close()
